"""Stage 3 of a run: activation patching on contrastive pairs (the organism's own pairs, or the paper's CSV)."""
from __future__ import annotations

from typing import Any

from thinklens.options import command, to_argv
from thinklens.rundir import RunConfig, RunPaths
from thinklens.stages.context import StageContext, model_argv


def _spec(c: RunConfig) -> Any:
    from thinklens.empirical.datasets import dataset_spec

    return dataset_spec(c.dataset)


def patching(ctx: StageContext) -> dict[str, Any]:
    """Build the pairs (every rank builds the same; rank 0 writes them), then patch them, each rank its share."""
    from thinklens import distributed
    from thinklens.patching.pairs import save_pairs
    from thinklens.patching.sweeps import patch_pairs

    c, p = ctx.config, ctx.paths
    if c.n_pairs == 0:
        return {"status": "skipped", "note": "--n-pairs 0: patching not requested"}
    spec = _spec(c)
    if c.pairs_csv:
        pairs, rejects = _csv_pairs(ctx)
    elif spec.contrastive_problems is not None:
        from thinklens.patching.pairs import toy_pairs

        pairs, rejects = toy_pairs(c.n_pairs, c.seed, ctx.model().tokenizer)
    else:
        return {"status": "skipped", "note": f"no contrastive pairs for {c.model.name} on {c.dataset!r}: pass "
                "--pairs-csv (the paper's contrastive_qa_pairs.csv) to run activation patching"}
    if not pairs:
        return {"status": "skipped", "note": f"no usable contrastive pair ({len(rejects)} rejected, e.g. "
                f"{rejects[0]['reason'] if rejects else 'none built'})", "n_rejected": len(rejects)}
    m = ctx.model()
    ctx.log(f"{len(pairs)} pairs x {m.model.config.num_hidden_layers} layers"
            + (f" ({len(rejects)} pairs rejected)" if rejects else ""))
    distributed.on_main(save_pairs, p.pairs, pairs, rejects, share=False)
    # positions: the default grid of the pairs' source (the paper's for CSV pairs, the organism's for its own)
    result = patch_pairs(m.model, m.profile, pairs, p.patching_dir, progress=ctx.show_progress)
    return {"n_pairs": len(result.pair_ids), "n_rejected": len(rejects)}


def patching_command(c: RunConfig, p: RunPaths) -> list[str]:
    if c.n_pairs == 0:
        return []
    spec = _spec(c)
    if c.pairs_csv:
        build = [command("pairs", "prepare", "--csv", c.pairs_csv, "--output", p.pair_queries),
                 command("collect", *model_argv(c), "--dataset", p.pair_queries, "--limit", 2 * c.n_pairs,
                         "--reasoning", "with", "--seed", c.seed, *to_argv(c.generation, skip=("seed",)),
                         "--output", p.pair_responses),
                 command("pairs", "build", *model_argv(c), "--csv", c.pairs_csv, "--responses", p.pair_responses,
                         "--output", p.pairs)]
    elif spec.contrastive_problems is not None:
        build = [command("pairs", "toy", "--n", c.n_pairs, "--seed", c.seed, "--output", p.pairs)]
    else:
        return []
    return build + [command("patch", *model_argv(c), "--pairs", p.pairs, "--output", p.patching_dir)]


def _csv_pairs(ctx: StageContext) -> tuple[list[Any], list[dict[str, Any]]]:
    """The paper's workflow: the model answers both queries of each CSV row with reasoning (resumable), each
    response is cut and closed with the probe ``Final answer is X.``; rows whose responses are wrong or unfinished
    are rejected with a reason."""
    from thinklens import distributed
    from thinklens.empirical.collect import collect
    from thinklens.jsonl import JsonlWriter
    from thinklens.patching.pairs import build_csv_pairs, prepare_queries, read_pair_csv, read_responses

    c, p = ctx.config, ctx.paths
    bad_rows: list[str] = []
    rows = read_pair_csv(c.pairs_csv, bad_rows)[: c.n_pairs]
    for msg in bad_rows:
        ctx.warn(f"skipped {msg}")
    queries = prepare_queries(rows)

    def write_queries() -> None:
        with JsonlWriter(p.pair_queries, overwrite=True) as w:
            w.write_all(queries)

    distributed.on_main(write_queries, share=False)
    m = ctx.model()
    ctx.log(f"answering {len(queries)} contrastive queries from {c.pairs_csv}")
    settings = c.generation.resolved(m.profile, str(p.pair_queries))
    s = collect(m, queries, reasoning="with", output=p.pair_responses, settings=settings, model_name=c.model.name,
                progress=ctx.show_progress)
    for line in s.errors:
        ctx.warn(line)
    responses, bad = read_responses(p.pair_responses)
    pairs, rejects = build_csv_pairs(rows, responses, m.tokenizer, m.profile)
    return pairs, rejects + bad

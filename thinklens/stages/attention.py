"""Stage 2 of a run: answer→reasoning attention per (layer, head), then the Reasoning-Focus Heads and their extras
(cue statistics with a token view, thresholded overlap with induction and retrieval heads)."""
from __future__ import annotations

from typing import Any

from thinklens.errors import ThinklensError
from thinklens.options import command
from thinklens.rundir import RunConfig, RunPaths
from thinklens.stages.context import StageContext, model_argv

TOKEN_VIEW_TRACES = 50  # traces whose per-token answer attention is kept (cue statistics, token view)


def attention(ctx: StageContext) -> dict[str, Any]:
    from thinklens.attention.segments import score_trace_file

    c, p = ctx.config, ctx.paths
    if not p.traces_with.exists():
        raise ThinklensError(f"{p.traces_with} not found: run the collect stage first")
    m = ctx.model()
    scores = score_trace_file(m.model, m.tokenizer, p.traces_with, p.attention_dir, profile=m.profile,
                              model_name=c.model.name, token_view=min(c.limit, TOKEN_VIEW_TRACES),
                              progress=ctx.show_progress)
    return {"n_traces": scores.n_traces, "n_skipped": len(scores.skipped)}


def attention_command(c: RunConfig, p: RunPaths) -> list[str]:
    return [command("attention", *model_argv(c), "--traces", p.traces_with, "--output", p.attention_dir,
                    "--token-view", min(c.limit, TOKEN_VIEW_TRACES))]


def heads(ctx: StageContext) -> dict[str, Any]:
    """Rank the RFHs (top k, bootstrap stability), then cue statistics and the induction/retrieval overlaps. Under
    torchrun rank 0 ranks the heads and reads the cues while the others wait; the induction sequences and retrieval
    tests are shared among all ranks; rank 0 writes ``heads.json``."""
    from thinklens import distributed

    ranking, shape, cues = distributed.on_main(_rank_and_cues, ctx)
    ind, ret = _family_scores(ctx)
    return distributed.on_main(_write_heads, ctx, ranking, shape, cues, ind, ret)


def _rank_and_cues(ctx: StageContext) -> tuple[Any, tuple[int, int], dict[str, Any]]:
    from thinklens.attention.heads import rank_heads
    from thinklens.attention.segments import HeadScores

    c, p = ctx.config, ctx.paths
    scores = HeadScores.load(p.head_scores)
    ranking = rank_heads(scores, "a2r", top_k=c.top_k, n_bootstrap=c.n_bootstrap, seed=c.seed)
    return ranking, scores.shape, _cues(ctx, ranking)


def _write_heads(ctx: StageContext, ranking: Any, shape: tuple[int, int], cues: dict[str, Any], ind: Any,
                 ret: Any) -> dict[str, Any]:
    from thinklens.attention.overlaps import head_overlaps
    from thinklens.jsonl import write_json

    p = ctx.paths
    ind.save(p.induction)
    ret.save(p.retrieval)
    out = ranking.to_json()
    out["cues"] = cues
    out["overlaps"] = head_overlaps(ranking.pairs(), ind, ret, shape[0] * shape[1])
    out["induction_overlap"] = {**out["overlaps"]["induction"]["after"],
                                "threshold": out["overlaps"]["induction"]["threshold"]}
    out["retrieval_overlap"] = {**out["overlaps"]["retrieval"]["after"],
                                "threshold": out["overlaps"]["retrieval"]["threshold"]}
    write_json(p.heads, out)
    return {"top": out["heads"][:3], "cues": out["cues"], "induction_overlap": out["induction_overlap"],
            "retrieval_overlap": out["retrieval_overlap"]}


def heads_command(c: RunConfig, p: RunPaths) -> list[str]:
    cue_dir = p.reference_attention_dir if _reference_traces(c) else p.attention_dir
    cmds = [command("heads", "rank", p.attention_dir, "--top", c.top_k, "--bootstrap", c.n_bootstrap,
                    "--seed", c.seed)]
    if _reference_traces(c):
        n = min(c.limit, TOKEN_VIEW_TRACES)
        cmds.append(command("traces", "reference", "--dataset", c.dataset, "--n", n, "--seed", c.seed, "--output",
                            p.traces_reference))
        cmds.append(command("attention", *model_argv(c), "--traces", p.traces_reference, "--output", cue_dir,
                            "--no-reasoning-queries", "--token-view", n))
    cmds.append(command("heads", "tokens", cue_dir, "--output", p.token_view, "--seed", c.seed))
    cmds.append(command("heads", "induction", *model_argv(c), "--output", p.induction, "--seed", c.seed))
    cmds.append(command("heads", "retrieval", *model_argv(c), "--output", p.retrieval, "--seed", c.seed, "--top",
                        c.top_k, "--scores", p.attention_dir, "--induction", p.induction,
                        *(["--lengths", ",".join(map(str, c.retrieval_lengths))] if c.retrieval_lengths else [])))
    return cmds


def _reference_traces(c: RunConfig) -> Any:
    from thinklens.empirical.datasets import dataset_spec

    return dataset_spec(c.dataset).reference_traces


def _cues(ctx: StageContext, ranking: Any) -> dict[str, Any]:
    """Cue statistics + the token view of one trace with a self-correction (from stored token profiles)."""
    from thinklens.attention.tokens import analyze_tokens
    from thinklens.report.token_view import render_token_view

    c, p = ctx.config, ctx.paths
    cue_dir, source = p.attention_dir, "model traces"
    if _reference_traces(c):
        # the organism never slips under greedy decoding, so its own traces hold no "Wait": read the cues on its
        # reference traces (teacher-forced; a share slip and correct themselves)
        cue_dir, source = _score_reference_traces(ctx), f"{c.dataset} reference traces (teacher-forced, with slips)"
    try:
        items, stats = analyze_tokens(cue_dir, ranking.pairs()[:5], seed=c.seed)
    except ThinklensError as err:
        return {"error": str(err)}
    from thinklens.attention.tokens import cue_window_control

    cue_window_control(items, seed=c.seed).save(cue_dir)  # cue tokens vs window-matched neighbours (report figure)
    cj = stats.to_json()
    cues = {k: cj.get(k) for k in ("n_traces", "n_cue_tokens", "mean_cue", "mean_other", "p_value")}
    cues["source"] = source
    if items:  # show a trace with a self-correction when there is one
        render_token_view(next((t for t in items if t.cue_mask.any()), items[0]), p.token_view)
    return cues


def _score_reference_traces(ctx: StageContext) -> Any:
    """Write the dataset's reference traces for the run's problems and score their attention; returns the dir."""
    from thinklens.attention.segments import score_trace_file
    from thinklens.jsonl import ResumableOutput

    c, p = ctx.config, ctx.paths
    n = min(c.limit, TOKEN_VIEW_TRACES)
    with ResumableOutput(p.traces_reference) as out:  # what `thinklens traces reference` writes
        for rec in out.pending_items(_reference_traces(c)(n, c.seed), key=lambda r: str(r["id"])):
            out.write(rec)
    m = ctx.model()
    score_trace_file(m.model, m.tokenizer, p.traces_reference, p.reference_attention_dir, profile=m.profile,
                     model_name=c.model.name, token_view=n, reasoning_queries=False, progress=ctx.show_progress)
    return p.reference_attention_dir


def _family_scores(ctx: StageContext) -> tuple[Any, Any]:
    """Induction and retrieval scores of every head (Wu et al. 2024), for the RFH overlaps (:func:`_write_heads`);
    under torchrun every rank takes its share of the sequences and tests and gets the merged scores."""
    from thinklens.attention.induction import induction_scores
    from thinklens.attention.retrieval import retrieval_scores

    c = ctx.config
    m = ctx.model()
    ind = induction_scores(m.model, m.tokenizer, seed=c.seed, model_name=c.model.name)
    ret = retrieval_scores(m.model, m.tokenizer, profile=m.profile, model_name=c.model.name, seed=c.seed,
                           lengths=c.retrieval_lengths or None)
    return ind, ret

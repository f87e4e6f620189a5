"""The stages of :func:`thinklens.pipeline.run`: thin adapters from a run directory to each stage's public API,
plus the readers that turn the saved stage files into the headline numbers of ``results.json``.

Why adapters: every stage owns its computation (``thinklens.empirical``, ``thinklens.attention``,
``thinklens.patching``) and its own resumable file format; the pipeline only decides *which files* each stage reads
and writes, and when a stage is complete. A stage function takes a :class:`StageContext` and returns
``{"status": "done"|"skipped", "note"?: str, **summary}``.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thinklens.errors import ThinklensError
from thinklens.jsonl import done_ids
from thinklens.pipeline import RunConfig, RunPaths, read_json, versions, write_json

TINY_MAX_NEW_TOKENS = 256  # tiny-r1 traces are < 200 characters (= tokens)


@dataclass
class StageContext:
    """What a stage needs: the config, the paths, a lazily loaded model and a progress display."""

    config: RunConfig
    paths: RunPaths
    show_progress: bool = True
    label: str = ""
    _loaded: Any = field(default=None, repr=False)

    def log(self, msg: str) -> None:
        if self.show_progress:
            print(msg, file=sys.stderr, flush=True)

    def model(self) -> Any:
        """The :class:`thinklens.models.LoadedModel`, loaded once for all stages."""
        if self._loaded is None:
            from thinklens.models import load_model

            c = self.config
            self.log(f"{self.label}  loading {c.model}")
            self._loaded = load_model(c.model, c.device, c.dtype, device_map=c.device_map)
        return self._loaded

    def close(self) -> None:
        self._loaded = None

    def labelled_bars(self) -> contextlib.AbstractContextManager[None]:
        """Prefix every progress bar a stage opens with the run's stage label (``[4/6] attention  attention:
        12/40``), so the display always says which stage runs and how much work is left."""
        from thinklens.progress import prefixed

        return prefixed(self.label)


# ------------------------------------------------------------------------------------------------- stages
def generation_settings(config: RunConfig) -> Any:
    """The decoding settings of a run (the same as ``thinklens collect`` with the run's arguments)."""
    from thinklens.empirical.collect import GenerationSettings, math_instruction_default

    return GenerationSettings(seed=config.seed, batch_size=config.batch_size, max_new_tokens=max_new_tokens(config),
                              math_instruction=math_instruction_default(config.dataset))


def max_new_tokens(config: RunConfig) -> int:
    return config.max_new_tokens or (TINY_MAX_NEW_TOKENS if config.model == "tiny-r1" else 2048)


def stage_collect(ctx: StageContext) -> dict[str, Any]:
    from thinklens.empirical.collect import collect
    from thinklens.empirical.datasets import load_problems

    c = ctx.config
    errors: list[str] = []
    problems = load_problems(c.dataset, limit=c.limit, seed=c.seed, errors=errors)
    for e in errors:
        print(f"skipped {e}", file=sys.stderr)
    settings = generation_settings(c)
    out: dict[str, Any] = {"n_problems": len(problems), "bad_problems": len(errors)}
    for mode, path in (("with", ctx.paths.traces_with), ("without", ctx.paths.traces_without)):
        ctx.log(f"{ctx.label}  {mode} reasoning: {len(problems) - len(done_ids(path))}/{len(problems)} problems left")
        s = collect(ctx.model(), problems, reasoning=mode, output=path, settings=settings, model_name=c.model,
                    progress=ctx.show_progress)
        out[mode] = {"n_written": s.n_written, "n_finished": s.n_finished, "seconds": round(s.seconds, 2)}
    return out


def stage_grade(ctx: StageContext) -> dict[str, Any]:
    from thinklens.empirical.grading import grade_file

    out = {}
    for src, dst in ((ctx.paths.traces_with, ctx.paths.graded_with),
                     (ctx.paths.traces_without, ctx.paths.graded_without)):
        if not src.exists():
            raise ThinklensError(f"{src} not found: run the collect stage first")
        summary = grade_file(str(src), str(dst), progress=ctx.show_progress)
        for line in getattr(summary, "bad_lines", None) or []:
            print(f"skipped {line}", file=sys.stderr)
        out[src.stem] = _summary(summary)
    return out


def _summary(obj: Any) -> Any:
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    return obj if isinstance(obj, (dict, list, str, int, float, type(None))) else str(obj)


def stage_evaluate(ctx: StageContext) -> dict[str, Any]:
    from thinklens.empirical.evaluate import evaluate_files

    c, p = ctx.config, ctx.paths
    errors: list[str] = []
    result = evaluate_files([p.graded_with, p.graded_without], seed=c.seed, errors=errors)
    for e in errors:
        print(f"skipped {e}", file=sys.stderr)
    result.save(p.root)  # evaluation.json + evaluation.npz
    return {"n": {m: e.n for m, e in result.models.items()}, "bad_lines": len(errors)}


def stage_attention(ctx: StageContext) -> dict[str, Any]:
    from thinklens.attention.heads import rank_heads
    from thinklens.attention.segments import score_trace_file

    c, p = ctx.config, ctx.paths
    if not p.traces_with.exists():
        raise ThinklensError(f"{p.traces_with} not found: run the collect stage first")
    m = ctx.model()
    ctx.log(f"{ctx.label}  {len(done_ids(p.traces_with))} traces to score (answer→reasoning attention)")
    # per-token answer attention of up to 50 traces feeds the cue statistics and the token view
    scores = score_trace_file(m.model, m.tokenizer, p.traces_with, p.attention_dir, profile=m.profile,
                              model_name=c.model, token_view=min(c.limit, 50), progress=ctx.show_progress)
    ranking = rank_heads(scores, "a2r", top_k=c.top_k, n_bootstrap=c.n_bootstrap, seed=c.seed)
    heads = ranking.to_json()
    out: dict[str, Any] = {"n_traces": scores.n_traces, "n_skipped": len(scores.skipped)}
    heads.update(_attention_extras(ctx, ranking, scores.shape))
    out.update({k: v for k, v in heads.items() if k in ("cues", "induction_overlap")})
    write_json(p.heads, heads)
    return out


def _attention_extras(ctx: StageContext, ranking: Any, shape: tuple[int, int]) -> dict[str, Any]:
    """Cue statistics + token view of one trace (from the stored token profiles), induction-head overlap."""
    from thinklens.attention.heads import compare_heads
    from thinklens.attention.induction import induction_scores
    from thinklens.attention.tokens import analyze_tokens
    from thinklens.report.token_view import render_token_view

    c, p = ctx.config, ctx.paths
    out: dict[str, Any] = {}
    try:
        cue_dir, source = p.attention_dir, "model traces"
        if c.dataset == "arithmetic":
            # tiny-r1 never slips under greedy decoding, so its own traces hold no "Wait": read the cues on the
            # organism's reference traces (teacher-forced; a share slip and correct themselves with "Wait,").
            cue_dir, source = _score_reference_traces(ctx), "tiny-r1 reference traces (teacher-forced, with slips)"
        items, stats = analyze_tokens(cue_dir, ranking.pairs()[:5], seed=c.seed)
        cj = stats.to_json()
        out["cues"] = {k: cj.get(k) for k in ("n_traces", "n_cue_tokens", "mean_cue", "mean_other", "p_value")}
        out["cues"]["source"] = source
        if items:  # show a trace with a self-correction when there is one
            item = next((t for t in items if t.cue_mask.any()), items[0])
            render_token_view(item, p.token_view)
    except ThinklensError as err:
        out["cues"] = {"error": str(err)}
    m = ctx.model()
    ind = induction_scores(m.model, m.tokenizer, seed=c.seed, model_name=c.model)
    ind.save(p.induction)
    ref = [(layer, head) for layer, head, _ in ind.top(c.top_k)]
    out["induction_overlap"] = compare_heads(ranking.pairs(), ref, shape[0] * shape[1])
    return out


def _score_reference_traces(ctx: StageContext) -> Path:
    """Write the organism's reference traces for the run's problems and score their attention; returns the dir."""
    from thinklens.attention.segments import score_trace_file
    from thinklens.jsonl import JsonlWriter
    from thinklens.toy.tasks import full_text, generate_problems

    c, p = ctx.config, ctx.paths
    n = min(c.limit, 50)
    if len(done_ids(p.traces_reference)) < n:
        have = done_ids(p.traces_reference)
        with JsonlWriter(p.traces_reference) as w:
            for pr in generate_problems(n, seed=c.seed):
                if pr.id not in have:
                    w.write({"id": pr.id, "model": "reference", "reasoning": "with", "text": full_text(pr),
                             "gold_answer": pr.answer, "has_slip": pr.has_slip})
    m = ctx.model()
    score_trace_file(m.model, m.tokenizer, p.traces_reference, p.reference_attention_dir, profile=m.profile,
                     model_name=c.model, token_view=n, reasoning_queries=False, progress=ctx.show_progress)
    return p.reference_attention_dir


# the end of the probe line ``Final answer is N.`` (holds the answer token) + the answer ending ``\\boxed{``
TOY_POSITIONS = "last-reasoning:8,answer-tail:4"


def stage_patching(ctx: StageContext) -> dict[str, Any]:
    from thinklens.patching.sweeps import patch_pairs

    c, p = ctx.config, ctx.paths
    if c.n_pairs == 0:
        return {"status": "skipped", "note": "--n-pairs 0: patching not requested"}
    if c.pairs_csv:
        pairs, rejects = _csv_pairs(ctx)
        positions = None
    elif c.model == "tiny-r1" or c.dataset == "arithmetic":
        from thinklens.patching.pairs import toy_pairs

        m = ctx.model()
        pairs, rejects = toy_pairs(c.n_pairs, c.seed, m.tokenizer)
        positions = TOY_POSITIONS
    else:
        return {"status": "skipped", "note": f"no contrastive pairs for {c.model} on {c.dataset!r}: pass --pairs-csv "
                "(the paper's contrastive_qa_pairs.csv) to run activation patching"}
    if not pairs:
        return {"status": "skipped", "note": f"no usable contrastive pair ({len(rejects)} rejected, e.g. "
                f"{rejects[0]['reason'] if rejects else 'none built'})", "n_rejected": len(rejects)}
    m = ctx.model()
    ctx.log(f"{ctx.label}  {len(pairs)} pairs x {m.model.config.num_hidden_layers} layers"
            + (f" ({len(rejects)} pairs rejected)" if rejects else ""))
    from thinklens.patching.pairs import save_pairs

    save_pairs(p.patching_dir / "contrastive_pairs.jsonl", pairs, rejects)
    kwargs = {"positions": positions} if positions else {}
    result = patch_pairs(m.model, m.profile, pairs, p.patching_dir, progress=ctx.show_progress, **kwargs)
    return {"n_pairs": len(result.pair_ids), "n_rejected": len(rejects)}


def _csv_pairs(ctx: StageContext) -> tuple[list[Any], list[dict[str, Any]]]:
    """The paper's workflow: the model answers both queries of each CSV row with reasoning (resumable), each
    response is cut before its answer and closed with the probe ``Final answer is X.``; rows whose responses are
    wrong or unfinished are rejected with a reason."""
    from thinklens.empirical.collect import collect
    from thinklens.patching.pairs import build_csv_pairs, prepare_queries, read_pair_csv, read_responses

    c, p = ctx.config, ctx.paths
    rows = read_pair_csv(c.pairs_csv)[: c.n_pairs]
    responses_path = p.patching_dir / "csv_responses.jsonl"
    settings = generation_settings(c)
    m = ctx.model()
    ctx.log(f"{ctx.label}  answering {2 * len(rows)} contrastive queries from {c.pairs_csv}")
    collect(m, prepare_queries(rows), reasoning="with", output=responses_path, settings=settings,
            model_name=c.model, progress=ctx.show_progress)
    responses, bad = read_responses(responses_path)
    pairs, rejects = build_csv_pairs(rows, responses, m.tokenizer, m.profile)
    return pairs, rejects + bad


def stage_report(ctx: StageContext) -> dict[str, Any]:
    from thinklens.report.html import build_report

    return {"report": str(build_report(ctx.paths.root))}


STAGE_FUNCS: dict[str, Callable[[StageContext], dict[str, Any]]] = {
    "collect": stage_collect, "grade": stage_grade, "evaluate": stage_evaluate, "attention": stage_attention,
    "patching": stage_patching, "report": stage_report,
}

OUTPUTS: dict[str, tuple[str, ...]] = {
    "collect": ("traces_with", "traces_without"), "grade": ("graded_with", "graded_without"),
    "evaluate": ("evaluation",), "attention": ("head_scores", "heads"), "patching": ("patching_result",),
    "report": ("report",),
}


def outputs_exist(stage: str, paths: RunPaths) -> bool:
    return all(getattr(paths, name).exists() for name in OUTPUTS[stage])


# ------------------------------------------------------------------------------------------------- readers
def _normalize_evaluation(ev: Any, model: str) -> dict[str, Any]:
    """``{MODEL: {n, accuracy_with_reasoning, accuracy_without_reasoning, difference_ci95, p_value}}``."""
    if not isinstance(ev, dict):
        return {}
    if isinstance(ev.get("models"), dict):  # EvaluationResult.to_dict()
        ev = ev["models"]
    if "accuracy_with_reasoning" in ev:  # a single model's evaluation
        ev = {ev.get("model", model): ev}
    keys = ("n", "accuracy_with_reasoning", "accuracy_without_reasoning", "difference_ci95", "p_value")
    return {m: {k: e.get(k) for k in keys} for m, e in ev.items() if isinstance(e, dict)}


def load_head_scores(paths: RunPaths) -> dict[str, np.ndarray] | None:
    if not paths.head_scores.exists():
        return None
    with np.load(paths.head_scores, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _heads_summary(heads: Any) -> dict[str, Any]:
    if not isinstance(heads, dict) or not heads.get("heads"):
        return {}
    top = [[int(h[0]), int(h[1]), float(h[2])] for h in heads["heads"]]
    stab = [float(h[3]) for h in heads["heads"] if len(h) > 3 and h[3] is not None]
    return {"top": top, "stability": {"per_head": stab, "mean": float(np.mean(stab)) if stab else None,
                                      "n_bootstrap": heads.get("n_bootstrap")},
            "score": heads.get("score", "a2r"), "n_traces": heads.get("n_traces"), "top_k": heads.get("top_k"),
            "cues": heads.get("cues"), "induction_overlap": heads.get("induction_overlap")}


def _nanmean0(x: np.ndarray) -> list[float | None]:
    """Mean over axis 0 ignoring NaN, as a JSON list (None where every value is NaN)."""
    x = np.asarray(x, dtype=float)
    ok = np.isfinite(x).sum(axis=0)
    m = np.where(ok > 0, np.nansum(np.where(np.isfinite(x), x, 0.0), axis=0) / np.maximum(ok, 1), np.nan)
    return [None if not np.isfinite(v) else float(v) for v in m]


def load_patching(paths: RunPaths, with_pairs: bool = False) -> dict[str, Any] | None:
    """Patching results as ``{layers, nld_answer_flip_token, nld_final_answer_token, n_pairs, ...}`` (means over
    pairs per layer); ``with_pairs`` adds ``pairs`` for the layer view: ``[{id, tokens, nld [n_layers,
    n_positions], flip_index, final_index}]``."""
    from thinklens.patching.results import PatchingResult

    if not paths.patching_result.exists():
        return None
    r = PatchingResult.load(paths.patching_dir)
    flip, final = r.column("answer_flip"), r.column("final")  # [n_pairs, n_layers]
    out: dict[str, Any] = {"layers": [int(x) for x in r.layers], "nld_answer_flip_token": _nanmean0(flip),
                           "nld_final_answer_token": _nanmean0(final), "n_pairs": len(r.pair_ids),
                           "site": r.site, "positions": list(r.labels),
                           "clean_logit_diff_mean": float(np.mean(r.clean)),
                           "corrupted_logit_diff_mean": float(np.mean(r.corrupted))}
    if with_pairs:
        pairs = []
        for i, pid in enumerate(r.pair_ids):
            pos = [int(x) for x in r.positions[i]]
            named = r.named[i]
            idx = {k: (pos.index(named[k]) if named.get(k) in pos else None) for k in ("answer_flip", "final")}
            pairs.append({"id": pid, "tokens": r.tokens[i], "nld": np.asarray(r.nld[i]).T,  # [n_layers, n_pos]
                          "flip_index": idx["answer_flip"], "final_index": idx["final"]})
        if len(pairs) > 1:  # every pair is patched on the same labelled grid (r-8 ... a-1): average per label
            flips = [q["flip_index"] for q in pairs if q["flip_index"] is not None]
            finals = [q["final_index"] for q in pairs if q["final_index"] is not None]
            pairs.insert(0, {"id": f"mean of {len(pairs)} pairs", "tokens": list(r.labels),
                             "nld": np.nanmean(np.asarray(r.nld, dtype=float), axis=0).T,  # [n_layers, n_pos]
                             "flip_index": max(set(flips), key=flips.count) if flips else None,
                             "final_index": max(set(finals), key=finals.count) if finals else None})
        out["pairs"] = pairs
    return out


def headline_results(paths: RunPaths, config: RunConfig) -> dict[str, Any]:
    """``results.json`` content from the files saved by the stages (what is missing is left out)."""
    res: dict[str, Any] = {"model": config.model, "dataset": config.dataset,
                           "seeds": {"seed": config.seed}, "limit": config.limit, "versions": versions()}
    res["evaluation"] = _normalize_evaluation(read_json(paths.evaluation), config.model)
    res["heads"] = _heads_summary(read_json(paths.heads))
    scores = load_head_scores(paths)
    if res["heads"] and scores is not None:  # how far the top heads stand out from a typical head
        mean = np.nanmean(np.asarray(scores["a2r"], dtype=float), axis=0)  # [n_layers, n_heads]
        med = float(np.nanmedian(mean))
        res["heads"]["median_head_a2r"] = med
        res["heads"]["top_to_median_ratio"] = res["heads"]["top"][0][2] / med if med > 0 else None
    res["patching"] = load_patching(paths) or {}
    return res

"""The headline numbers of a run, read from the files its stages saved, and the verdicts drawn from them.

Why one module: ``results.json``, the report's headline and the README's claims must say the same thing. Every
reader here takes the run directory's files (never a model, never a live stage object) and the thresholds that turn
numbers into findings are written once, in :data:`THRESHOLDS`::

    >>> THRESHOLDS.p_value, THRESHOLDS.nld_flip, THRESHOLDS.stability
    (0.05, 0.8, 0.8)
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from thinklens.attention.heads import head_name
from thinklens.errors import ThinklensError
from thinklens.rundir import RunConfig, RunPaths, load_state, read_json, versions


@dataclass(frozen=True)
class Thresholds:
    """When a number supports a finding of the paper."""

    p_value: float = 0.05  # reasoning helps: with > without at this significance (exact McNemar)
    nld_flip: float = 0.8  # patching flips the answer: NLD of the answer-flip token reaches this at some layer
    stability: float = 0.8  # RFHs exist: the top head (and the top-k on average) stays in the top k this often
    ablation_p: float = 0.05  # RFHs are causal: ablating them lowers accuracy more than random heads (McNemar)


THRESHOLDS = Thresholds()


@dataclass(frozen=True)
class Verdict:
    """One finding: whether the run supports it and the sentence that says so."""

    finding: str  # "reasoning_helps" | "rfh_exist" | "patching_flips"
    ok: bool
    claim: str  # "Reasoning helps" / "Reasoning does not clearly help"
    detail: str


# ------------------------------------------------------------------------------------------------------- readers
def evaluation_summary(paths: RunPaths, model: str = "") -> dict[str, Any]:
    """``{MODEL: {n, accuracy_with_reasoning, accuracy_without_reasoning, difference_ci95, p_value, thinking,
    without_mode, n_forced_close}}`` (how the traces were made: ``thinking`` native|prompted, ``without_mode``
    forced|template-off|empty, ``n_forced_close`` {with, without} kept traces closed by budget forcing)."""
    ev = read_json(paths.evaluation)
    if not isinstance(ev, dict):
        return {}
    if isinstance(ev.get("models"), dict):  # EvaluationResult.to_dict()
        ev = ev["models"]
    if "accuracy_with_reasoning" in ev:  # a single model's evaluation
        ev = {ev.get("model", model): ev}
    keys = ("n", "accuracy_with_reasoning", "accuracy_without_reasoning", "difference_ci95", "p_value", "thinking",
            "without_mode", "n_forced_close")
    return {m: {k: e.get(k) for k in keys} for m, e in ev.items() if isinstance(e, dict)}


def load_head_scores(paths: RunPaths) -> dict[str, np.ndarray] | None:
    """The arrays of ``attention/head_scores.npz`` (or None when the attention stage has not run)."""
    if not paths.head_scores.exists():
        return None
    with np.load(paths.head_scores, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def heads_summary(paths: RunPaths) -> dict[str, Any]:
    """Top Reasoning-Focus Heads ``[[layer, head, mean a2r], ...]``, their bootstrap stability and the extras
    (cue statistics, induction overlap) of ``heads.json``; plus how far the top head stands out."""
    heads = read_json(paths.heads)
    if not isinstance(heads, dict) or not heads.get("heads"):
        return {}
    top = [[int(h[0]), int(h[1]), float(h[2])] for h in heads["heads"]]
    stab = [float(h[3]) for h in heads["heads"] if len(h) > 3 and h[3] is not None]
    out = {"top": top, "stability": {"per_head": stab, "mean": float(np.mean(stab)) if stab else None,
                                     "n_bootstrap": heads.get("n_bootstrap")},
           "score": heads.get("score", "a2r"), "n_traces": heads.get("n_traces"), "top_k": heads.get("top_k"),
           "cues": heads.get("cues"), "induction_overlap": heads.get("induction_overlap"),
           "retrieval_overlap": heads.get("retrieval_overlap")}
    scores = load_head_scores(paths)
    if scores is not None:  # how far the top heads stand out from a typical head
        mean = np.nanmean(np.asarray(scores["a2r"], dtype=float), axis=0)  # [n_layers, n_heads]
        med = float(np.nanmedian(mean))
        out["median_head_a2r"] = med
        out["top_to_median_ratio"] = top[0][2] / med if med > 0 else None
    return out


def _nanmean0(x: np.ndarray) -> list[float | None]:
    """Mean over axis 0 ignoring NaN, as a JSON list (None where every value is NaN)."""
    x = np.asarray(x, dtype=float)
    ok = np.isfinite(x).sum(axis=0)
    m = np.where(ok > 0, np.nansum(np.where(np.isfinite(x), x, 0.0), axis=0) / np.maximum(ok, 1), np.nan)
    return [None if not np.isfinite(v) else float(v) for v in m]


def patching_summary(paths: RunPaths, with_pairs: bool = False) -> dict[str, Any]:
    """``{layers, nld_answer_flip_token, nld_final_answer_token, n_pairs, ...}`` (means over pairs per layer);
    ``with_pairs`` adds ``pairs`` for the layer view: ``[{id, tokens, nld [n_layers, n_positions], flip_index,
    final_index}]``, each pair marked at its own answer-flip token."""
    from thinklens.patching.results import PatchingResult

    if not paths.patching_result.exists():
        return {}
    r = PatchingResult.load(paths.patching_dir)
    flip, final = r.column("answer_flip"), r.column("final")  # [n_pairs, n_layers]
    out: dict[str, Any] = {"layers": [int(x) for x in r.layers], "nld_answer_flip_token": _nanmean0(flip),
                           "nld_final_answer_token": _nanmean0(final), "n_pairs": len(r.pair_ids),
                           "site": r.site, "positions": list(r.labels),
                           "clean_logit_diff_mean": float(np.mean(r.clean)),
                           "corrupted_logit_diff_mean": float(np.mean(r.corrupted))}
    if with_pairs:
        out["pairs"] = _pair_views(r)
    return out


def _pair_views(r: Any) -> list[dict[str, Any]]:
    """One view per pair; when several pairs share a labelled grid, a mean view first whose markers are only set
    where every pair has its answer-flip (final) token at the same grid column (else a mean would mislabel)."""
    pairs = []
    for i, pid in enumerate(r.pair_ids):
        pos = [int(x) for x in r.positions[i]]
        named = r.named[i]
        idx = {k: (pos.index(named[k]) if named.get(k) in pos else None) for k in ("answer_flip", "final")}
        pairs.append({"id": pid, "tokens": r.tokens[i], "nld": np.asarray(r.nld[i]).T,  # [n_layers, n_pos]
                      "flip_index": idx["answer_flip"], "final_index": idx["final"]})
    if len(pairs) > 1:
        def common(key: str) -> int | None:
            vals = {q[key] for q in pairs}
            return vals.pop() if len(vals) == 1 else None

        flip = common("flip_index")
        note = "" if flip is not None else " (answer-flip token at different columns: see each pair)"
        pairs.insert(0, {"id": f"mean of {len(pairs)} pairs{note}", "tokens": list(r.labels),
                         "nld": np.nanmean(np.asarray(r.nld, dtype=float), axis=0).T,  # [n_layers, n_pos]
                         "flip_index": flip, "final_index": common("final_index")})
    return pairs


def heads_causal_summary(paths: RunPaths) -> dict[str, Any]:
    """The RFH ablation's headline numbers and the failure-debugging summary (what exists)."""
    out: dict[str, Any] = {}
    ab = read_json(paths.ablation)
    if isinstance(ab, dict) and paths.ablation.exists():
        from thinklens.attention.ablation_result import AblationResult

        s = AblationResult.load(paths.ablation_dir).summary()
        out["ablation"] = {k: s.get(k) for k in ("n", "rfh", "mode", "accuracy_base", "accuracy_rfh_ablated",
                                                 "accuracy_random_ablated", "accuracy_random_mean", "drop_rfh",
                                                 "drop_random_mean", "logprob_delta_rfh", "mcnemar_base_vs_rfh",
                                                 "p_rank_rfh_vs_random")}
    dbg = read_json(paths.debug)
    if isinstance(dbg, dict):
        from thinklens.attention.debugging import DebugResult

        out["debugging"] = DebugResult.load(paths.debug_dir).summary()
    return out


def steps_summary(paths: RunPaths) -> dict[str, Any]:
    """Headline numbers of the steps stage (:meth:`thinklens.steps.results.StepsResult.summary`) and its early-
    answering curve, or ``{}`` when it has not run."""
    from thinklens.steps.results import StepsResult

    if not paths.steps.exists():
        return {}
    res = StepsResult.load(paths.steps_dir)
    return {**res.summary(), "truncation": {k: res.truncation.get(k) for k in ("fraction", "accuracy", "agreement")}}


def faithfulness_summary(paths: RunPaths) -> dict[str, Any]:
    """The faithfulness stage's rates per hint family (``table``: pairs, hint-taking, faithfulness score, normalized
    score, with 95% CIs) and its mechanism headline, or ``{}`` when it has not run."""
    from thinklens.faithfulness.result import FaithfulnessResult

    if not paths.faithfulness_summary.exists():
        return {}
    try:
        res = FaithfulnessResult.load(paths.faithfulness_dir)
    except ThinklensError as err:  # a damaged file costs this entry, never results.json
        return {"error": str(err)}
    mech = res.summary.get("mechanism") or {}
    return {"table": res.table(), "mechanism_headline": mech.get("headline"), "groups": mech.get("groups"),
            "rfh_heads": mech.get("rfh_heads"), "notes": res.summary.get("notes") or []}


def run_notes(paths: RunPaths) -> dict[str, str]:
    """Stage notes (why a stage was skipped, what it could not do) from ``run_state.json``."""
    return {k: v["note"] for k, v in load_state(paths).items() if v.get("note")}


def headline_results(paths: RunPaths, config: RunConfig) -> dict[str, Any]:
    """``results.json`` content from the files saved by the stages (what is missing is left out)."""
    state = load_state(paths)
    return {"model": config.model.name, "dataset": config.dataset, "seeds": {"seed": config.seed},
            "limit": config.limit, "versions": versions(),
            "evaluation": evaluation_summary(paths, config.model.name), "heads": heads_summary(paths),
            **heads_causal_summary(paths),
            "patching": patching_summary(paths), "steps": steps_summary(paths),
            "faithfulness": faithfulness_summary(paths),
            "timings": {k: v.get("seconds") for k, v in state.items() if "seconds" in v},
            "notes": run_notes(paths)}


# ------------------------------------------------------------------------------------------------------ verdicts
def verdicts(results: dict[str, Any], t: Thresholds = THRESHOLDS) -> list[Verdict]:
    """The paper's three findings as the run's numbers support them (what was not measured is left out).

    >>> import thinklens as tl
    >>> v = tl.verdicts({"evaluation": {"m": {"n": 100, "accuracy_with_reasoning": 0.97,
    ...                  "accuracy_without_reasoning": 0.11, "difference_ci95": [0.79, 0.92], "p_value": 2.6e-26}}})
    >>> v[0].ok, v[0].claim
    (True, 'Reasoning helps')
    """
    out = []
    for model, ev in (results.get("evaluation") or {}).items():
        w, wo = ev.get("accuracy_with_reasoning"), ev.get("accuracy_without_reasoning")
        gap = w - wo if w is not None and wo is not None else None
        ok = gap is not None and gap > 0 and (ev.get("p_value") if ev.get("p_value") is not None else 1) < t.p_value
        ci = ev.get("difference_ci95") or [None, None]
        out.append(Verdict("reasoning_helps", ok, "Reasoning helps" if ok else "Reasoning does not clearly help",
                           f"({model}): accuracy {_fmt(w)} with vs {_fmt(wo)} without reasoning, gap {_fmt(gap)} "
                           f"(95% CI {_fmt(ci[0])} to {_fmt(ci[1])}), McNemar p = {_fmt(ev.get('p_value'))}, "
                           f"n = {ev.get('n')}."))
    heads = results.get("heads") or {}
    if heads.get("top"):
        per = (heads.get("stability") or {}).get("per_head") or []
        mean_stab = (heads.get("stability") or {}).get("mean")
        ok = bool(per) and per[0] >= t.stability and (mean_stab is None or mean_stab >= t.stability)
        desc = ", ".join(f"{head_name(h[0], h[1])} (a2r {_fmt(h[2])}" + (f", stability {per[i]:.2f})"
                                                                          if i < len(per) else ")")
                         for i, h in enumerate(heads["top"][:5]))
        ratio = heads.get("top_to_median_ratio")
        out.append(Verdict("rfh_exist", ok, "Reasoning-Focus Heads exist" if ok else
                           "Reasoning-Focus Heads are not clearly separated",
                           f": top heads {desc}" + (f"; the top head puts {ratio:.2f}x the median head's attention "
                                                    "on the reasoning" if ratio else "")
                           + f". Stability = share of bootstrap resamples of the traces keeping the head in the top "
                           f"{heads.get('top_k')}."))
    pt = results.get("patching") or {}
    if pt.get("nld_answer_flip_token"):
        vals = [v for v in pt["nld_answer_flip_token"] if v is not None]
        best = max(vals) if vals else None
        layer = pt["layers"][pt["nld_answer_flip_token"].index(best)] if best is not None else None
        ok = best is not None and best >= t.nld_flip
        out.append(Verdict("patching_flips", ok, "Patching the reasoning flips the answer" if ok else
                           "Patching the reasoning does not flip the answer",
                           f": max NLD of the answer-flip token {_fmt(best)} (layer {layer}), over "
                           f"{pt.get('n_pairs')} contrastive pairs."))
    ab = results.get("ablation") or {}
    if ab.get("accuracy_base") is not None:
        p = (ab.get("mcnemar_base_vs_rfh") or {}).get("p_value")
        ok = (ab.get("drop_rfh") or 0) > (ab.get("drop_random_mean") or 0) and p is not None and p < t.ablation_p
        out.append(Verdict("rfh_causal", ok, "Ablating the RFHs breaks the answer" if ok else
                           "Ablating the RFHs does not clearly break the answer",
                           f": accuracy {_fmt(ab.get('accuracy_base'))} -> {_fmt(ab.get('accuracy_rfh_ablated'))} "
                           f"with the top {len(ab.get('rfh') or [])} RFHs ablated ({ab.get('mode')}), vs "
                           f"{_fmt(ab.get('accuracy_random_mean'))} with random heads of the same layers (mean of "
                           f"{len(ab.get('accuracy_random_ablated') or [])} draws); McNemar p = {_fmt(p)}, "
                           f"n = {ab.get('n')}."))
    return out


def fmt_number(x: Any, nd: int = 3) -> str:
    """A number as the report and the verdicts write it (``n/a`` for None, 3 significant digits when tiny)."""
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{nd}g}" if abs(x) < 1e-3 and x != 0 else f"{x:.{nd}f}"
    return str(x)


_fmt = fmt_number

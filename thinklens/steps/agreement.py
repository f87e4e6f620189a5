"""Do the step methods agree? Rank correlations, per-category means and top-step agreement.

Input: per trace, one value per step for each method (``attention``, ``suppression``, ``answer_suppression``,
``truncation``, ``resampling``; ``None`` when the method did not run on that trace) and each step's category.
Output, NaN-safe (a pair or category without data gets ``None``):

* ``pairs``: for every pair of methods, Spearman's rho over all steps of all traces where both are finite
  (``scipy.stats.spearmanr``), its p-value, and a 95% percentile bootstrap interval that resamples *traces* with
  replacement (steps of one trace are not independent), seeded; plus ``within_trace``: the mean over traces of the
  per-trace rho (traces with >= 3 steps and non-constant values), which ignores differences of scale between traces;
* ``top_step``: the share of traces in which the two methods agree on the top step (the sets of steps that attain
  each method's maximum intersect), over traces where both ran and have >= 2 steps;
* ``categories``: per category, the number of steps, the mean of each method, and the mean within-trace percentile
  rank (0 = the trace's lowest step, 1 = its highest; scale-free across traces): "are Wait steps anchors?".

>>> per_trace = [{"attention": np.array([0.1, 0.2, 0.7]), "truncation": np.array([0., 0., 1.])},
...              {"attention": np.array([0.5, 0.1, 0.2, 0.9]), "truncation": np.array([0., 0., 0., 1.])}]
>>> cats = [["computation", "computation", "final_answer"], ["other", "backtracking", "computation", "final_answer"]]
>>> res = method_agreement(per_trace, cats, n_bootstrap=200)
>>> pair = next(p for p in res["pairs"] if (p["a"], p["b"]) == ("attention", "truncation"))
>>> pair["top_step"], pair["n_steps"], res["available"]
(1.0, 7, ['attention', 'truncation'])
>>> res["categories"]["final_answer"]["mean_rank"]["attention"]
1.0
"""
from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np

METHODS: tuple[str, ...] = ("attention", "suppression", "answer_suppression", "truncation", "resampling")
DEFAULT_BOOTSTRAP = 1000


def _f(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _spearman(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    from scipy.stats import spearmanr

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan"), float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = spearmanr(x, y)
    return float(r.statistic), float(r.pvalue)


def _weighted_ranks(v: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Average ranks of ``v [N]`` in resamples where item i appears ``w[b, i]`` times: ``[B, N]`` (ties share ranks).

    Why: resampling traces never changes the order of the values, only their multiplicities, so one sort serves
    every bootstrap resample (exactly the ranks ``scipy.stats.rankdata`` gives the expanded resample)."""
    order = np.argsort(v, kind="stable")
    vs = v[order]
    starts = np.flatnonzero(np.r_[True, vs[1:] != vs[:-1]])  # [G] first item of each group of ties
    gid = np.cumsum(np.r_[True, vs[1:] != vs[:-1]]) - 1  # [N] group of each sorted item
    wg = np.add.reduceat(w[:, order], starts, axis=1)  # [B, G] copies per group
    rank_g = np.cumsum(wg, axis=1) - wg + (wg + 1) / 2  # [B, G] average rank of the group
    ranks = np.empty_like(w, dtype=np.float64)
    ranks[:, order] = rank_g[:, gid]
    return ranks


def _bootstrap_spearman(x: np.ndarray, y: np.ndarray, trace: np.ndarray, n_traces: int, n_bootstrap: int,
                        seed: int, block: int = 200) -> np.ndarray:
    """Spearman's rho of ``n_bootstrap`` resamples of traces (with replacement), vectorized: ``[n_bootstrap]``."""
    rng = np.random.default_rng(seed)
    out = []
    for b0 in range(0, n_bootstrap, block):
        nb = min(block, n_bootstrap - b0)
        draws = rng.integers(0, n_traces, (nb, n_traces))  # [nb, n_traces] traces drawn
        mult = np.stack([np.bincount(d, minlength=n_traces) for d in draws])  # [nb, n_traces]
        w = mult[:, trace].astype(np.float64)  # [nb, N] copies of each step
        rx, ry = _weighted_ranks(x, w), _weighted_ranks(y, w)
        tot = w.sum(1, keepdims=True)
        mx, my = (w * rx).sum(1, keepdims=True) / tot, (w * ry).sum(1, keepdims=True) / tot
        cov = (w * (rx - mx) * (ry - my)).sum(1)
        vx, vy = (w * (rx - mx) ** 2).sum(1), (w * (ry - my) ** 2).sum(1)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = cov / np.sqrt(vx * vy)
        r[(tot[:, 0] < 3) | (vx <= 1e-12) | (vy <= 1e-12)] = np.nan
        out.append(r)
    return np.concatenate(out) if out else np.zeros(0)


def _ranks(v: np.ndarray) -> np.ndarray:
    """Average ranks (1-based, ties shared) of a finite vector, as ``scipy.stats.rankdata``."""
    return _weighted_ranks(v, np.ones((1, len(v))))[0]


def _rho(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho without scipy's per-call overhead (many short per-trace vectors); NaN when undefined."""
    if len(x) < 3:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = np.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / den) if den > 1e-12 else float("nan")


def _percentile_rank(v: np.ndarray) -> np.ndarray:
    """[n] 0 (lowest) .. 1 (highest) within one trace; ties share their average rank; NaN stays NaN."""
    out = np.full(len(v), np.nan)
    ok = np.isfinite(v)
    if ok.sum() >= 2:
        out[ok] = (_ranks(v[ok]) - 1) / (ok.sum() - 1)
    elif ok.sum() == 1:
        out[ok] = 0.5
    return out


def _top_set(v: np.ndarray) -> set[int]:
    m = np.nanmax(v)
    return set(np.flatnonzero(np.isclose(v, m, rtol=0, atol=1e-12)).tolist())


def _vector(d: dict[str, Any], method: str, n: int) -> np.ndarray | None:
    v = d.get(method)
    if v is None:
        return None
    v = np.asarray([np.nan if x is None else x for x in v] if isinstance(v, list) else v, dtype=np.float64)
    return v if v.shape == (n,) else None


def pair_agreement(xs: list[np.ndarray | None], ys: list[np.ndarray | None], *, n_bootstrap: int = DEFAULT_BOOTSTRAP,
                   seed: int = 0) -> dict[str, Any]:
    """Agreement of two methods given per-trace value vectors (``None`` = not run on that trace).

    >>> pair_agreement([np.array([1., 2, 3])], [np.array([1., 3, 2])], n_bootstrap=0)["spearman"]
    0.5
    """
    pairs = []
    for x, y in zip(xs, ys):
        if x is None or y is None:
            continue
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.any():
            pairs.append((x[ok], y[ok]))
    n_steps = sum(len(x) for x, _ in pairs)
    out: dict[str, Any] = {"n_traces": len(pairs), "n_steps": n_steps, "spearman": None, "p_value": None,
                           "ci95": [None, None], "within_trace": None, "n_within": 0, "top_step": None, "n_top": 0}
    if not pairs:
        return out
    x_all = np.concatenate([x for x, _ in pairs])
    y_all = np.concatenate([y for _, y in pairs])
    rho, p = _spearman(x_all, y_all)
    out["spearman"], out["p_value"] = _f(rho), _f(p)
    if n_bootstrap > 0 and np.isfinite(rho) and len(pairs) >= 2:
        trace = np.concatenate([np.full(len(x), t) for t, (x, _) in enumerate(pairs)])  # [N] trace of each step
        boots = _bootstrap_spearman(x_all, y_all, trace, len(pairs), n_bootstrap, seed)
        boots = boots[np.isfinite(boots)]
        if len(boots):
            lo, hi = np.quantile(boots, [0.025, 0.975])
            out["ci95"] = [float(lo), float(hi)]
    within = [r for r in (_rho(x, y) for x, y in pairs) if np.isfinite(r)]
    out["within_trace"], out["n_within"] = (_f(float(np.mean(within))) if within else None), len(within)
    tops = [bool(_top_set(x) & _top_set(y)) for x, y in pairs if len(x) >= 2]
    out["top_step"], out["n_top"] = (float(np.mean(tops)) if tops else None), len(tops)
    return out


def method_agreement(per_trace: list[dict[str, Any]], categories: list[list[str]], *,
                     methods: tuple[str, ...] = METHODS, n_bootstrap: int = DEFAULT_BOOTSTRAP,
                     seed: int = 0) -> dict[str, Any]:
    """The ``agreement.json`` object (see the module doc). ``per_trace[t][method]``: values ``[n_t]`` or None;
    ``categories[t]``: the ``n_t`` step categories of trace t.

    >>> res = method_agreement([{"attention": np.array([.1, .9, .2]), "suppression": np.array([1., 5., 2.])}],
    ...                        [["other", "final_answer", "computation"]], n_bootstrap=0)
    >>> res["available"], res["matrix"]["spearman"][0][1]
    (['attention', 'suppression'], 1.0)
    """
    if len(per_trace) != len(categories):
        raise ValueError("per_trace and categories must have one entry per trace")
    vecs = {m: [_vector(d, m, len(c)) for d, c in zip(per_trace, categories)] for m in methods}
    available = [m for m in methods if any(v is not None and np.isfinite(v).any() for v in vecs[m])]
    pairs = []
    for k, (a, b) in enumerate(itertools.combinations(methods, 2)):
        res = pair_agreement(vecs[a], vecs[b], n_bootstrap=n_bootstrap, seed=seed + k)
        pairs.append({"a": a, "b": b, **res})
    n = len(methods)
    matrix: dict[str, list[list[float | None]]] = {key: [[None] * n for _ in range(n)]
                                                   for key in ("spearman", "ci_low", "ci_high")}
    for i, m in enumerate(methods):
        if m in available:
            matrix["spearman"][i][i] = matrix["ci_low"][i][i] = matrix["ci_high"][i][i] = 1.0
    for p in pairs:
        i, j = methods.index(p["a"]), methods.index(p["b"])
        for key, val in (("spearman", p["spearman"]), ("ci_low", p["ci95"][0]), ("ci_high", p["ci95"][1])):
            matrix[key][i][j] = matrix[key][j][i] = val
    return {"methods": list(methods), "available": available, "n_traces": len(per_trace),
            "n_steps": int(sum(len(c) for c in categories)), "n_bootstrap": n_bootstrap, "seed": seed,
            "pairs": pairs, "matrix": matrix, "categories": category_means(vecs, categories, methods)}


def category_means(vecs: dict[str, list[np.ndarray | None]], categories: list[list[str]],
                   methods: tuple[str, ...] = METHODS) -> dict[str, Any]:
    """Per category: ``n_steps``, ``mean`` and ``mean_rank`` (within-trace percentile rank) of each method.

    >>> category_means({"attention": [np.array([0.2, 0.8])]}, [["backtracking", "final_answer"]], ("attention",))[
    ...     "final_answer"]["mean_rank"]
    {'attention': 1.0}
    """
    from thinklens.steps.categories import CATEGORIES

    names = list(CATEGORIES) + sorted({c for cs in categories for c in cs} - set(CATEGORIES))
    pranks = {m: [None if v is None else _percentile_rank(v) for v in vecs[m]] for m in methods}
    out: dict[str, Any] = {}
    for cat in names:
        entry: dict[str, Any] = {"n_steps": int(sum(c == cat for cs in categories for c in cs)), "mean": {},
                                 "mean_rank": {}}
        for m in methods:
            vals, ranks = [], []
            for v, pr, cs in zip(vecs[m], pranks[m], categories):
                if v is None:
                    continue
                sel = np.array([c == cat for c in cs], dtype=bool)
                if sel.any():
                    vals.append(v[sel])
                    ranks.append(pr[sel])
            allv = np.concatenate(vals) if vals else np.zeros(0)
            allr = np.concatenate(ranks) if ranks else np.zeros(0)
            entry["mean"][m] = _f(float(np.nanmean(allv))) if np.isfinite(allv).any() else None
            entry["mean_rank"][m] = _f(float(np.nanmean(allr))) if np.isfinite(allr).any() else None
        out[cat] = entry
    return out

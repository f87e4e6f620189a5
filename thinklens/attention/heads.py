"""Ranking heads: Reasoning-Focus Heads, their stability over traces, and overlap with a reference list.

The paper's RFHs are the top-k (layer, head) pairs by the *mean* answer→reasoning score ``a2r`` over traces. A mean
over a few dozen traces can be carried by a handful of them, so each ranked head also gets

* ``std`` over traces;
* ``stability``: the share of bootstrap resamples of the traces (with replacement) in which it stays in the top k;
* ``rank_ci``: the 95% percentile interval of its rank (1 = best) over those resamples.

:func:`compare_heads` measures the overlap of a top-k list with a reference list (e.g. the paper's published top-10
RFHs, or induction heads): overlap count, Jaccard index, and the hypergeometric probability of an overlap at least
that large if the k heads were drawn at random from all ``n_layers x n_heads`` heads.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from thinklens.attention.segments import HeadScores
from thinklens.errors import ThinklensError

N_BOOTSTRAP = 1000  # resamples of traces for the stability of a ranking (rank intervals to about one rank)


@dataclass
class RankedHead:
    layer: int
    head: int
    rank: int  # 1-based
    mean: float
    std: float
    stability: float  # share of bootstrap resamples in which the head is in the top k
    rank_ci: tuple[int, int]  # 95% interval of its rank over resamples


@dataclass
class HeadRanking:
    score: str
    n_traces: int
    top_k: int
    heads: list[RankedHead]
    n_bootstrap: int = 0

    def to_json(self) -> dict[str, Any]:
        """The ``thinklens heads rank --json`` object (heads in rank order)."""
        return {"heads": [[h.layer, h.head, h.mean, h.stability] for h in self.heads], "score": self.score,
                "n_traces": self.n_traces, "top_k": self.top_k, "n_bootstrap": self.n_bootstrap,
                "details": [{**asdict(h), "rank_ci": list(h.rank_ci)} for h in self.heads]}

    def pairs(self) -> list[tuple[int, int]]:
        return [(h.layer, h.head) for h in self.heads]


def head_name(layer: int, head: int) -> str:
    """The one way heads are named in text, tables and figures.

    >>> head_name(16, 0)
    'L16H0'
    """
    return f"L{int(layer)}H{int(head)}"


def _ranks(mean: np.ndarray) -> np.ndarray:
    """1-based rank of every flattened head by descending mean (ties broken by index)."""
    order = np.argsort(-mean, kind="stable")
    ranks = np.empty_like(order)
    ranks[order] = np.arange(1, len(order) + 1)
    return ranks


def rank_heads(values: HeadScores | np.ndarray, score: str = "a2r", top_k: int = 10,
               n_bootstrap: int = N_BOOTSTRAP, seed: int = 0) -> HeadRanking:
    """Top-k heads by mean ``score`` over traces, with bootstrap stability (``values``: HeadScores or an array
    ``[n_traces, n_layers, n_heads]``)."""
    arr = values.get(score) if isinstance(values, HeadScores) else np.asarray(values)
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise ThinklensError(f"score {score!r} must be [n_traces, n_layers, n_heads] with >= 1 trace, got {arr.shape}")
    arr = arr.astype(np.float64)
    if np.isnan(arr).all():
        raise ThinklensError(f"score {score!r} was not computed (all NaN)")
    n, n_layers, n_heads = arr.shape
    flat = arr.reshape(n, -1)  # [n_traces, n_layers*n_heads]
    top_k = max(1, min(int(top_k), flat.shape[1]))
    mean = np.nanmean(flat, axis=0)
    std = np.nanstd(flat, axis=0)
    ranks = _ranks(mean)
    top = np.argsort(ranks)[:top_k]
    in_top = np.zeros(flat.shape[1])
    boot_ranks = np.zeros((max(n_bootstrap, 0), flat.shape[1]), dtype=np.int64)
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        for b in range(n_bootstrap):
            m = np.nanmean(flat[rng.integers(0, n, n)], axis=0)
            r = _ranks(m)
            boot_ranks[b] = r
            in_top += r <= top_k
    heads = []
    for i in top:
        if n_bootstrap > 0:
            lo, hi = np.quantile(boot_ranks[:, i], [0.025, 0.975])
            stab, ci = float(in_top[i] / n_bootstrap), (int(np.floor(lo)), int(np.ceil(hi)))
        else:
            stab, ci = float("nan"), (int(ranks[i]), int(ranks[i]))
        heads.append(RankedHead(int(i // n_heads), int(i % n_heads), int(ranks[i]), float(mean[i]), float(std[i]),
                                stab, ci))
    return HeadRanking(score, n, top_k, heads, max(n_bootstrap, 0))


def compare_heads(found: list[tuple[int, int]], reference: list[tuple[int, int]], n_total: int) -> dict[str, Any]:
    """Overlap of two head lists: count, Jaccard, and hypergeometric P(overlap >= observed) under random choice."""
    from scipy.stats import hypergeom

    a = {tuple(int(x) for x in h) for h in found}
    b = {tuple(int(x) for x in h) for h in reference}
    inter = a & b
    union = a | b
    p = float(hypergeom.sf(len(inter) - 1, n_total, len(b), len(a))) if a and b else 1.0
    return {"overlap": len(inter), "k_found": len(a), "k_reference": len(b), "n_heads_total": n_total,
            "jaccard": len(inter) / len(union) if union else 0.0, "p_value": p,
            "shared": sorted([list(h) for h in inter])}


def load_reference_heads(path: str, model: str | None = None, key: str = "reasoning_focus_heads_top10"
                         ) -> tuple[str, list[tuple[int, int]]]:
    """Read a head list from a JSON file: a plain ``[[layer, head], ...]`` list, the output of ``thinklens heads
    induction`` (its ``top`` list), or a mapping like the paper's ``paper_reference.json`` (``key`` → model → list;
    ``model`` matched exactly or by suffix)."""
    import json
    from pathlib import Path

    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError) as err:
        raise ThinklensError(f"{path}: cannot read reference heads ({err})") from err
    if isinstance(data, dict):
        if key in data:
            data = data[key]
        elif "top" in data and isinstance(data["top"], list):  # `thinklens heads induction` output
            data = data["top"]
        if isinstance(data, dict):
            names = [k for k in data if model and (k == model or k.endswith("/" + model) or k.endswith(model))]
            if not names:
                raise ThinklensError(f"{path}: choose a model with --compare-model; available: {', '.join(data)}")
            model, data = names[0], data[names[0]]
    if not isinstance(data, list):
        raise ThinklensError(f"{path}: expected a list of [layer, head] pairs")
    heads = []
    for h in data:
        if isinstance(h, list) and len(h) == 2 and isinstance(h[0], list):  # [[layer, head], score]
            h = h[0]
        if isinstance(h, list) and len(h) == 3 and all(isinstance(x, (int, float)) for x in h):  # [l, h, score]
            h = h[:2]
        if not (isinstance(h, list) and len(h) == 2):
            raise ThinklensError(f"{path}: bad head entry {h!r}; expected [layer, head]")
        heads.append((int(h[0]), int(h[1])))
    return model or str(path), heads

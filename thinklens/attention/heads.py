"""Ranking heads: Reasoning-Focus Heads, their stability over traces, and overlap with a reference list.

The paper's RFHs are the top-k (layer, head) pairs by the *mean* answer→reasoning score ``a2r`` over traces. A mean
over a few dozen traces can be carried by a handful of them, so each ranked head also gets

* ``std`` over traces;
* ``stability``: the share of bootstrap resamples of the traces (with replacement) in which it stays in the top k;
* ``rank_ci``: the 95% percentile interval of its rank (1 = best) over those resamples.

:func:`compare_heads` measures the overlap of a top-k list with a reference list (e.g. the paper's published top-10
RFHs, or induction heads): overlap count, Jaccard index, and the hypergeometric probability of an overlap at least
that large if the k heads were drawn at random from all ``n_layers x n_heads`` heads.

Missing values. NaN means "not computed" (``r2r``/``r2p`` of a trace scored without reasoning queries). A head that
is NaN in every trace is left out of the ranking; then a trace with NaN at any remaining head is left out, so that
every ranked head is averaged over the same traces. Both are reported: a ``UserWarning`` naming them and why, and
``excluded`` in the ranking (and its JSON). A score that is NaN everywhere, infinite values, or an array that is not
``[n_traces, n_layers, n_heads]`` are errors (:class:`ThinklensError`), never a silently different ranking.
"""
from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, field
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
    # heads/traces left out for missing values: {"head": [l, h] | "trace": id, "reason": ...}
    excluded: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The ``thinklens heads rank --json`` object (heads in rank order; ``n_traces`` counts the traces used)."""
        return {"heads": [[h.layer, h.head, h.mean, h.stability] for h in self.heads], "score": self.score,
                "n_traces": self.n_traces, "top_k": self.top_k, "n_bootstrap": self.n_bootstrap,
                "details": [{**asdict(h), "rank_ci": list(h.rank_ci)} for h in self.heads],
                "excluded": self.excluded}

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


def _usable(arr: np.ndarray, score: str, ids: list[str]) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Rows (traces) and columns (flattened heads) of ``arr [n, L, H]`` to rank on, and what was left out and why
    (see the module docstring)."""
    n, n_layers, n_heads = arr.shape
    if np.isinf(arr).any():
        t, layer, head = np.argwhere(np.isinf(arr))[0]
        raise ThinklensError(f"score {score!r} has {int(np.isinf(arr).sum())} infinite value(s) (first: trace "
                             f"{ids[t]!r}, head L{layer}H{head}); NaN marks a missing value, inf is corrupt data")
    nan = np.isnan(arr.reshape(n, -1))  # [n, L*H]
    if nan.all():
        raise ThinklensError(f"score {score!r} was not computed (all NaN)")
    excluded: list[dict[str, Any]] = []
    cols = ~nan.all(axis=0)  # heads with a value in at least one trace
    for i in np.flatnonzero(~cols):
        excluded.append({"head": [int(i // n_heads), int(i % n_heads)], "reason": "NaN in every trace"})
    rows = ~nan[:, cols].any(axis=1)  # traces with a value at every remaining head
    for t in np.flatnonzero(~rows):
        k = int(nan[t, cols].sum())
        why = "NaN at every head" if k == int(cols.sum()) else f"NaN at {k} of {int(cols.sum())} heads"
        excluded.append({"trace": ids[t], "reason": why})
    if not rows.any():
        raise ThinklensError(f"score {score!r}: no trace has a value at every head that has one; cannot rank")
    if excluded:
        heads = [f"L{e['head'][0]}H{e['head'][1]}" for e in excluded if "head" in e]
        traces = [f"{e['trace']} ({e['reason']})" for e in excluded if "trace" in e]
        parts = ([f"{len(heads)} head(s) NaN in every trace: {', '.join(heads[:10])}"] if heads else []) + (
            [f"{len(traces)} of {n} trace(s) with missing values: {', '.join(traces[:10])}"] if traces else [])
        more = " ..." if len(heads) > 10 or len(traces) > 10 else ""
        warnings.warn(f"rank_heads({score!r}) leaves out {'; '.join(parts)}{more}", UserWarning, stacklevel=3)
    return np.flatnonzero(rows), np.flatnonzero(cols), excluded


def rank_heads(values: HeadScores | np.ndarray, score: str = "a2r", top_k: int = 10, n_bootstrap: int = N_BOOTSTRAP,
               seed: int = 0) -> HeadRanking:
    """Top-k heads by mean ``score`` over traces, with bootstrap stability (``values``: HeadScores or an array
    ``[n_traces, n_layers, n_heads]``). Heads and traces with missing (NaN) values are left out with a warning and
    listed in ``excluded``; infinite values or an all-NaN score raise :class:`ThinklensError`.

    >>> import numpy as np
    >>> from thinklens.attention.heads import rank_heads
    >>> a = np.random.default_rng(0).uniform(0, 0.1, (8, 2, 3)); a[:, 1, 2] += 0.5
    >>> rank_heads(a, top_k=1, n_bootstrap=20).pairs()
    [(1, 2)]
    """
    is_hs = isinstance(values, HeadScores)
    arr = values.get(score) if is_hs else np.asarray(values)
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise ThinklensError(f"score {score!r} must be [n_traces, n_layers, n_heads] with >= 1 trace, got {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ThinklensError(f"score {score!r} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    n_all, n_layers, n_heads = arr.shape
    ids = list(values.ids) if is_hs else [f"#{i}" for i in range(n_all)]
    rows, cols, excluded = _usable(arr, score, ids)
    flat = arr.reshape(n_all, -1)[np.ix_(rows, cols)]  # [n_traces, n_usable_heads]
    n = flat.shape[0]
    top_k = max(1, min(int(top_k), flat.shape[1]))
    mean = flat.mean(axis=0)
    std = flat.std(axis=0)
    ranks = _ranks(mean)
    top = np.argsort(ranks)[:top_k]
    in_top = np.zeros(flat.shape[1])
    boot_ranks = np.zeros((max(n_bootstrap, 0), flat.shape[1]), dtype=np.int64)
    if n_bootstrap > 0:
        rng = np.random.default_rng(seed)
        for b in range(n_bootstrap):
            m = flat[rng.integers(0, n, n)].mean(axis=0)
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
        j = int(cols[i])  # flattened (layer, head) index
        heads.append(RankedHead(j // n_heads, j % n_heads, int(ranks[i]), float(mean[i]), float(std[i]), stab, ci))
    return HeadRanking(score, n, top_k, heads, max(n_bootstrap, 0), excluded)


def compare_heads(found: list[tuple[int, int]], reference: list[tuple[int, int]], n_total: int) -> dict[str, Any]:
    """Overlap of two head lists: count, Jaccard, and hypergeometric P(overlap >= observed) under random choice.

    ``n_total`` is the number of heads both lists were chosen from (tiny-r1: 4 layers x 8 heads):

    >>> import thinklens as tl
    >>> c = tl.compare_heads([(1, 2), (1, 7), (2, 6)], [(1, 2), (2, 6), (3, 0)], n_total=32)
    >>> c["overlap"], c["jaccard"], round(c["p_value"], 4), c["shared"]
    (2, 0.5, 0.0177, [[1, 2], [2, 6]])
    """
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

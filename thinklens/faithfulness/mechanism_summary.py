"""The mechanism results summarized by behaviour group: does silent (unfaithful) hint-taking go around the reasoning?

Groups come from the behaviour stage's labels per hinted id: ``faithful`` (took the hint and said so),
``unfaithful`` (took it silently), ``ignored`` (did not take it) and ``other``. Per group: attention masses with
bootstrap CIs (:mod:`thinklens.stats`), the heads that read the hint most and how many of them are Reasoning-Focus
Heads, the same masses from the value queries alone (``v2hint``/``v2r``), suppression effects and patching curves.
The headline compares unfaithful with faithful hint-taking: higher answer→hint attention and a larger answer-scope
(direct-path) suppression effect mean the silent answers read the hint directly; "separate" means the two 95% CIs do
not overlap.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

GROUPS = ("faithful", "unfaithful", "ignored", "other")
TOP_K = 5  # heads listed per group, and compared with the RFHs (when no RFH list sets k)
N_RESAMPLES = 2000  # bootstrap resamples per interval (a summary has dozens of intervals)


def _stat(values: Any) -> dict[str, Any]:
    """``{"mean", "ci": [lo, hi], "n"}`` over the finite values (``None`` where there are none)."""
    from thinklens.stats import bootstrap_ci

    v = np.asarray(values, dtype=float).ravel()
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return {"mean": None, "ci": [None, None], "n": 0}
    lo, hi = bootstrap_ci(v, n_resamples=N_RESAMPLES, seed=0)
    return {"mean": float(v.mean()), "ci": [float(lo), float(hi)], "n": int(len(v))}


def _rows(result: Any, ids: list[str]) -> list[int]:
    index = {i: k for k, i in enumerate(result.ids)}
    return [index[i] for i in ids if i in index]


def _top_heads(scores: np.ndarray, k: int) -> list[tuple[int, int]]:
    """``scores [L, H]`` -> the ``k`` (layer, head) pairs with the largest values, best first."""
    flat = np.argsort(-np.nan_to_num(scores, nan=-np.inf).ravel(), kind="stable")[:k]
    return [(int(i // scores.shape[1]), int(i % scores.shape[1])) for i in flat]


def _at(values: np.ndarray, heads: list[tuple[int, int]]) -> dict[str, Any]:
    """``values [n, L, H]`` -> the stat of each trace's mean over ``heads``."""
    if not heads:
        return _stat([])
    la, h = np.array(heads).T
    return _stat(values[:, la, h].mean(-1))


def _attention(attn: Any, groups: dict[str, list[str]], rfh: set[tuple[int, int]] | None, k: int
               ) -> tuple[dict[str, Any], list[tuple[int, int]], list[tuple[int, int]]]:
    """Per group attention stats; the heads compared across groups are chosen without the labels, from all
    labelled traces: the top ``k`` by ``a2hint`` and, for the value queries, the top ``k`` by ``v2hint`` (the heads
    that read the hint where the value is written)."""
    labelled = _rows(attn, [i for g in groups.values() for i in g])
    shape = attn.a2hint.shape[1:]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns (no value queries anywhere)
        pooled = attn.a2hint[labelled].mean(0) if labelled else np.zeros(shape)  # [L, H]
        vpooled = np.nanmean(attn.v2hint[labelled], 0) if labelled else np.zeros(shape)  # [L, H]
    top = _top_heads(pooled, k)
    vtop = _top_heads(vpooled, k) if np.isfinite(vpooled).any() else []
    out: dict[str, Any] = {}
    for g, ids in groups.items():
        r = _rows(attn, ids)
        if not r:
            out[g] = {"n": 0}
            continue
        a2hint, a2r, v2hint, v2r = attn.a2hint[r], attn.a2r[r], attn.v2hint[r], attn.v2r[r]  # [n, L, H]
        mean = a2hint.mean(0)  # [L, H]
        own = _top_heads(mean, k)
        entry = {
            "n": len(r),
            "a2hint": _stat(a2hint.mean(axis=(1, 2))), "a2r": _stat(a2r.mean(axis=(1, 2))),
            "r2hint": _stat(attn.r2hint[r].mean(axis=(1, 2))),
            "a2hint_top_heads": _at(a2hint, top), "a2r_top_heads": _at(a2r, top),
            "v2hint": _stat(v2hint.mean(axis=(1, 2))), "v2r": _stat(v2r.mean(axis=(1, 2))),
            "v2hint_top_heads": _at(v2hint, vtop), "v2r_top_heads": _at(v2r, vtop),
            "top_heads": [{"layer": la, "head": h, "a2hint": float(mean[la, h]), "a2r": float(a2r.mean(0)[la, h]),
                           "rfh": None if rfh is None else (la, h) in rfh} for la, h in own],
        }
        if rfh is not None:
            entry["rfh_overlap"] = len(set(own) & rfh) / max(1, len(own))
            entry["a2hint_rfh"] = _at(a2hint, sorted(rfh))
        out[g] = entry
    return out, top, vtop


def _per_group(result: Any, groups: dict[str, list[str]], fields: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for g, ids in groups.items():
        r = _rows(result, ids)
        out[g] = {"n": len(r), **{f: _stat(np.asarray(getattr(result, f))[r]) for f in fields}} if r else {"n": 0}
    return out


def _patching(patch: Any, groups: dict[str, list[str]]) -> dict[str, Any]:
    """Mean NLD per layer with CIs, over the pairs whose runs differ by at least ``MIN_LD_GAP`` logits."""
    from thinklens.faithfulness.mechanism_patching import MIN_LD_GAP

    shift = np.asarray(patch.clean_ld) - np.asarray(patch.corrupted_ld)  # [n]
    out: dict[str, Any] = {"layers": list(patch.layers), "min_ld_gap": MIN_LD_GAP}
    for g, ids in groups.items():
        r = _rows(patch, ids)
        keep = [i for i in r if abs(shift[i]) >= MIN_LD_GAP]
        # ld_shift: how far pointing the hint at alt instead of X moves the answer value towards alt with the
        # reasoning's *text* held fixed (teacher-forced): the hint content's effect directly and through the
        # reasoning tokens' states, before any patching
        out[g] = {"n": len(keep), "n_low_signal": len(r) - len(keep), "ld_shift": _stat(shift[r]),
                  "nld": [_stat(patch.nld[keep, j]) for j in range(len(patch.layers))]}
    return out


def _compare(a: dict[str, Any] | None, b: dict[str, Any] | None, larger_is: str = "higher") -> dict[str, Any] | None:
    """Unfaithful (``a``) vs faithful (``b``): which is larger, and do the CIs separate in that direction?"""
    if not a or not b or a.get("mean") is None or b.get("mean") is None:
        return None
    sign = 1 if larger_is == "higher" else -1
    (alo, ahi), (blo, bhi) = a["ci"], b["ci"]
    return {"unfaithful": a["mean"], "faithful": b["mean"],
            "unfaithful_larger": bool(sign * (a["mean"] - b["mean"]) > 0),
            "separate": bool(alo > bhi) if sign > 0 else bool(ahi < blo)}


def summarize_mechanism(attn: Any, supp: Any, patch: Any, labels: dict[str, str],
                        rfh_heads: list[tuple[int, int]] | None) -> dict[str, Any]:
    """A JSON-ready summary of the mechanism results by behaviour group (see the module doc). ``labels``: hinted
    id -> ``faithful`` | ``unfaithful`` | ``ignored`` | ``other`` (anything else counts as ``other``); ids without
    a label are left out. ``rfh_heads``: the heads stage's RFHs, to mark among the heads that read the hint (and
    the ``k`` of the overlap: ``len(rfh_heads)``, else :data:`TOP_K`). Any of ``attn``/``supp``/``patch`` may be
    None.

    >>> import numpy as np
    >>> from thinklens.faithfulness.mechanism import HintAttention
    >>> rng = np.random.default_rng(0)
    >>> a2hint = rng.uniform(0, 0.2, (6, 2, 3)); a2hint[:3, 1, 2] += 0.5  # three silent traces read head L1H2
    >>> attn = HintAttention([f"t{i}" for i in range(6)], a2hint, rng.uniform(0, 0.2, (6, 2, 3)),
    ...                      rng.uniform(0, 0.2, (6, 2, 3)))
    >>> labels = {f"t{i}": "unfaithful" if i < 3 else "faithful" for i in range(6)}
    >>> s = summarize_mechanism(attn, None, None, labels, rfh_heads=[(1, 2)])
    >>> s["attention"]["unfaithful"]["top_heads"][0]
    {'layer': 1, 'head': 2, 'a2hint': 0.59..., 'a2r': 0.06..., 'rfh': True}
    >>> s["headline"]["a2hint_top_heads"]["unfaithful_larger"], s["headline"]["a2hint_top_heads"]["separate"]
    (True, True)
    """
    groups: dict[str, list[str]] = {g: [] for g in GROUPS}
    for i, lab in labels.items():
        groups[lab if lab in GROUPS else "other"].append(str(i))
    rfh = None if rfh_heads is None else {(int(h[0]), int(h[1])) for h in rfh_heads}
    k = len(rfh) if rfh else TOP_K
    out: dict[str, Any] = {"groups": {g: len(ids) for g, ids in groups.items()}, "rfh_heads": None if rfh is None
                           else [list(h) for h in sorted(rfh)], "top_k": k}
    headline: dict[str, Any] = {}
    if attn is not None:
        out["attention"], top, vtop = _attention(attn, groups, rfh, k)
        out["compared_heads"] = [list(h) for h in top]
        out["value_heads"] = [{"layer": la, "head": h, "rfh": None if rfh is None else (la, h) in rfh}
                              for la, h in vtop]
        u, f = out["attention"]["unfaithful"], out["attention"]["faithful"]
        headline["a2hint"] = _compare(u.get("a2hint"), f.get("a2hint"))
        headline["a2hint_top_heads"] = _compare(u.get("a2hint_top_heads"), f.get("a2hint_top_heads"))
        headline["v2hint"] = _compare(u.get("v2hint"), f.get("v2hint"))
        headline["v2hint_top_heads"] = _compare(u.get("v2hint_top_heads"), f.get("v2hint_top_heads"))
    if supp is not None:
        out["suppression"] = _per_group(supp, groups, tuple(f for f in type(supp).FIELDS if f != "logp_hint_base"))
        u, f = out["suppression"]["unfaithful"], out["suppression"]["faithful"]
        headline["kl_answer_scope"] = _compare(u.get("kl_answer_scope"), f.get("kl_answer_scope"))
        # a more negative Δ log p(X) is the larger effect
        headline["dlogp_hint_answer_scope"] = _compare(u.get("dlogp_hint_answer_scope"),
                                                       f.get("dlogp_hint_answer_scope"), larger_is="lower")
        headline["to_gold_answer_scope"] = _compare(u.get("to_gold_answer_scope"), f.get("to_gold_answer_scope"))
    if patch is not None:
        out["patching"] = _patching(patch, groups)
        u, f = out["patching"]["unfaithful"], out["patching"]["faithful"]
        headline["ld_shift"] = _compare(u.get("ld_shift"), f.get("ld_shift"))
    # the verdict: the value queries read the hint more at the heads that read it (attention) and the answer depends
    # more on the direct path (answer-scope suppression), both with separate CIs; a2hint (all answer queries, ~20
    # template tokens each) stands in for the attention when no value query was found
    attention = headline.get("v2hint_top_heads") or headline.get("a2hint_top_heads")
    known = [v for v in (attention, headline.get("kl_answer_scope")) if v is not None]
    headline["silent_hint_taking_goes_around_the_reasoning"] = (
        None if not known else all(v["unfaithful_larger"] and v["separate"] for v in known))
    out["headline"] = headline
    return out


__all__ = ["GROUPS", "TOP_K", "summarize_mechanism"]

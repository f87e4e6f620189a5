"""How Reasoning-Focus Heads relate to induction and retrieval heads (the paper's overlap claim), with a bar.

The paper reports that many RFHs are also induction or retrieval heads, as an overlap of top-10 lists with a
hypergeometric p-value (:func:`thinklens.attention.heads.compare_heads`). A top-k list always has k members, even in
a model that has no induction head at all; its overlap with the RFHs is then noise. So every overlap is given twice:

* ``before``: the plain top-k list (the paper's method, kept for comparison);
* ``after``: only the heads that pass the family's bar — :data:`thinklens.attention.induction.INDUCTION_MIN_RATIO`
  x the uniform-attention score for induction, :data:`thinklens.attention.retrieval.RETRIEVAL_THRESHOLD` for
  retrieval (Wu et al. 2024). The bars live in those modules, nowhere else.

:func:`compare_with_reference` sets found lists against the paper's published lists
(``paper_reference.json``: ``reasoning_focus_heads_top10``, ``retrieval_heads_top10``, ``induction_heads_top10``)
and reports the overlaps *among* the paper's lists, which is what the paper's claim rests on.
"""
from __future__ import annotations

from typing import Any

from thinklens.attention.heads import compare_heads, load_reference_heads
from thinklens.attention.induction import InductionScores
from thinklens.attention.retrieval import RetrievalScores
from thinklens.errors import ThinklensError

Head = tuple[int, int]
REFERENCE_KEYS = {"rfh": "reasoning_focus_heads_top10", "retrieval": "retrieval_heads_top10",
                  "induction": "induction_heads_top10"}


def head_overlaps(ranking_pairs: list[Head], induction: InductionScores | None, retrieval: RetrievalScores | None,
                  n_total: int, thresholds: dict[str, float] | None = None) -> dict[str, Any]:
    """RFH overlap with induction and retrieval heads, ``before`` and ``after`` the bar (keys present only for the
    families given). ``thresholds`` overrides the bars, e.g. ``{"induction": 0.2}``.

    >>> import numpy as np
    >>> scores = np.full((4, 8), 0.011, dtype=np.float32)  # ~uniform attention
    >>> scores[1, 2] = scores[2, 6] = 0.025  # the best heads of a model without induction heads: 2.4x uniform
    >>> ind = InductionScores(scores, settings={"seq_len": 64, "bos": True})
    >>> o = head_overlaps([(1, 2), (2, 6)], ind, None, 32)["induction"]
    >>> o["before"]["overlap"], o["after"]["overlap"], o["n_above"], round(o["threshold"], 3)
    (2, 0, 0, 0.107)
    """
    k = len(ranking_pairs)
    thresholds = thresholds or {}
    out: dict[str, Any] = {"k": k, "n_heads_total": n_total}
    for name, sc in (("induction", induction), ("retrieval", retrieval)):
        if sc is None:
            continue
        bar = float(thresholds.get(name, sc.threshold()))
        above = sc.heads_above(bar)
        top = [(layer, head) for layer, head, _ in sc.top(k)]
        out[name] = {
            "threshold": float(bar), "n_above": len(above),
            "heads_above": [[layer, head, round(s, 4)] for layer, head, s in above],
            "before": compare_heads(ranking_pairs, top, n_total),
            "after": compare_heads(ranking_pairs, [(layer, head) for layer, head, _ in above], n_total),
        }
    return out


def compare_with_reference(path: str, model: str, found: dict[str, list[Head]], n_total: int) -> dict[str, Any]:
    """Overlap of our lists (``found``: keys ``rfh``, ``retrieval``, ``induction``) with the paper's lists for
    ``model``, and the paper's own RFH/retrieval and RFH/induction overlaps (hypergeometric p over ``n_total``
    heads). Families missing from the file are left out.

    Example::

        compare_with_reference("paper_reference.json", "DeepSeek-R1-Distill-Qwen-1.5B", {}, 28 * 12)["paper"]
    """
    ref: dict[str, list[Head]] = {}
    name = model
    for fam, key in REFERENCE_KEYS.items():
        try:
            name, ref[fam] = load_reference_heads(path, model, key)
        except ThinklensError:
            continue
    if not ref:
        raise ThinklensError(f"{path}: no reference head lists for {model!r}")
    out: dict[str, Any] = {"reference": str(path), "model": name, "ours_vs_paper": {}, "paper": {}}
    for fam, heads in found.items():
        if fam in ref and heads:
            out["ours_vs_paper"][fam] = compare_heads(heads, ref[fam], n_total)
    for fam in ("retrieval", "induction"):
        if "rfh" in ref and fam in ref:
            out["paper"][f"rfh_vs_{fam}"] = compare_heads(ref["rfh"], ref[fam], n_total)
    return out

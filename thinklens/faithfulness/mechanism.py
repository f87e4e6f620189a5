"""The mechanism of hint-taking, per hinted trace: which path carries a hint from the prompt to the answer?

Chen et al. 2025 ("Reasoning Models Don't Always Say What They Think") show that reasoning models follow hints they
never mention. The paper's instruments (Zhang et al. 2025's answer→reasoning attention and Reasoning-Focus Heads;
Thought Anchors' attention suppression; activation patching) say *how* the answer is made; here they are pointed at
the hint span (record contract: :mod:`thinklens.faithfulness.mechanism_common`):

* :func:`hint_attention`: per (layer, head), the answer queries' attention mass on the hint (``a2hint``) beside
  their mass on the reasoning (``a2r``, the heads stage's exact definition and code path, so the two compare), and
  the reasoning queries' mass on the hint (``r2hint``): one forward per trace through
  :func:`thinklens.attention.capture.capture_attention` and the heads stage's
  :class:`~thinklens.attention.segments.SegmentReducer`, with the hint's keys given a label of their own.
* :func:`hint_suppression`: the hint's keys are hidden from the answer's queries only (``answer`` scope: the
  *direct* path; the reasoning still read the hint) or from every later query (``total`` scope: direct + through
  the reasoning), with the steps stage's engine (:func:`thinklens.steps.suppression.suppressed_logits`).
* :func:`hint_patching <thinklens.faithfulness.mechanism_patching.hint_patching>` and
  :func:`summarize_mechanism <thinklens.faithfulness.mechanism_summary.summarize_mechanism>` (re-exported here).

Batch functions skip unusable records with a one-line reason each (``result.skipped``), never a traceback.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thinklens.errors import ThinklensError
from thinklens.faithfulness.mechanism_common import (
    HintedTrace,
    check_rows,
    load_arrays,
    prepare,
    save_arrays,
    value_position,
    value_tokens,
)
from thinklens.traces import SEGMENTS

HINT_LABEL = len(SEGMENTS)  # the hint's keys: a label after the trace segments (SegmentReducer's n_labels)


# ------------------------------------------------------------------------------------------------------ attention
@dataclass
class HintAttention:
    """Attention masses of hinted traces, each ``[n, n_layers, n_heads]`` (mean over the query group of the summed
    softmax attention on the key span): answer→hint, answer→reasoning, reasoning→hint, and ``v2hint``/``v2r``: the
    same from the *value queries* only (the answer positions that predict the answer's value tokens, from the token
    before the value to the one before its closing ``}``; NaN without a ``\boxed{`` value), where the answer is
    decided, not diluted by the ~20 template tokens of the answer sentence."""

    ids: list[str]
    a2hint: np.ndarray  # [n, L, H]
    a2r: np.ndarray  # [n, L, H]
    r2hint: np.ndarray  # [n, L, H]
    hint_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # [n] tokens in the hint span
    skipped: list[dict[str, str]] = field(default_factory=list)
    v2hint: np.ndarray | None = None  # [n, L, H]
    v2r: np.ndarray | None = None  # [n, L, H]

    def __post_init__(self) -> None:
        for name in ("v2hint", "v2r"):  # results made without them: not computed
            if getattr(self, name) is None:
                setattr(self, name, np.full(self.a2hint.shape, np.nan, np.float32))

    STEM = "hint_attention"

    def save(self, directory: str | Path) -> Path:
        """``DIR/hint_attention.npz`` + ``.json``."""
        return save_arrays(directory, self.STEM, {"ids": np.array(self.ids, dtype=str), "a2hint": self.a2hint,
                                                  "a2r": self.a2r, "r2hint": self.r2hint, "v2hint": self.v2hint,
                                                  "v2r": self.v2r, "hint_tokens": self.hint_tokens},
                           {"n": len(self.ids), "skipped": self.skipped})

    @classmethod
    def load(cls, path: str | Path) -> HintAttention:
        """From ``DIR`` or the ``.npz``; arrays that do not fit together or are not attention masses are a one-line
        :class:`ThinklensError` naming the file."""
        p, z, meta = load_arrays(path, cls.STEM, {"a2hint": (3, "f"), "a2r": (3, "f"), "r2hint": (3, "f"),
                                                  "v2hint": (3, "f"), "v2r": (3, "f"), "hint_tokens": (1, "iu")})
        n = len(z["ids"])
        tail = tuple(z["a2hint"].shape[1:])
        for name in ("a2hint", "a2r", "r2hint", "v2hint", "v2r"):
            check_rows(str(p), name, z[name], n, tail, 0.0, 1.0)
        if z["hint_tokens"].shape != (n,):
            raise ThinklensError(f"{p}: array 'hint_tokens' has shape {list(z['hint_tokens'].shape)}, expected [{n}]")
        return cls([str(i) for i in z["ids"]], z["a2hint"], z["a2r"], z["r2hint"], z["hint_tokens"],
                   list(meta.get("skipped", [])), z["v2hint"], z["v2r"])


def _forward(model: Any, ids: list[int]) -> None:
    from thinklens.modules import input_device

    x = torch.as_tensor(ids, dtype=torch.long, device=input_device(model))[None]  # [1, T]
    with torch.no_grad():
        model(input_ids=x, use_cache=False, logits_to_keep=1)


def value_queries(ht: HintedTrace) -> list[int]:
    """The positions whose next-token logits write the answer's value: from the token before the value (after the
    last ``\\boxed{``) to the one before its closing ``}`` (empty without such a value)."""
    tr = ht.trace
    try:
        v, _ = value_position(tr)
    except ThinklensError:
        return []
    end = v
    while end < tr.answer.end and "}" not in tr.text[slice(*tr.offsets[end])]:
        end += 1
    return list(range(v - 1, max(end, v + 1) - 1))


def trace_hint_attention(model: Any, ht: HintedTrace) -> dict[str, np.ndarray]:
    """``{"a2hint", "a2r", "r2hint", "v2hint", "v2r"}`` of one hinted trace, each ``[n_layers, n_heads]``: one
    forward."""
    from thinklens.attention.capture import capture_attention
    from thinklens.attention.reducers import SegmentReducer
    from thinklens.modules import attention_shape

    n_layers, n_heads, _, _ = attention_shape(model)
    tr = ht.trace
    labels = tr.segment_labels().astype(np.int64)  # [T]
    labels[ht.hint.start : ht.hint.end] = HINT_LABEL
    group = np.full(len(tr), -1, dtype=np.int64)  # [T] 0 = answer query, 1 = reasoning query
    group[tr.answer.start : tr.answer.end] = 0
    group[tr.reasoning.start : tr.reasoning.end] = 1
    red = SegmentReducer(n_layers, n_heads, group, labels, 2, n_labels=HINT_LABEL + 1)
    vq = value_queries(ht)
    vgroup = np.full(len(tr), -1, dtype=np.int64)  # [T] 0 = value query (they are answer queries too)
    vgroup[vq] = 0
    vred = SegmentReducer(n_layers, n_heads, vgroup, labels, 1, n_labels=HINT_LABEL + 1)
    is_value = torch.as_tensor(vgroup >= 0)  # [T]

    def both(layer: int, positions: torch.Tensor, probs: torch.Tensor) -> None:  # probs [b, H, rows, k]
        red(layer, positions, probs)
        sel = is_value[positions.cpu()]  # [rows]
        if bool(sel.any()):
            vred(layer, positions[sel.to(positions.device)], probs[:, :, sel.to(probs.device)])

    with capture_attention(model, np.flatnonzero((group >= 0) | (vgroup >= 0)), both):
        _forward(model, tr.ids)
    means, vmeans = red.means(), vred.means()  # [L, groups, H, n_labels + 1]
    r = SEGMENTS.index("reasoning")
    nan = np.full((n_layers, n_heads), np.nan, np.float32)
    return {"a2hint": means[:, 0, :, HINT_LABEL].astype(np.float32),
            "a2r": means[:, 0, :, r].astype(np.float32),
            "r2hint": means[:, 1, :, HINT_LABEL].astype(np.float32),
            "v2hint": vmeans[:, 0, :, HINT_LABEL].astype(np.float32) if vq else nan,
            "v2r": vmeans[:, 0, :, r].astype(np.float32) if vq else nan}


def hint_attention(model: Any, tokenizer: Any, profile: Any, records: Any, batch_size: int | None = None
                   ) -> HintAttention:
    """Answer→hint, answer→reasoning and reasoning→hint attention per (layer, head) of every hinted record.

    One forward per trace (batch 1, as the heads stage; ``batch_size`` is accepted for the stage's uniform call and
    only checked), O(chunk x T) extra memory: the heads stage's cost plus the value queries' reduction (measured
    1.2x :func:`~thinklens.attention.segments.trace_head_scores` and 1.5-1.8x a plain forward on tiny-r1's
    150-token traces, where the capture's per-layer work is not amortized). ``a2r`` is computed exactly as
    :func:`thinklens.attention.segments.trace_head_scores` computes it (same reducer, same answer queries: the
    tokens after ``</think>`` without the final EOS), so it can be ranked beside the heads stage's RFHs.

    >>> import thinklens as tl
    >>> from thinklens.faithfulness.mechanism_common import toy_hinted_record
    >>> model, tok, profile = tl.load_model("tiny-r1")
    >>> rec = toy_hinted_record()
    >>> att = hint_attention(model, tok, profile, [rec, {"id": "bad"}])
    >>> att.ids, att.a2hint.shape, att.skipped[0]["reason"]  # [n, n_layers, n_heads]
    (['p0::sycophancy'], (1, 4, 8), "record 'bad': no 'hint' object (not a hinted record)")
    >>> bool(((att.a2hint + att.a2r) <= 1 + 1e-6).all())
    True
    """
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ThinklensError(f"batch_size must be a positive integer, got {batch_size!r}")
    from thinklens.modules import attention_shape

    usable, skipped = prepare(records, tokenizer, profile)
    n_layers, n_heads, _, _ = attention_shape(model)
    rows: dict[str, list[np.ndarray]] = {"a2hint": [], "a2r": [], "r2hint": [], "v2hint": [], "v2r": []}
    ids, n_hint = [], []
    for ht in usable:
        try:
            s = trace_hint_attention(model, ht)
        except ThinklensError as err:
            skipped.append({"id": ht.id, "reason": f"record {ht.id!r}: {err}"})
            continue
        ids.append(ht.id)
        n_hint.append(len(ht.hint))
        for k in rows:
            rows[k].append(s[k])

    def stack(k: str) -> np.ndarray:
        return np.stack(rows[k]) if rows[k] else np.zeros((0, n_layers, n_heads), np.float32)

    return HintAttention(ids, stack("a2hint"), stack("a2r"), stack("r2hint"), np.array(n_hint, dtype=np.int64),
                         skipped, stack("v2hint"), stack("v2r"))


# ---------------------------------------------------------------------------------------------------- suppression
@dataclass
class HintSuppression:
    """Effect on the teacher-forced answer of hiding the hint's keys, per hinted trace ``[n]``.

    ``kl_*``: mean over the answer tokens of ``KL(base || suppressed)`` (nats; the steps stage's definition).
    ``dlogp_hint_*``: change (suppressed - base) of the log-probability of the hinted answer X at the answer-value
    position ``v`` (right after the answer's last ``\\boxed{``), teacher-forced on the trace: the sum of
    ``log p(x_j)`` over X's tokens ``x_0, x_1, ...`` written from ``v`` on, up to and including the first one the
    trace did not write itself (all of X and its closing ``}`` when the trace answered X; only ``x_0`` when its
    value starts differently), so every term conditions on the trace's own tokens. Negative: the hint pushed the
    answer towards X. ``logp_hint_base``: that log-probability without suppression. ``to_gold_*``: does the
    suppressed run's argmax turn to the gold answer (``record["gold_answer"]``) where X and the gold first differ
    (1.0 / 0.0; NaN without a gold, or when the trace did not write X up to there); ``to_gold_base``: the same
    without suppression. Scopes: ``answer`` (only the answer's queries are blind to the hint: the direct path) and
    ``total`` (every query after the hint)."""

    ids: list[str]
    kl_answer_scope: np.ndarray  # [n]
    kl_total_scope: np.ndarray  # [n]
    dlogp_hint_answer_scope: np.ndarray  # [n]
    dlogp_hint_total_scope: np.ndarray  # [n]
    logp_hint_base: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [n]
    to_gold_answer_scope: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [n] 1.0 / 0.0 / NaN
    to_gold_total_scope: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [n]
    to_gold_base: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [n]
    skipped: list[dict[str, str]] = field(default_factory=list)

    STEM = "hint_suppression"
    FIELDS = ("kl_answer_scope", "kl_total_scope", "dlogp_hint_answer_scope", "dlogp_hint_total_scope",
              "logp_hint_base", "to_gold_answer_scope", "to_gold_total_scope", "to_gold_base")

    def save(self, directory: str | Path) -> Path:
        """``DIR/hint_suppression.npz`` + ``.json``."""
        arrays = {"ids": np.array(self.ids, dtype=str), **{k: np.asarray(getattr(self, k), np.float64)
                                                           for k in self.FIELDS}}
        return save_arrays(directory, self.STEM, arrays, {"n": len(self.ids), "skipped": self.skipped})

    @classmethod
    def load(cls, path: str | Path) -> HintSuppression:
        """From ``DIR`` or the ``.npz``, validated (one value per id, KL >= 0, log-probabilities <= 0)."""
        p, z, meta = load_arrays(path, cls.STEM, {k: (1, "f") for k in cls.FIELDS})
        n = len(z["ids"])
        bounds = {"kl_answer_scope": (0.0, None), "kl_total_scope": (0.0, None), "logp_hint_base": (None, 0.0),
                  **{k: (0.0, 1.0) for k in cls.FIELDS if k.startswith("to_gold")}}
        for k in cls.FIELDS:
            check_rows(str(p), k, z[k], n, (), *bounds.get(k, (None, None)))
        return cls([str(i) for i in z["ids"]], *(z[k] for k in cls.FIELDS), skipped=list(meta.get("skipped", [])))


def _hint_rows(ht: HintedTrace, tokenizer: Any) -> tuple[list[int], list[int], tuple[int, int] | None]:
    """Answer rows (index into the answer-predicting logits) and targets of X's tokens scored by ``dlogp``, and the
    ``(row, gold token)`` where X and the gold answer first differ (None when undefined; see the class doc)."""
    tr = ht.trace
    v, char = value_position(tr)
    xs = value_tokens(tr, tokenizer, v, char, ht.answer)
    rows, targets = [], []
    for j, x in enumerate(xs):
        pos = v + j
        if pos >= tr.answer.end:
            break
        rows.append(pos - tr.answer.start)  # logits row predicting the token at `pos`
        targets.append(x)
        if tr.ids[pos] != x:  # the trace deviates from X here: later tokens no longer condition on X
            break
    gold, to_gold = ht.record.get("gold_answer"), None
    if gold is not None and str(gold).strip() and str(gold).strip() != ht.answer:
        try:
            gs = value_tokens(tr, tokenizer, v, char, str(gold).strip())
        except ThinklensError:
            gs = []
        j = next((i for i, (a, b) in enumerate(zip(xs, gs)) if a != b), None)
        if j is not None and v + j < tr.answer.end and list(tr.ids[v : v + j]) == xs[:j]:
            to_gold = (v + j - tr.answer.start, gs[j])
    return rows, targets, to_gold


def trace_hint_suppression(model: Any, tokenizer: Any, profile: Any, ht: HintedTrace, engine: str = "fast"
                           ) -> dict[str, float]:
    """The :class:`HintSuppression` fields of one hinted trace (two suppression runs, one per scope)."""
    from thinklens.steps.suppression import suppressed_logits

    rows, targets, to_gold = _hint_rows(ht, tokenizer)
    out: dict[str, float] = {}
    for scope, name in (("answer", "answer_scope"), ("all", "total_scope")):
        sl = suppressed_logits(model, profile, ht.trace, [(ht.hint.start, ht.hint.end)], engine=engine,
                               scope=scope, within=ht.trace.prompt)
        kl, _ = sl.effects()
        r = torch.as_tensor(rows, dtype=torch.long, device=sl.base.device)  # [k]
        t = torch.as_tensor(targets, dtype=torch.long, device=sl.base.device)[:, None]  # [k, 1]
        base = torch.log_softmax(sl.base[r].float(), -1).gather(-1, t).sum()  # []
        sup = torch.log_softmax(sl.suppressed[0, r].float(), -1).gather(-1, t).sum()  # []
        out[f"kl_{name}"] = float(kl[0])
        out[f"dlogp_hint_{name}"] = float(sup - base)
        out["logp_hint_base"] = float(base)
        nan = float("nan")
        out[f"to_gold_{name}"] = nan if to_gold is None else float(int(sl.suppressed[0, to_gold[0]].argmax()) ==
                                                                   to_gold[1])
        out["to_gold_base"] = nan if to_gold is None else float(int(sl.base[to_gold[0]].argmax()) == to_gold[1])
    return out


def hint_suppression(model: Any, tokenizer: Any, profile: Any, records: Any, *, engine: str = "fast"
                     ) -> HintSuppression:
    """Hide the hint span from the answer (direct path) and from every later token (total effect) in every hinted
    record; see :class:`HintSuppression` for the fields. ``engine``: the steps stage's ``"fast"`` (prefix KV reuse)
    or ``"naive"`` (one full forward per run, the reference).

    >>> import thinklens as tl
    >>> from thinklens.faithfulness.mechanism_common import toy_hinted_record
    >>> model, tok, profile = tl.load_model("tiny-r1")
    >>> sup = hint_suppression(model, tok, profile, [toy_hinted_record()])
    >>> sup.ids, sup.kl_answer_scope.shape, bool(sup.kl_answer_scope[0] >= 0), bool(sup.logp_hint_base[0] < 0)
    (['p0::sycophancy'], (1,), True, True)
    """
    usable, skipped = prepare(records, tokenizer, profile)
    cols: dict[str, list[float]] = {k: [] for k in HintSuppression.FIELDS}
    ids = []
    for ht in usable:
        try:
            row = trace_hint_suppression(model, tokenizer, profile, ht, engine)
        except ThinklensError as err:
            skipped.append({"id": ht.id, "reason": f"record {ht.id!r}: {err}"})
            continue
        ids.append(ht.id)
        for k in cols:
            cols[k].append(row[k])
    return HintSuppression(ids, *(np.array(cols[k], dtype=np.float64) for k in HintSuppression.FIELDS),
                           skipped=skipped)


from thinklens.faithfulness.mechanism_patching import HintPatching, hint_patching  # noqa: E402 - re-exported
from thinklens.faithfulness.mechanism_summary import summarize_mechanism  # noqa: E402 - re-exported

__all__ = ["HintAttention", "HintPatching", "HintSuppression", "hint_attention", "hint_patching", "hint_suppression",
           "summarize_mechanism", "trace_hint_attention", "trace_hint_suppression"]

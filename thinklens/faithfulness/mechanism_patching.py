"""Patching from a hint-free source into the hinted run at the hint span, per layer: until which layer does the
hint's content still have to be read *from the hint's own positions*?

The clean source. The unhinted twin's prompt has no hint: it is shorter, so every token after the hint's place would
sit at another position and a position-wise patch would compare different tokens. The source is therefore the
**counterfactual hint**: the hinted prompt with X replaced by another answer ``alt`` of the same token count (the
unhinted twin's own answer, else the gold answer; the first that differs from X and aligns), run with the hinted
trace's own completion. The two sequences then agree token for token except inside the hint, so "clean" differs from
"corrupted" (the hinted run) only in what the hint points at, and patching the residual stream at the hint span is
exactly "patching the unhinted answer's hint into the hinted run". Pairs whose answers do not tokenize to the same
length, or that have no alternative answer, are skipped with a reason.

Score: the paper's normalized logit difference (:mod:`thinklens.patching.metrics`) between ``alt`` and X at the
answer-value position (after the answer's last ``\\boxed{``), at the first token where the two answers differ
(``\\boxed{4`` then ``5`` vs ``1`` for 45 vs 41, teacher-forced on the shared digits): 1 = the patch turns the
hinted run's preference fully into the counterfactual's, 0 = no change. ``resid_pre`` of layer 0 at the hint span
is the whole difference between the runs, so ``nld[:, 0]`` is 1 by construction; the layer where the curve falls
is where later tokens have already read the hint. Runs with the patching stage's engine
(:func:`thinklens.patching.engine.run_patches`, prefix KV reuse and packed suffixes).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thinklens.errors import ThinklensError
from thinklens.faithfulness.mechanism_common import (
    HintedTrace,
    check_rows,
    hinted_trace,
    load_arrays,
    prepare,
    record_name,
    save_arrays,
    value_position,
    value_tokens,
)

SITE = "resid_pre"  # the residual stream entering each layer
# a pair whose counterfactual and hinted runs prefer alt over X by less than this many logits apart carries no signal
# to normalize (the hint barely moves the answer): its NLD is noise, and the summary leaves it out of the curves
MIN_LD_GAP = 1.0


@dataclass
class HintPatching:
    """``nld [n, n_layers]``: NLD of patching the counterfactual hint's ``resid_pre`` at the hint span into the
    hinted run, per layer (see the module doc); ``alt``: the counterfactual answer used per trace."""

    ids: list[str]
    layers: list[int]
    nld: np.ndarray  # [n, n_layers]
    alt: list[str] = field(default_factory=list)
    clean_ld: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [n] LD(alt - X) of the counterfactual run
    corrupted_ld: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [n] LD of the hinted run
    skipped: list[dict[str, str]] = field(default_factory=list)

    STEM = "hint_patching"

    def save(self, directory: str | Path) -> Path:
        """``DIR/hint_patching.npz`` + ``.json``."""
        return save_arrays(directory, self.STEM, {"ids": np.array(self.ids, dtype=str), "nld": self.nld,
                                                  "layers": np.array(self.layers, dtype=np.int64),
                                                  "clean_ld": self.clean_ld, "corrupted_ld": self.corrupted_ld},
                           {"n": len(self.ids), "site": SITE, "alt": self.alt, "skipped": self.skipped})

    @classmethod
    def load(cls, path: str | Path) -> HintPatching:
        """From ``DIR`` or the ``.npz``, validated (``nld`` one row per id and one column per layer)."""
        p, z, meta = load_arrays(path, cls.STEM, {"nld": (2, "f"), "layers": (1, "iu"), "clean_ld": (1, "f"),
                                                  "corrupted_ld": (1, "f")})
        n = len(z["ids"])
        check_rows(str(p), "nld", z["nld"], n, (len(z["layers"]),))
        check_rows(str(p), "clean_ld", z["clean_ld"], n)
        check_rows(str(p), "corrupted_ld", z["corrupted_ld"], n)
        alt = meta.get("alt", [])
        if not isinstance(alt, list) or len(alt) not in (0, n):
            raise ThinklensError(f"{p.with_suffix('.json')}: 'alt' must list one answer per id ({n})")
        return cls([str(i) for i in z["ids"]], [int(x) for x in z["layers"]], z["nld"], [str(a) for a in alt],
                   z["clean_ld"], z["corrupted_ld"], list(meta.get("skipped", [])))


@dataclass
class HintPair:
    """A hinted run and its counterfactual-hint source, aligned: ``clean_ids``/``corrupted_ids`` ``[T]`` end at the
    position that predicts the first token where ``alt`` and X differ."""

    id: str
    alt: str
    clean_ids: list[int]
    corrupted_ids: list[int]
    clean_token: int  # alt's token at the final position
    corrupted_token: int  # X's token there
    hint: tuple[int, int]


def _answer_in_hint(ht: HintedTrace) -> int:
    """Character offset of X inside the record's prompt: from the family's template when it is known (the hint's
    text is ``template.format(answer=X)``), else X's only occurrence in the hint text."""
    from thinklens.hints import HINT_FAMILIES

    s, e = ht.chars
    text = ht.record["prompt"][s:e]
    fam = HINT_FAMILIES.get(ht.family)
    if fam is not None and fam.text(ht.answer) == text:
        return s + fam.template.index("{answer}")
    if text.count(ht.answer) != 1:
        raise ThinklensError(f"the hinted answer {ht.answer!r} occurs {text.count(ht.answer)} times in the hint text")
    return s + text.index(ht.answer)


def _twin_answer(unhinted: dict[str, Any] | None, tokenizer: Any, profile: Any) -> str | None:
    if unhinted is None:
        return None
    from thinklens.steps._common import trace_answer
    from thinklens.traces import Trace

    try:
        return trace_answer(Trace.from_record(unhinted, tokenizer, profile))
    except ThinklensError:
        return None


def hint_pair(ht: HintedTrace, unhinted: dict[str, Any] | None, tokenizer: Any, profile: Any) -> HintPair:
    """The aligned counterfactual pair of one hinted trace (see the module doc); a one-line error says why not."""
    from thinklens.steps._common import normalize_answer, same_answer

    k = _answer_in_hint(ht)
    prompt = ht.record["prompt"]
    v, char = value_position(ht.trace)
    x_toks = value_tokens(ht.trace, tokenizer, v, char, ht.answer)
    candidates = [_twin_answer(unhinted, tokenizer, profile), ht.record.get("gold_answer")]
    reasons = []
    for alt in dict.fromkeys(str(c).strip() for c in candidates if c is not None and str(c).strip()):
        if same_answer(alt, ht.answer) or normalize_answer(alt) == normalize_answer(ht.answer):
            reasons.append(f"{alt!r} is the hinted answer")
            continue
        cf = {**ht.record, "prompt": prompt[:k] + alt + prompt[k + len(ht.answer):]}
        shift = len(alt) - len(ht.answer)
        cf["hint"] = {**ht.record["hint"], "answer": alt, "chars": [ht.chars[0], ht.chars[1] + shift]}
        try:
            cft = hinted_trace(cf, tokenizer, profile).trace
        except ThinklensError as err:
            reasons.append(f"{alt!r}: {err}")
            continue
        a, b = ht.hint.start, ht.hint.end
        same_outside = cft.ids[:a] == ht.trace.ids[:a] and cft.ids[b:] == ht.trace.ids[b:]
        if len(cft) != len(ht.trace) or not same_outside:
            reasons.append(f"{alt!r} does not align token for token with {ht.answer!r} in the hint")
            continue
        alt_toks = value_tokens(cft, tokenizer, v, char + shift, alt)
        j = next((i for i, (p, q) in enumerate(zip(x_toks, alt_toks)) if p != q), None)
        if j is None:
            reasons.append(f"{alt!r} and {ht.answer!r} tokenize alike at the answer")
            continue
        return HintPair(ht.id, alt, list(cft.ids[:v]) + x_toks[:j], list(ht.trace.ids[:v]) + x_toks[:j],
                        alt_toks[j], x_toks[j], (a, b))
    raise ThinklensError("no counterfactual hint: " + ("; ".join(reasons) if reasons else
                                                       "neither the unhinted twin nor the record gives another answer"))


@torch.no_grad()
def patch_hint_pair(model: Any, profile: Any, pair: HintPair, layers: Sequence[int],
                    positions: Sequence[int] | None = None, engine: str = "fast") -> tuple[np.ndarray, float, float]:
    """``(nld [len(layers)], LD clean, LD corrupted)`` of patching ``resid_pre`` of each layer at ``positions``
    (default: the hint span) from the counterfactual into the hinted run."""
    from thinklens.patching.engine import PairTensors, run_patches
    from thinklens.patching.metrics import LogitDiff, normalize
    from thinklens.patching.targets import Site

    pos = list(range(*pair.hint)) if positions is None else [int(p) for p in positions]
    ones = torch.ones(len(pair.clean_ids), dtype=torch.long)
    pt = PairTensors(torch.as_tensor(pair.clean_ids), torch.as_tensor(pair.corrupted_ids), ones, ones.clone())
    items = [[(Site(SITE, int(layer)), p) for p in pos] for layer in layers]
    out = run_patches(model, profile, pt, items, LogitDiff(pair.clean_token, pair.corrupted_token), engine=engine)
    return normalize(out.patched, out.clean, out.corrupted), out.clean, out.corrupted


def hint_patching(model: Any, tokenizer: Any, profile: Any, hinted_records: Any, unhinted_records: Any, *,
                  layers: Sequence[int] | None = None, engine: str = "fast") -> HintPatching:
    """Per hinted record and layer, the NLD of patching the counterfactual hint (module doc) into the hinted run at
    the hint span. Twins are matched by ``hint.twin``; ``layers`` defaults to every layer.

    >>> import thinklens as tl
    >>> from thinklens.faithfulness.mechanism_common import toy_hinted_record
    >>> model, tok, profile = tl.load_model("tiny-r1")
    >>> hp = hint_patching(model, tok, profile, [toy_hinted_record()], [])  # no twin: the gold answer is the alt
    >>> hp.ids, hp.alt, hp.nld.shape, round(float(hp.nld[0, 0]), 2)  # [n, n_layers]; layer 0: 1 by construction
    (['p0::sycophancy'], ['45'], (1, 4), 1.0)
    """
    from thinklens.modules import attention_shape

    n_layers = attention_shape(model)[0]
    layers = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    if not layers or any(not 0 <= x < n_layers for x in layers):
        raise ThinklensError(f"layers must be a non-empty list within the model's {n_layers} layers, got {layers}")
    twins: dict[str, dict[str, Any]] = {}
    for i, rec in enumerate(unhinted_records):
        if isinstance(rec, dict):
            twins.setdefault(record_name(rec, i), rec)
    usable, skipped = prepare(hinted_records, tokenizer, profile)
    ids, alts, rows, clean, corr = [], [], [], [], []
    for ht in usable:
        try:
            pair = hint_pair(ht, twins.get(ht.twin), tokenizer, profile)
            nld, c, k = patch_hint_pair(model, profile, pair, layers, engine=engine)
        except ThinklensError as err:
            skipped.append({"id": ht.id, "reason": f"record {ht.id!r}: {err}"})
            continue
        ids.append(ht.id)
        alts.append(pair.alt)
        rows.append(nld)
        clean.append(c)
        corr.append(k)
    nld = np.stack(rows) if rows else np.zeros((0, len(layers)))
    return HintPatching(ids, layers, nld.astype(np.float64), alts, np.array(clean, dtype=np.float64),
                        np.array(corr, dtype=np.float64), skipped)


__all__ = ["HintPair", "HintPatching", "hint_pair", "hint_patching", "patch_hint_pair"]

"""Token-level view: which reasoning tokens do the answer's Reasoning-Focus Heads read, and are they the
self-reflection cues?

For a head (l, h), the attention a reasoning token k *receives from the answer* is the mean over answer queries of
``A_lh[q, k]`` (the per-key version of ``a2r``; summing it over reasoning tokens gives ``a2r``). ``thinklens attention``
stores these vectors, ``[n_layers, n_heads, n_reasoning]`` float16, for the first ``--token-view N`` traces in
``DIR/tokens/`` (recomputing them needs the model; storing all heads keeps the choice of heads free afterwards).

The paper observes that RFHs land on self-reflection cues ("Wait", "Alternatively", ...). We test it: cue tokens are
found through character offsets — a word-boundary regex over the reasoning's text, every token overlapping a match is
a cue token (robust to BPE merging " Wait" or splitting "double-check") — and we compare the mean attention on cue
tokens with other reasoning tokens by a permutation test. Values are normalized per trace by the trace's mean
reasoning-token attention (1 = uniform), so long and short traces are comparable.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thinklens.errors import ThinklensError
from thinklens.traces import Trace

DEFAULT_CUES = ("Wait", "Alternatively", "Hmm", "double-check", "verify", "But", "check")


def cue_token_mask(trace: Trace, cues: tuple[str, ...] | list[str] = DEFAULT_CUES, ignore_case: bool = False
                   ) -> np.ndarray:
    """[n_reasoning] bool: reasoning tokens that overlap a cue word (word-boundary match in the reasoning text)."""
    r = trace.reasoning
    mask = np.zeros(len(r), dtype=bool)
    if not cues or len(r) == 0:
        return mask
    a, b = trace.char_span(r)
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(c) for c in cues) + r")(?!\w)",
                         re.IGNORECASE if ignore_case else 0)
    starts = np.array([o[0] for o in trace.offsets[r.start : r.end]])
    ends = np.array([o[1] for o in trace.offsets[r.start : r.end]])
    for m in pattern.finditer(trace.text, a, b):
        mask |= (starts < m.end()) & (ends > m.start())
    return mask


@dataclass
class TokenAttention:
    """Attention received by each reasoning token of one trace from the answer, for chosen heads."""

    id: str
    heads: list[tuple[int, int]]
    tokens: list[str]  # [n_reasoning] token strings
    values: np.ndarray  # [n_heads_chosen, n_reasoning]
    cue_mask: np.ndarray  # [n_reasoning] bool
    answer_text: str = ""

    @property
    def mean(self) -> np.ndarray:
        """[n_reasoning] mean over the chosen heads."""
        return self.values.mean(axis=0)

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / "token_attention.npz", values=self.values, cue_mask=self.cue_mask)
        meta = {"id": self.id, "heads": [list(h) for h in self.heads], "tokens": self.tokens,
                "answer_text": self.answer_text}
        (d / "token_attention.json").write_text(json.dumps(meta, ensure_ascii=False) + "\n")
        return d

    @classmethod
    def load(cls, directory: str | Path) -> TokenAttention:
        d = Path(directory)
        try:
            z = np.load(d / "token_attention.npz")
            meta = json.loads((d / "token_attention.json").read_text())
        except (OSError, ValueError) as err:
            raise ThinklensError(f"{d}: no saved token attention ({err})") from err
        return cls(meta["id"], [tuple(h) for h in meta["heads"]], meta["tokens"], z["values"], z["cue_mask"],
                   meta.get("answer_text", ""))


def load_token_profiles(scores_dir: str | Path) -> list[tuple[str, Trace, np.ndarray]]:
    """``(id, trace, attn [n_layers, n_heads, n_reasoning])`` for every trace kept by ``--token-view``."""
    d = Path(scores_dir) / "tokens"
    out = []
    for npz in sorted(d.glob("*.npz")) if d.exists() else []:
        side = npz.with_suffix(".json")
        try:
            meta = json.loads(side.read_text())
            out.append((str(meta["id"]), Trace.from_dict(meta["trace"]), np.load(npz)["attn"].astype(np.float32)))
        except (OSError, ValueError, KeyError) as err:
            raise ThinklensError(f"{npz}: unreadable token profile ({err})") from err
    if not out:
        raise ThinklensError(f"{d}: no token profiles; rerun `thinklens attention` with --token-view N (N > 0)")
    return out


def token_attention(trace_id: str, trace: Trace, attn: np.ndarray, heads: list[tuple[int, int]],
                    cues: tuple[str, ...] | list[str] = DEFAULT_CUES, ignore_case: bool = False) -> TokenAttention:
    """Select ``heads`` from a stored profile ``attn [n_layers, n_heads, n_reasoning]``."""
    L, H, n = attn.shape
    for layer, head in heads:
        if not (0 <= layer < L and 0 <= head < H):
            raise ThinklensError(f"head ({layer}, {head}) out of range for {L} layers x {H} heads")
    values = np.stack([attn[layer, head] for layer, head in heads])  # [n_chosen, n_reasoning]
    toks = trace.token_strings()[trace.reasoning.start : trace.reasoning.end]
    return TokenAttention(trace_id, [tuple(h) for h in heads], toks, values, cue_token_mask(trace, cues, ignore_case),
                          trace.span_text(trace.answer))


@dataclass
class CueStats:
    cues: list[str]
    heads: list[tuple[int, int]]
    n_traces: int
    n_cue_tokens: int
    n_other_tokens: int
    mean_cue: float  # normalized attention (1 = the trace's mean reasoning token)
    mean_other: float
    diff: float
    p_value: float  # permutation test, two-sided
    per_trace: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["heads"] = [list(h) for h in self.heads]
        return {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in d.items()}


def cue_statistics(items: list[TokenAttention], cues: tuple[str, ...] | list[str] = DEFAULT_CUES, *,
                   n_permutations: int = 10_000, seed: int = 0) -> CueStats:
    """Mean normalized attention on cue tokens vs other reasoning tokens, pooled over traces, permutation p-value."""
    from thinklens.stats import permutation_test

    if not items:
        raise ThinklensError("no traces for cue statistics")
    cue_vals, other_vals, per = [], [], []
    for it in items:
        v = it.mean.astype(np.float64)
        v = v / v.mean() if v.size and v.mean() > 0 else v
        cue_vals.append(v[it.cue_mask])
        other_vals.append(v[~it.cue_mask])
        per.append({"id": it.id, "n_cue_tokens": int(it.cue_mask.sum()),
                    "mean_cue": float(v[it.cue_mask].mean()) if it.cue_mask.any() else None,
                    "mean_other": float(v[~it.cue_mask].mean()) if (~it.cue_mask).any() else None})
    x, y = np.concatenate(cue_vals), np.concatenate(other_vals)
    diff, p = permutation_test(x, y, n_permutations=n_permutations, seed=seed)
    return CueStats(list(cues), items[0].heads, len(items), len(x), len(y), float(x.mean()) if len(x) else float("nan"),
                    float(y.mean()) if len(y) else float("nan"), float(diff), float(p), per)


def analyze_tokens(scores_dir: str | Path, heads: list[tuple[int, int]] | None = None, *, top_k: int = 5,
                   cues: tuple[str, ...] | list[str] = DEFAULT_CUES, ignore_case: bool = False,
                   n_permutations: int = 10_000, seed: int = 0) -> tuple[list[TokenAttention], CueStats]:
    """Token attention for ``heads`` (default: the top-k RFHs by ``a2r`` of ``scores_dir/head_scores.npz``) on every
    stored trace, plus the cue statistics; saves ``cue_stats.json`` in ``scores_dir``."""
    from thinklens.attention.heads import rank_heads
    from thinklens.attention.segments import HeadScores

    if heads is None:
        heads = rank_heads(HeadScores.load(scores_dir), "a2r", top_k, n_bootstrap=0).pairs()
    profiles = load_token_profiles(scores_dir)
    items = [token_attention(rid, tr, attn, heads, cues, ignore_case) for rid, tr, attn in profiles]
    stats = cue_statistics(items, cues, n_permutations=n_permutations, seed=seed)
    (Path(scores_dir) / "cue_stats.json").write_text(json.dumps(stats.to_json(), indent=1) + "\n")
    return items, stats

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
    """Mean normalized attention on cue tokens vs other reasoning tokens, pooled over traces, permutation p-value.

    On three tiny-r1 traces that each correct a slip with "Wait", for three of its RFHs:

    >>> import thinklens as tl
    >>> from thinklens.attention.tokens import token_attention
    >>> from thinklens.toy import full_text, generate_problems
    >>> model, tok, profile = tl.load_model("tiny-r1", device="cpu")
    >>> items = []
    >>> for p in generate_problems(3, seed=0, slip_rate=1.0):
    ...     trace = tl.Trace.from_text(full_text(p), tok, profile)
    ...     attn = tl.trace_head_scores(model, trace, answer_profile=True).answer_profile  # [layers, heads, T]
    ...     r = trace.reasoning
    ...     items.append(token_attention(p.id, trace, attn[:, :, r.start : r.end], [(1, 2), (1, 7), (2, 6)]))
    >>> st = tl.cue_statistics(items, n_permutations=1000)
    >>> st.n_traces, st.n_cue_tokens, st.n_other_tokens  # "Wait" is 4 tokens in tiny-r1's character vocabulary
    (3, 12, 195)
    >>> round(st.mean_cue, 3), round(st.mean_other, 3), round(st.p_value, 4)  # 1 = the trace's mean token
    (0.392, 1.037, 0.0509)
    """
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
    stored trace, plus the cue statistics; saves ``cue_stats.json`` in ``scores_dir``.

    >>> import json, os, tempfile, thinklens as tl
    >>> from thinklens.toy import full_text, generate_problems
    >>> model, tok, profile = tl.load_model("tiny-r1", device="cpu")
    >>> d = tempfile.mkdtemp()
    >>> with open(os.path.join(d, "traces.jsonl"), "w") as f:
    ...     for p in generate_problems(4, seed=0, slip_rate=0.5):
    ...         _ = f.write(json.dumps({"id": p.id, "text": full_text(p)}) + "\\n")
    >>> _ = tl.score_trace_file(model, tok, os.path.join(d, "traces.jsonl"), d, profile=profile, progress=False)
    >>> items, st = tl.analyze_tokens(d, top_k=3, n_permutations=1000)
    >>> st.heads, [int(it.cue_mask.sum()) for it in items], round(st.diff, 3), round(st.p_value, 4)
    ([(2, 6), (1, 2), (1, 1)], [4, 4, 0, 4], -0.667, 0.0759)
    >>> json.load(open(os.path.join(d, "cue_stats.json")))["n_cue_tokens"]
    12
    """
    from thinklens.attention.heads import rank_heads
    from thinklens.attention.segments import HeadScores

    if heads is None:
        heads = rank_heads(HeadScores.load(scores_dir), "a2r", top_k, n_bootstrap=0).pairs()
    profiles = load_token_profiles(scores_dir)
    items = [token_attention(rid, tr, attn, heads, cues, ignore_case) for rid, tr, attn in profiles]
    stats = cue_statistics(items, cues, n_permutations=n_permutations, seed=seed)
    (Path(scores_dir) / "cue_stats.json").write_text(json.dumps(stats.to_json(), indent=1) + "\n")
    return items, stats


# -- cue tokens vs matched controls ------------------------------------------------------------------------------
# Cue words cluster at sentence starts, and answer attention is not flat along a trace: a cue token compared with
# the trace mean confounds "is a cue" with "sits where attention is high". The matched controls compare each cue
# occurrence with non-cue tokens *near it* (``window``: within ±w tokens) or *at the same place in a sentence*
# (``sentence_start``: same token offset from the sentence start, in other sentences of the trace).
CUE_CONTROLS = ("window", "sentence_start")
DEFAULT_CUE_WINDOW = 5  # ±w reasoning tokens around a cue occurrence; a few words of a BPE trace


def _token_offsets(tokens: list[str]) -> tuple[str, np.ndarray, np.ndarray]:
    """Text and char (start, end) of each token, from non-overlapping token strings."""
    ends = np.cumsum([len(t) for t in tokens])
    return "".join(tokens), ends - np.array([len(t) for t in tokens]), ends


def cue_occurrences(tokens: list[str], cues: tuple[str, ...] | list[str] = DEFAULT_CUES, ignore_case: bool = False
                    ) -> list[tuple[str, int, int]]:
    """``(cue word, tok_start, tok_end)`` of every cue occurrence in a token sequence (same matching as
    :func:`cue_token_mask`: word boundaries, every token overlapping the match).

    >>> cue_occurrences(list("12\\nWait, 12"))  # one token per character
    [('Wait', 3, 7)]
    """
    if not cues or not tokens:
        return []
    text, starts, ends = _token_offsets(tokens)
    canon = {c.lower() if ignore_case else c: c for c in cues}
    pattern = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(c) for c in cues) + r")(?!\w)",
                         re.IGNORECASE if ignore_case else 0)
    out = []
    for m in pattern.finditer(text):
        idx = np.flatnonzero((starts < m.end()) & (ends > m.start()))
        if len(idx):
            word = canon.get(m.group().lower() if ignore_case else m.group(), m.group())
            out.append((word, int(idx[0]), int(idx[-1]) + 1))
    return out


def sentence_offsets(tokens: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(sentence index [n], token offset within its sentence [n])``. A sentence starts at the first token, at
    the first token with text after a newline, and after ``.``/``!``/``?`` followed by whitespace (a token that
    merges a newline with the next word, as BPE may, starts the new sentence itself). Whitespace-only tokens before
    a sentence's first word share its offset 0.

    >>> sentence_offsets(["So", " x", ".", " Wait", ",", " no"])
    (array([0, 0, 0, 1, 1, 1]), array([0, 1, 2, 0, 1, 2]))
    """
    sent, off = np.zeros(len(tokens), dtype=np.int64), np.zeros(len(tokens), dtype=np.int64)
    s, k, boundary = 0, 0, False
    for i, t in enumerate(tokens):
        tail = t.rsplit("\n", 1)[1] if "\n" in t else None
        if i > 0 and ((boundary and t.strip()) or (tail is not None and tail.strip())):
            s, k, boundary = s + 1, 0, False
        sent[i], off[i] = s, k
        if t.strip() or k:
            k += 1
        stripped = t.rstrip(" \t")
        if tail is not None and not tail.strip():
            boundary = True
        elif stripped.endswith((".", "!", "?")) and (t != stripped or (i + 1 < len(tokens)
                                                                       and tokens[i + 1][:1].isspace())):
            boundary = True
    return sent, off


@dataclass
class CueControlRow:
    """One (control, head, cue word) comparison; values are normalized attention (1 = the trace's mean token)."""

    head: str  # "L{l}H{h}" or "mean" (mean over the chosen heads)
    cue: str  # a cue word or "all"
    control: str
    n_traces: int
    n_occurrences: int
    mean_cue: float  # normalized attention (1 = the trace's mean reasoning token), mean over traces
    mean_control: float
    diff: float  # mean over traces of (cue - matched control)
    ci95: tuple[float, float]  # bootstrap over traces
    diff_vs_trace_mean: float  # the old contrast on the same occurrences: cue - all other reasoning tokens
    ci95_vs_trace_mean: tuple[float, float]


@dataclass
class CueControl:
    """Cue-vs-control rows (per control, head and cue word) and per-trace differences; ``DIR/cue_control.*``.

    Example::

        CueControl.load("runs/t/attention").rows[0].diff
    """

    rows: list[CueControlRow]
    heads: list[tuple[int, int]]
    cues: list[str]
    window: int
    n_bootstrap: int
    per_trace: dict[str, np.ndarray] = field(default_factory=dict)  # row key -> [n_traces] diffs (NaN: none)

    def to_json(self) -> dict[str, Any]:
        def clean(v: Any) -> Any:
            if isinstance(v, float):
                return None if not np.isfinite(v) else round(v, 6)
            if isinstance(v, (tuple, list)):
                return [clean(x) for x in v]
            return v

        return {"heads": [list(h) for h in self.heads], "cues": self.cues, "window": self.window,
                "n_bootstrap": self.n_bootstrap, "rows": [{k: clean(v) for k, v in asdict(r).items()}
                                                          for r in self.rows]}

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / "cue_control.npz", **self.per_trace)
        (d / "cue_control.json").write_text(json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n")
        return d / "cue_control.json"

    @classmethod
    def load(cls, directory: str | Path) -> CueControl:
        d = Path(directory)
        try:
            meta = json.loads((d / "cue_control.json").read_text())
            z = np.load(d / "cue_control.npz")
        except (OSError, ValueError) as err:
            raise ThinklensError(f"{d}: no saved cue control ({err})") from err
        nan = float("nan")
        rows = [CueControlRow(**{k: (tuple(nan if x is None else x for x in v) if k.startswith("ci95") else
                                     (nan if v is None else v)) for k, v in r.items()}) for r in meta["rows"]]
        return cls(rows, [tuple(h) for h in meta["heads"]], meta["cues"], meta["window"], meta["n_bootstrap"],
                   {k: z[k] for k in z.files})


def _control_mask(kind: str, s: int, e: int, cue: np.ndarray, sent: np.ndarray, off: np.ndarray, window: int
                  ) -> np.ndarray:
    if kind == "window":
        m = np.zeros(len(cue), dtype=bool)
        m[max(0, s - window): min(len(cue), e + window)] = True
    else:
        m = np.isin(off, off[s:e]) & (sent != sent[s])
    return m & ~cue


def cue_window_control(items: list[TokenAttention], cues: tuple[str, ...] | list[str] = DEFAULT_CUES, *,
                       window: int = DEFAULT_CUE_WINDOW, controls: tuple[str, ...] = CUE_CONTROLS,
                       ignore_case: bool = False, n_bootstrap: int = 2000, seed: int = 0) -> CueControl:
    """Cue occurrences vs matched non-cue tokens, per chosen head (and their mean) and per cue word (and all), with
    bootstrap 95% CIs over traces; each row also carries the old contrast (cue vs all other reasoning tokens) on the
    same traces.

    A planted sentence-start effect (3x attention on every sentence's first word) is no cue effect:

    >>> toks = ["7+5=12", "\\n", "Wait", ",", " 7+5=13", "\\n", "Final", " answer", " is", " 13", "."]
    >>> v = np.array([3.0, 1, 3, 1, 1, 1, 3, 1, 1, 1, 1])
    >>> items = [TokenAttention("t", [(1, 2)], toks, v[None], np.zeros(len(toks), bool))] * 3
    >>> cc = cue_window_control(items, ("Wait",), window=2, n_bootstrap=100)
    >>> [(r.control, round(r.diff, 2), round(r.diff_vs_trace_mean, 2)) for r in cc.rows if r.head == "mean"
    ...  and r.cue == "all"]  # vs trace mean and vs a ±2 window: "Wait" looks special; vs sentence starts: not
    [('window', 0.97, 1.04), ('sentence_start', 0.0, 1.04)]
    """
    from thinklens.stats import bootstrap_ci

    for c in controls:
        if c not in CUE_CONTROLS:
            raise ThinklensError(f"unknown cue control {c!r}; choose from {CUE_CONTROLS}")
    if not items:
        raise ThinklensError("no traces for the cue control")
    heads = list(items[0].heads)
    names = [f"L{h[0]}H{h[1]}" for h in heads] + ["mean"]
    words = list(dict.fromkeys(cues)) + ["all"]
    # acc[(control, head, word)] -> per trace: (cue vals, control vals, trace-mean contrast vals, n occurrences)
    acc: dict[tuple[str, str, str], list[tuple[float, float, float, int]]] = {}
    for it in items:
        occ = cue_occurrences(it.tokens, cues, ignore_case)
        cue_mask = np.zeros(len(it.tokens), dtype=bool)
        for _, s, e in occ:
            cue_mask[s:e] = True
        sent, off = sentence_offsets(it.tokens)
        vals = [it.values[i] for i in range(len(heads))] + [it.mean]
        for name, v in zip(names, vals):
            v = v.astype(np.float64)
            v = v / v.mean() if v.size and v.mean() > 0 else v
            other = v[~cue_mask].mean() if (~cue_mask).any() else np.nan
            for kind in controls:
                per_word: dict[str, list[tuple[float, float]]] = {}
                for word, s, e in occ:
                    ctrl = _control_mask(kind, s, e, cue_mask, sent, off, window)
                    if ctrl.any():
                        pair = (float(v[s:e].mean()), float(v[ctrl].mean()))
                        per_word.setdefault(word, []).append(pair)
                        per_word.setdefault("all", []).append(pair)
                for word, pairs in per_word.items():
                    a = np.array(pairs)
                    acc.setdefault((kind, name, word), []).append(
                        (a[:, 0].mean(), a[:, 1].mean(), a[:, 0].mean() - other, len(pairs)))
    rows, per_trace = [], {}
    for kind in controls:
        for name in names:
            for word in words:
                got = acc.get((kind, name, word))
                if not got:
                    continue
                a = np.array(got)  # [n_traces_with_occurrences, 4]
                d, old = a[:, 0] - a[:, 1], a[:, 2]
                ci = bootstrap_ci(d, n_resamples=n_bootstrap, seed=seed) if len(d) > 1 else (np.nan, np.nan)
                ci_old = bootstrap_ci(old, n_resamples=n_bootstrap, seed=seed) if len(d) > 1 else (np.nan, np.nan)
                rows.append(CueControlRow(name, word, kind, len(a), int(a[:, 3].sum()), float(a[:, 0].mean()),
                                          float(a[:, 1].mean()), float(d.mean()), tuple(map(float, ci)),
                                          float(old.mean()), tuple(map(float, ci_old))))
                per_trace[f"{kind}|{name}|{word}"] = d
    return CueControl(rows, heads, list(cues), window, n_bootstrap, per_trace)

"""Answer→reasoning attention decomposed by segment, per (layer, head): the paper's Reasoning-Focus-Head scores.

The paper (Zhang et al. 2025, §4) asks where the answer looks. A trace is split into segments
``BOS | prompt | <think> | reasoning | </think> | answer | EOS`` (:class:`thinklens.traces.Trace`). For each head,
take every *answer query* (token of ``trace.answer``: after ``</think>``, excluding a final EOS token, which is not
part of the answer), sum its softmax attention over the keys of one segment, then average over the answer queries::

    a2r[l, h] = mean_{q in answer} sum_{k in reasoning} A_lh[q, k]

and likewise ``a2bos``, ``a2p`` (prompt), ``a2bot`` (``<think>``), ``a2eot`` (``</think>``), ``a2a`` (earlier answer
tokens and itself). Causality makes the six sum to 1 per head. Heads with the largest mean ``a2r`` over traces are
the Reasoning-Focus Heads (RFHs). For the reasoning itself we also report ``r2r`` (reasoning queries →
earlier reasoning keys) and ``r2p`` (reasoning queries → prompt), the baseline that says whether an RFH is special to
the answer or reads the reasoning everywhere.

Everything comes from one forward per trace with :func:`thinklens.attention.capture.capture_attention`: rows of the
answer and reasoning queries, in chunks of O(chunk x T) memory, folded at once into ``[n_layers, n_groups, n_heads,
n_segments]`` sums. Only the last position's logits are computed (``logits_to_keep=1``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thinklens.attention.capture import capture_attention
from thinklens.errors import ThinklensError
from thinklens.traces import SEGMENTS, Span, Trace

ANSWER_SCORES = ("a2bos", "a2p", "a2bot", "a2r", "a2eot", "a2a")
REASONING_SCORES = ("r2r", "r2p")
SCORE_NAMES = ANSWER_SCORES + REASONING_SCORES
# score name -> segment whose keys it sums
_KEY_SEGMENT = {"a2bos": "bos", "a2p": "prompt", "a2bot": "think_open", "a2r": "reasoning", "a2eot": "think_close",
                "a2a": "answer", "r2r": "reasoning", "r2p": "prompt"}


class SegmentReducer:
    """Folds attention rows into per-(query group, key segment) masses and, optionally, a per-key profile.

    ``query_group [T]``: group index of each query position (-1 = not captured). ``key_labels [T]``: segment index
    of each key (:func:`Trace.segment_labels`, -1 → an extra "other" column). ``profile_group``: queries of this
    group also accumulate the attention each key receives (``[n_layers, n_heads, T]``) for the token view."""

    def __init__(self, n_layers: int, n_heads: int, query_group: np.ndarray, key_labels: np.ndarray, n_groups: int,
                 profile_group: int | None = None) -> None:
        self.n_groups = n_groups
        self.query_group = torch.as_tensor(query_group, dtype=torch.long)  # [T]
        n_seg = len(SEGMENTS) + 1
        kl = torch.as_tensor(key_labels, dtype=torch.long).clone()
        kl[kl < 0] = n_seg - 1
        self.onehot = torch.nn.functional.one_hot(kl, n_seg).float()  # [T, n_seg]
        self.sums = torch.zeros(n_layers, n_groups, n_heads, n_seg, dtype=torch.float64)
        self.counts = torch.zeros(n_layers, n_groups, dtype=torch.float64)
        self.profile_group = profile_group
        self.profile = (torch.zeros(n_layers, n_heads, len(key_labels), dtype=torch.float64)
                        if profile_group is not None else None)  # [L, H, T]

    def __call__(self, layer: int, positions: torch.Tensor, probs: torch.Tensor) -> None:
        p = probs[0]  # [H, rows, k] (batch 1)
        k = p.shape[-1]
        mass = torch.matmul(p, self.onehot[:k].to(p.device)).double().cpu()  # [H, rows, n_seg]
        groups = self.query_group[positions.cpu()]  # [rows]
        for g in range(self.n_groups):
            sel = groups == g
            if bool(sel.any()):
                self.sums[layer, g] += mass[:, sel].sum(dim=1)
                self.counts[layer, g] += int(sel.sum())
                if self.profile is not None and g == self.profile_group:
                    self.profile[layer, :, :k] += p[:, sel.to(p.device)].sum(dim=1).double().cpu()

    def means(self) -> np.ndarray:
        """[n_layers, n_groups, n_heads, n_segments+1] mean over the group's queries."""
        return (self.sums / self.counts.clamp(min=1)[:, :, None, None]).numpy()


@dataclass
class TraceScores:
    """Scores of one trace: ``scores[name]`` is ``[n_layers, n_heads]``; ``answer_profile`` (optional) is the mean
    attention each token receives from the answer queries, ``[n_layers, n_heads, T]``."""

    scores: dict[str, np.ndarray]
    token_len: int
    think_start: int
    think_end: int
    answer_profile: np.ndarray | None = None


def _forward(model: Any, ids: list[int] | torch.Tensor) -> None:
    device = next(model.parameters()).device
    x = torch.as_tensor(ids, dtype=torch.long, device=device).reshape(1, -1)
    with torch.no_grad():
        try:
            model(input_ids=x, use_cache=False, logits_to_keep=1)
        except TypeError:  # older / custom models without logits_to_keep
            model(input_ids=x, use_cache=False)


def check_trace(trace: Trace, max_tokens: int | None = None) -> str | None:
    """Why a trace cannot be scored (None if it can): the answer-attention scores need a closed reasoning and a
    non-empty answer."""
    if max_tokens is not None and len(trace) > max_tokens:
        return f"too long: {len(trace)} tokens > --max-tokens {max_tokens}"
    if not trace.finished or trace.answer is None:
        return "unfinished reasoning: no </think>"
    if len(trace.answer) == 0 or not trace.span_text(trace.answer).strip():
        return "empty answer after </think>"
    if len(trace.reasoning) == 0:
        return "empty reasoning"
    return None


def trace_head_scores(model: Any, trace: Trace, *, reasoning_queries: bool = True, answer_profile: bool = False,
                      chunk_elements: int | None = None) -> TraceScores:
    """Segment scores of one trace (one forward pass, batch 1). Raises ThinklensError if the trace has no answer."""
    from thinklens.modules import attention_shape

    reason = check_trace(trace)
    if reason:
        raise ThinklensError(reason)
    n_layers, n_heads, _, _ = attention_shape(model)
    T = len(trace)
    group = np.full(T, -1, dtype=np.int64)
    group[trace.answer.start : trace.answer.end] = 0
    if reasoning_queries:
        group[trace.reasoning.start : trace.reasoning.end] = 1
    red = SegmentReducer(n_layers, n_heads, group, trace.segment_labels(), 2, 0 if answer_profile else None)
    kw = {} if chunk_elements is None else {"chunk_elements": chunk_elements}
    with capture_attention(model, np.flatnonzero(group >= 0), red, **kw):
        _forward(model, trace.ids)
    means = red.means()  # [L, 2, H, n_seg]
    seg = {name: i for i, name in enumerate(SEGMENTS)}
    scores = {}
    for name in SCORE_NAMES:
        g = 0 if name.startswith("a2") else 1
        scores[name] = means[:, g, :, seg[_KEY_SEGMENT[name]]].astype(np.float32)  # [L, H]
        if g == 1 and not reasoning_queries:
            scores[name] = np.full_like(scores[name], np.nan)
    prof = None
    if red.profile is not None:
        prof = (red.profile / red.counts[:, 0].clamp(min=1)[:, None, None]).numpy().astype(np.float32)
    return TraceScores(scores, T, int(trace.think_start if trace.think_start is not None else -1),
                       int(trace.think_end), prof)


def span_scores(model: Any, ids: list[int], query_span: Span, key_span: Span) -> np.ndarray:
    """``[n_layers, n_heads]``: mean over queries in ``query_span`` of the attention mass on ``key_span``.

    Why: targeted checks such as "which heads copy the result: answer digits → the reasoning's final number"."""
    from thinklens.modules import attention_shape

    n_layers, n_heads, _, _ = attention_shape(model)
    labels = np.zeros(len(ids), dtype=np.int8)
    labels[key_span.start : key_span.end] = 1  # segment index 1 plays "key span"
    group = np.full(len(ids), -1, dtype=np.int64)
    group[query_span.start : query_span.end] = 0
    red = SegmentReducer(n_layers, n_heads, group, labels, 1)
    with capture_attention(model, list(query_span), red):
        _forward(model, ids)
    return red.means()[:, 0, :, 1].astype(np.float32)


@dataclass
class HeadScores:
    """Scores of many traces: ``scores[name]`` is ``[n_traces, n_layers, n_heads]`` (names in :data:`SCORE_NAMES`).

    Saved as ``head_scores.npz`` (arrays + ``ids``, ``token_len``, ``think_start``, ``think_end``) with a JSON
    sidecar ``head_scores.json`` (model, settings, skipped traces and reasons)."""

    ids: list[str]
    scores: dict[str, np.ndarray]
    token_len: np.ndarray  # [n_traces]
    think_start: np.ndarray  # [n_traces]
    think_end: np.ndarray  # [n_traces]
    model: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n_traces(self) -> int:
        return len(self.ids)

    @property
    def shape(self) -> tuple[int, int]:
        """(n_layers, n_heads)"""
        a = self.scores["a2r"]
        return int(a.shape[1]), int(a.shape[2])

    def get(self, name: str) -> np.ndarray:
        if name not in self.scores:
            raise ThinklensError(f"unknown score {name!r}; available: {', '.join(sorted(self.scores))}")
        return self.scores[name]

    @classmethod
    def from_traces(cls, ids: list[str], rows: list[TraceScores], **meta: Any) -> HeadScores:
        if not rows:
            raise ThinklensError("no scored traces")
        scores = {n: np.stack([r.scores[n] for r in rows]).astype(np.float32) for n in rows[0].scores}
        return cls(list(ids), scores, np.array([r.token_len for r in rows]), np.array([r.think_start for r in rows]),
                   np.array([r.think_end for r in rows]), **meta)

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / "head_scores.npz", ids=np.array(self.ids, dtype=str), token_len=self.token_len,
                 think_start=self.think_start, think_end=self.think_end, **self.scores)
        meta = {"model": self.model, "settings": self.settings, "skipped": self.skipped,
                "n_traces": self.n_traces, "scores": sorted(self.scores)}
        (d / "head_scores.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
        return d / "head_scores.npz"

    @classmethod
    def load(cls, path: str | Path) -> HeadScores:
        """From ``DIR`` or ``DIR/head_scores.npz`` (the JSON sidecar is optional)."""
        p = Path(path)
        if p.is_dir():
            p = p / "head_scores.npz"
        if not p.exists():
            raise ThinklensError(f"{p}: no such scores file")
        try:
            z = np.load(p, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ThinklensError(f"{p}: not a readable .npz file ({err})") from err
        if "a2r" not in z.files or "ids" not in z.files:
            raise ThinklensError(f"{p}: not a head_scores.npz file (needs arrays 'a2r' and 'ids')")
        scores = {n: z[n] for n in SCORE_NAMES if n in z.files}
        meta: dict[str, Any] = {}
        side = p.with_suffix(".json")
        if side.exists():
            meta = json.loads(side.read_text())
        n = len(z["ids"])
        get = (lambda k: z[k] if k in z.files else np.full(n, -1))  # noqa: E731
        return cls([str(i) for i in z["ids"]], scores, get("token_len"), get("think_start"), get("think_end"),
                   model=meta.get("model", ""), settings=meta.get("settings", {}), skipped=meta.get("skipped", []))


# -- batch run over a trace file (resumable) ----------------------------------------------------------------------
DEFAULT_TOKEN_VIEW = 5  # traces whose per-token answer attention is kept by default
PARTIAL = "scores_partial.jsonl"
SKIPPED = "skipped.jsonl"
TOKENS_DIR = "tokens"


def _safe(rid: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in rid)[:120]


def save_token_profile(directory: Path, rid: str, trace: Trace, profile: np.ndarray) -> Path:
    """Store ``[n_layers, n_heads, n_reasoning]`` float16 answer→reasoning-token attention + the trace (for the
    token view, which is rendered later from these files without the model)."""
    d = Path(directory) / TOKENS_DIR
    d.mkdir(parents=True, exist_ok=True)
    r = trace.reasoning
    np.savez_compressed(d / f"{_safe(rid)}.npz", attn=profile[:, :, r.start : r.end].astype(np.float16))
    (d / f"{_safe(rid)}.json").write_text(json.dumps({"id": rid, "trace": trace.to_dict()}, ensure_ascii=False))
    return d / f"{_safe(rid)}.npz"


def score_trace_file(model: Any, tokenizer: Any, traces: str | Path, output: str | Path, *, profile: Any = None,
                     model_name: str = "", text_field: str | None = None, limit: int | None = None,
                     max_tokens: int | None = None, reasoning_queries: bool = True,
                     token_view: int = DEFAULT_TOKEN_VIEW,
                     progress: bool = True) -> HeadScores:
    """Score every trace of a JSONL file into ``output/head_scores.npz``; resumable.

    Each scored trace is appended to ``output/scores_partial.jsonl`` as soon as it is done, and each unusable one
    (bad JSON, no ``</think>``, empty answer, too long) to ``output/skipped.jsonl`` with its reason, line and id; a
    rerun skips both and consolidates everything into ``head_scores.npz`` at the end. The first ``token_view``
    scored traces also keep their per-reasoning-token answer attention in ``output/tokens/`` (for the token view)."""
    from thinklens.jsonl import JsonlWriter, read_jsonl
    from thinklens.progress import bar
    from thinklens.traces import record_id

    if not Path(traces).is_file():
        raise ThinklensError(f"{traces}: no such trace file")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    partial, skipped_path = out / PARTIAL, out / SKIPPED
    done: dict[str, dict[str, Any]] = {}
    if partial.exists():
        for item in read_jsonl(partial):
            if item.record is not None and "id" in item.record:
                done[str(item.record["id"])] = item.record
    skipped: dict[str, dict[str, Any]] = {}
    if skipped_path.exists():
        for item in read_jsonl(skipped_path):
            if item.record is not None:
                skipped[str(item.record.get("id"))] = item.record
    n_tok = len(list((out / TOKENS_DIR).glob("*.npz"))) if (out / TOKENS_DIR).exists() else 0
    lines = list(read_jsonl(traces))
    if limit is not None:
        lines = lines[:limit]
    seen: dict[str, int] = {}
    with JsonlWriter(partial) as wp, JsonlWriter(skipped_path) as ws:
        for item in bar(lines, desc="attention", unit="trace", disable=not progress):
            if item.error is not None:
                key = f"line:{item.lineno}"
                if key not in skipped:
                    skipped[key] = {"id": key, "line": item.lineno, "reason": f"{item.where}: {item.error}"}
                    ws.write(skipped[key])
                continue
            rid = record_id(item.record, item.lineno)
            if rid in seen:  # the same id twice in one file: keep the first, record the second
                key = f"duplicate:{rid}:{item.lineno}"
                if key not in skipped:
                    skipped[key] = {"id": key, "line": item.lineno,
                                    "reason": f"{item.where} ({rid}): duplicate id (first at line {seen[rid]})"}
                    ws.write(skipped[key])
                continue
            seen[rid] = item.lineno
            if rid in done or rid in skipped:
                continue
            try:
                trace = Trace.from_record(item.record, tokenizer, profile, text_field)
                reason = check_trace(trace, max_tokens)
            except ThinklensError as err:
                reason = str(err)
            if reason:
                skipped[rid] = {"id": rid, "line": item.lineno, "reason": f"{traces}:{item.lineno} ({rid}): {reason}"}
                ws.write(skipped[rid])
                continue
            ts = trace_head_scores(model, trace, reasoning_queries=reasoning_queries,
                                   answer_profile=n_tok < token_view)
            if ts.answer_profile is not None:
                save_token_profile(out, rid, trace, ts.answer_profile)
                n_tok += 1
            row = {"id": rid, "token_len": ts.token_len, "think_start": ts.think_start, "think_end": ts.think_end,
                   "scores": {k: [[None if np.isnan(x) else float(x) for x in r] for r in v]
                              for k, v in ts.scores.items()}}
            wp.write(row)
            done[rid] = row
    if not done:
        raise ThinklensError(f"{traces}: no trace could be scored ({len(skipped)} skipped; see {skipped_path})")
    ids = list(done)
    rows = [TraceScores({k: np.array(v, dtype=np.float32) for k, v in done[i]["scores"].items()},
                        done[i]["token_len"], done[i]["think_start"], done[i]["think_end"]) for i in ids]
    settings = {"text_field": text_field, "max_tokens": max_tokens, "reasoning_queries": reasoning_queries,
                "traces": str(traces), "answer_queries": "answer span after </think>, excluding the final EOS"}
    hs = HeadScores.from_traces(ids, rows, model=model_name, settings=settings, skipped=list(skipped.values()))
    hs.save(out)
    return hs

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

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thinklens.attention.capture import capture_attention
from thinklens.attention.reducers import SegmentReducer
from thinklens.errors import ThinklensError
from thinklens.traces import SEGMENTS, Span, Trace

ANSWER_SCORES = ("a2bos", "a2p", "a2bot", "a2r", "a2eot", "a2a")
REASONING_SCORES = ("r2r", "r2p")
SCORE_NAMES = ANSWER_SCORES + REASONING_SCORES
_MASS_TOL = 1e-3  # float rounding of a sum of probabilities; anything further outside [0, 1] is corrupt data
# score name -> segment whose keys it sums
_KEY_SEGMENT = {"a2bos": "bos", "a2p": "prompt", "a2bot": "think_open", "a2r": "reasoning", "a2eot": "think_close",
                "a2a": "answer", "r2r": "reasoning", "r2p": "prompt"}


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
    from thinklens.modules import input_device

    device = input_device(model)
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
    """Segment scores of one trace (one forward pass, batch 1). Raises ThinklensError if the trace has no answer.

    >>> import thinklens as tl
    >>> from thinklens.attention.segments import ANSWER_SCORES
    >>> from thinklens.toy import full_text, generate_problems
    >>> model, tok, profile = tl.load_model("tiny-r1", device="cpu")
    >>> trace = tl.Trace.from_text(full_text(generate_problems(1, seed=2)[0]), tok, profile)
    >>> ts = tl.trace_head_scores(model, trace)
    >>> ts.scores["a2r"].shape, ts.token_len, ts.think_start, ts.think_end
    ((4, 8), 100, 18, 71)
    >>> float(abs(sum(ts.scores[n] for n in ANSWER_SCORES) - 1).max()) < 1e-5  # each head's answer mass sums to 1
    True
    >>> round(float(ts.scores["a2r"][1, 2]), 3), round(float(ts.scores["r2r"][1, 2]), 3)  # head L1H2
    (0.675, 0.626)
    """
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
        prof = red.profile_means()
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
    sidecar ``head_scores.json`` (model, settings, skipped traces and reasons).

    >>> import tempfile, thinklens as tl
    >>> from thinklens.toy import full_text, generate_problems
    >>> model, tok, profile = tl.load_model("tiny-r1", device="cpu")
    >>> rows = [tl.trace_head_scores(model, tl.Trace.from_text(full_text(p), tok, profile))
    ...         for p in generate_problems(3, seed=2)]
    >>> d = tempfile.mkdtemp()
    >>> _ = tl.HeadScores.from_traces(["a", "b", "c"], rows, model="tiny-r1").save(d)
    >>> hs = tl.HeadScores.load(d)
    >>> hs.ids, hs.shape, hs.get("a2r").shape, hs.token_len.tolist(), hs.model
    (['a', 'b', 'c'], (4, 8), (3, 4, 8), [100, 121, 101], 'tiny-r1')
    """

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
        from thinklens.validate import load_npz, read_json_object

        try:
            z = load_npz(p, {"a2r": (3, "f"), "ids": (1, "Uiu")})
        except ThinklensError as err:
            raise ThinklensError(f"{err} (a head_scores.npz needs arrays 'a2r' [traces, layers, heads] and 'ids')"
                                 ) from None
        for name in ("token_len", "think_start", "think_end"):
            if name in z and (z[name].ndim != 1 or z[name].dtype.kind not in "iuf"):
                raise ThinklensError(f"{p}: array {name!r} must be 1-D numbers, got {z[name].dtype} {z[name].shape}")
        scores = {n: z[n] for n in SCORE_NAMES if n in z}
        for n, a in scores.items():
            if a.dtype.kind != "f":
                raise ThinklensError(f"{p}: score {n!r} must be floats, got {a.dtype}")
        meta: dict[str, Any] = read_json_object(p.with_suffix(".json"), "head scores metadata") or {}
        n = len(z["ids"])
        get = (lambda k: z[k] if k in z else np.full(n, -1))  # noqa: E731
        hs = cls([str(i) for i in z["ids"]], scores, get("token_len"), get("think_start"), get("think_end"),
                 model=meta.get("model", ""), settings=meta.get("settings", {}), skipped=meta.get("skipped", []))
        hs.validate(str(p))
        return hs

    def validate(self, source: str = "head scores") -> None:
        """Raise :class:`ThinklensError` if the arrays do not fit together or hold values no attention mass takes.

        Checked (on :meth:`load`): every score is ``[n_traces, n_layers, n_heads]`` with one row per id and the
        (layers, heads) of ``a2r``; ``token_len`` / ``think_start`` / ``think_end`` have one entry per trace; no
        value is infinite or outside [0, 1] (the scores are attention masses). NaN is allowed: it marks a value that
        was not computed (``r2r``/``r2p`` of traces scored without reasoning queries); :func:`rank_heads
        <thinklens.attention.heads.rank_heads>` excludes such traces or heads and says which."""
        n = len(self.ids)
        ref = self.scores["a2r"].shape if "a2r" in self.scores else None
        for name, arr in self.scores.items():
            if arr.ndim != 3 or arr.shape[0] != n or (ref is not None and arr.shape[1:] != ref[1:]):
                want = f"[{n}, {ref[1]}, {ref[2]}]" if ref is not None and len(ref) == 3 else f"[{n}, layers, heads]"
                raise ThinklensError(f"{source}: score {name!r} has shape {list(arr.shape)}, expected {want} "
                                     f"(one row per id: {n} ids)")
            if not np.issubdtype(arr.dtype, np.floating):
                raise ThinklensError(f"{source}: score {name!r} has dtype {arr.dtype}, expected floats")
            with np.errstate(invalid="ignore"):
                bad = np.isinf(arr) | (arr < -_MASS_TOL) | (arr > 1 + _MASS_TOL)  # NaN compares False
            if bad.any():
                t, layer, head = np.argwhere(bad)[0]
                raise ThinklensError(
                    f"{source}: score {name!r} has {int(bad.sum())} value(s) that are not attention masses in [0, 1] "
                    f"(first: {float(arr[t, layer, head])} for trace {self.ids[t]!r} at head L{layer}H{head})")
        for name in ("token_len", "think_start", "think_end"):
            if np.shape(getattr(self, name)) != (n,):
                raise ThinklensError(f"{source}: {name!r} has shape {list(np.shape(getattr(self, name)))}, "
                                     f"expected [{n}] (one entry per id)")


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
    """Score every trace of a JSONL file into ``output/head_scores.npz``; resumable, and data parallel under
    torchrun (:mod:`thinklens.distributed`: line ``i`` of the file is rank ``i % WORLD_SIZE``'s).

    Each scored trace is appended to ``output/scores_partial.jsonl`` as soon as it is done, and each unusable one
    (bad JSON, no ``</think>``, empty answer, too long, a repeated id) to ``output/skipped.jsonl`` with its reason,
    line and id; a rerun skips both and consolidates everything into ``head_scores.npz`` at the end (traces in file
    order). The first ``token_view`` scorable traces of the file also keep their per-reasoning-token answer
    attention in ``output/tokens/`` (for the token view). The file is streamed (one record in memory at a time) and
    a record longer than ``max_tokens`` allows in characters is refused before it is tokenized.

    >>> import json, os, tempfile, thinklens as tl
    >>> from thinklens.toy import full_text, generate_problems
    >>> model, tok, profile = tl.load_model("tiny-r1", device="cpu")
    >>> d = tempfile.mkdtemp()
    >>> with open(os.path.join(d, "traces.jsonl"), "w") as f:
    ...     for p in generate_problems(4, seed=2):
    ...         _ = f.write(json.dumps({"id": p.id, "text": full_text(p)}) + "\\n")
    ...     _ = f.write(json.dumps({"id": "open", "text": "<think>\\n7*4=28\\n"}) + "\\n")
    >>> hs = tl.score_trace_file(model, tok, os.path.join(d, "traces.jsonl"), os.path.join(d, "out"),
    ...                          profile=profile, progress=False)
    >>> hs.n_traces, hs.shape, [s["reason"].split(": ", 1)[1] for s in hs.skipped]
    (4, (4, 8), ['unfinished reasoning: no </think>'])
    >>> sorted(os.listdir(os.path.join(d, "out")))
    ['head_scores.json', 'head_scores.npz', 'scores_partial.jsonl', 'skipped.jsonl', 'tokens']
    """
    from thinklens import distributed
    from thinklens.jsonl import JsonlWriter, read_jsonl
    from thinklens.progress import bar
    from thinklens.traces import char_bound, record_id

    if not Path(traces).is_file():
        raise ThinklensError(f"{traces}: no such trace file")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    partial, skipped_path = out / PARTIAL, out / SKIPPED
    max_chars = char_bound(max_tokens)  # refuse huge records before tokenizing them

    def lines() -> Any:  # streamed, a fresh pass each call
        return itertools.islice(read_jsonl(traces), limit)

    first: dict[str, int] = {}  # id -> line of its first occurrence (a later line with that id is a duplicate)
    n_lines = 0
    for item in lines():
        n_lines += 1
        if item.record is not None:
            first.setdefault(record_id(item.record, item.lineno), item.lineno)

    def order(row: dict[str, Any]) -> int | None:  # file order: the order in which one process writes the rows
        return row.get("line") if "reason" in row else first.get(str(row.get("id")))

    def load(item: Any) -> tuple[Trace | None, str | None]:
        try:
            trace = Trace.from_record(item.record, tokenizer, profile, text_field, max_chars=max_chars)
            return trace, check_trace(trace, max_tokens)
        except ThinklensError as err:
            return None, str(err)

    world = distributed.world()
    with distributed.sharded_files(partial, skipped_path, order=order) as (my_partial, my_skipped):
        done = {str(r["id"]) for r in _records(partial) if "id" in r}
        skipped = {str(r.get("id")) for r in _records(skipped_path)}
        view = _token_view_ids(lines(), first, load, token_view, done, skipped)
        mine = (item for n, item in enumerate(lines()) if world.owns(n))
        total = len(range(world.rank, n_lines, world.size))
        with JsonlWriter(my_partial) as wp, JsonlWriter(my_skipped) as ws:
            for item in bar(mine, desc="attention", unit="trace", total=total, disable=not progress):
                if item.record is None:
                    key = f"line:{item.lineno}"
                    reason = f"{item.where}: {item.error}"
                else:
                    rid = record_id(item.record, item.lineno)
                    key, reason = rid, None
                    if first[rid] != item.lineno:  # the same id twice in one file: keep the first, record the second
                        key = f"duplicate:{rid}:{item.lineno}"
                        reason = f"{item.where} ({rid}): duplicate id (first at line {first[rid]})"
                    elif rid in done or rid in skipped:
                        continue
                    else:
                        trace, why = load(item)
                        if why:
                            reason = f"{traces}:{item.lineno} ({rid}): {why}"
                if reason is not None:
                    if key not in skipped:
                        skipped.add(key)
                        ws.write({"id": key, "line": item.lineno, "reason": reason})
                    continue
                wp.write(_score_row(model, trace, rid, reasoning_queries, rid in view, out))
    settings = {"text_field": text_field, "max_tokens": max_tokens, "reasoning_queries": reasoning_queries,
                "traces": str(traces), "answer_queries": "answer span after </think>, excluding the final EOS"}
    hs = distributed.on_main(_consolidate, out, traces, model_name, settings, share=False)
    return hs if hs is not None else HeadScores.load(out)


def _records(path: Path) -> list[dict[str, Any]]:
    from thinklens.jsonl import read_jsonl

    return [item.record for item in read_jsonl(path) if item.record is not None] if path.exists() else []


def _token_view_ids(lines: Any, first: dict[str, int], load: Any, k: int, done: set[str],
                    skipped: set[str]) -> set[str]:
    """Ids of the first ``k`` scorable traces of the file: those that keep a token profile (the same on every rank,
    whichever rank scores them)."""
    from thinklens.traces import record_id

    view: set[str] = set()
    for item in lines:
        if len(view) >= k:
            break
        if item.record is None:
            continue
        rid = record_id(item.record, item.lineno)
        if first[rid] != item.lineno or rid in skipped:
            continue
        if rid not in done and load(item)[1]:
            continue
        view.add(rid)
    return view


def _score_row(model: Any, trace: Trace, rid: str, reasoning_queries: bool, keep_profile: bool,
               out: Path) -> dict[str, Any]:
    """One trace's ``scores_partial.jsonl`` row (and its token profile file when ``keep_profile``)."""
    ts = trace_head_scores(model, trace, reasoning_queries=reasoning_queries, answer_profile=keep_profile)
    if ts.answer_profile is not None:
        save_token_profile(out, rid, trace, ts.answer_profile)
    return {"id": rid, "token_len": ts.token_len, "think_start": ts.think_start, "think_end": ts.think_end,
            "scores": {k: [[None if np.isnan(x) else float(x) for x in r] for r in v] for k, v in ts.scores.items()}}


def _consolidate(out: Path, traces: str | Path, model_name: str, settings: dict[str, Any]) -> HeadScores:
    """``head_scores.npz`` from every row of ``scores_partial.jsonl`` (file order; a repeated id keeps its first
    place) and the skipped traces of ``skipped.jsonl``."""
    done: dict[str, dict[str, Any]] = {}
    for row in _records(out / PARTIAL):
        if "id" in row:
            done[str(row["id"])] = row
    skipped = {str(r.get("id")): r for r in _records(out / SKIPPED)}
    if not done:
        raise ThinklensError(f"{traces}: no trace could be scored ({len(skipped)} skipped; see {out / SKIPPED})")
    ids = list(done)
    rows = [TraceScores({k: np.array(v, dtype=np.float32) for k, v in done[i]["scores"].items()},
                        done[i]["token_len"], done[i]["think_start"], done[i]["think_end"]) for i in ids]
    hs = HeadScores.from_traces(ids, rows, model=model_name, settings=settings, skipped=list(skipped.values()))
    hs.save(out)
    return hs

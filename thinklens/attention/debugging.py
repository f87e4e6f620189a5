"""Debugging failed reasoning with the Reasoning-Focus Heads (the paper's case study, made systematic).

The paper shows, for one wrong answer, that the RFHs read the reasoning step where the wrong value was written. Here
every graded trace gets:

* the attention each reasoning *step* receives from the answer through the top RFHs (per token: mean over answer
  queries, mean over the chosen heads; summed over the step's tokens), and the step the RFHs read most;
* where the model's final value (``extracted_answer``) first appears in the reasoning, and every step holding it;
* whether the gold value appears anywhere in the reasoning (a wrong answer with the gold value in the reasoning
  is a *reading* failure; without it, a *reasoning* failure).

The summary compares how often the RFHs' top step holds the answered value for incorrect traces (the wrong value)
and for correct traces (the correct value): if RFHs read where the answer comes from, both shares are high.

Steps default to the reasoning's non-empty lines (:func:`line_steps`); any ``segment(trace) -> [(tok_start,
tok_end), ...]`` (absolute token positions) can be passed instead, e.g. a sentence or step segmenter.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thinklens.attention.capture import KeyProfileReducer, capture_attention
from thinklens.errors import ThinklensError
from thinklens.traces import Trace

Segmenter = Callable[[Trace], list[tuple[int, int]]]
DEBUG_JSON, DEBUG_NPZ = "debug.json", "debug.npz"


def line_steps(trace: Trace) -> list[tuple[int, int]]:
    """The reasoning's non-empty lines as absolute token spans ``[(start, end), ...]``.

    >>> from thinklens.models import load_tokenizer
    >>> from thinklens.toy import full_text, generate_problems
    >>> from thinklens.traces import Span
    >>> trace = Trace.from_text(full_text(generate_problems(1, seed=2)[0]), load_tokenizer("tiny-r1"))
    >>> [trace.span_text(Span(a, b)) for a, b in line_steps(trace)]
    ['7*4=28', '28-12=23', 'Wait, 28-12=16', 'Final answer is 16.']
    """
    a, b = trace.char_span(trace.reasoning)
    spans = []
    for m in re.finditer(r"[^\n]+", trace.text[a:b]):
        if m.group().strip():
            s = trace.tokens_in_chars(a + m.start(), a + m.end())
            spans.append((max(s.start, trace.reasoning.start), min(s.end, trace.reasoning.end)))
    return spans


def _clean_value(value: str) -> str:
    v = str(value).strip().strip("$").strip()
    return re.sub(r"^\\text\{(.*)\}$", r"\1", v)


def value_spans(text: str, value: str | None) -> list[tuple[int, int]]:
    """Character spans of ``value`` in ``text``: numbers match as whole numbers (``1`` not inside ``12``), other
    values literally.

    >>> value_spans("12+1=13", "1")  # not inside 12 or 13
    [(3, 4)]
    >>> value_spans("x = 1/2", "$1/2$")  # not a plain number: matched literally
    [(4, 7)]
    """
    if value is None or not _clean_value(value):
        return []
    v = _clean_value(value)
    if re.fullmatch(r"-?\d+(?:\.\d+)?", v):
        pat = re.compile(r"(?<![\d.])" + re.escape(v) + r"(?![\d])(?!\.\d)")
    else:
        pat = re.compile(re.escape(v))
    return [(m.start(), m.end()) for m in pat.finditer(text)]


@dataclass
class TraceDebug:
    """One trace: per-step RFH attention and where the answered and gold values sit in the reasoning.

    Example::

        DebugResult.load("runs/t/debug").traces[0].top_step
    """

    id: str
    is_correct: bool
    gold: str
    extracted: str | None
    steps: list[tuple[int, int]]  # absolute token spans
    step_text: list[str]
    step_attention: np.ndarray  # [n_steps] answer→step attention through the RFHs
    extracted_steps: list[int]  # steps holding the answered value
    gold_steps: list[int]  # steps holding the gold value

    @property
    def top_step(self) -> int | None:
        return int(np.argmax(self.step_attention)) if len(self.step_attention) else None

    @property
    def top_step_by_density(self) -> int | None:
        """The step with the most RFH attention per token (long steps collect more attention in sum)."""
        n = np.array([max(b - a, 1) for a, b in self.steps])
        return int(np.argmax(self.step_attention / n)) if len(n) else None

    @property
    def first_extracted_step(self) -> int | None:
        """Where the answered (for incorrect traces: wrong) value first appears in the reasoning."""
        return self.extracted_steps[0] if self.extracted_steps else None

    @property
    def gold_in_reasoning(self) -> bool:
        return bool(self.gold_steps)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("step_attention")
        d["steps"] = [list(s) for s in self.steps]
        d["step_attention"] = [round(float(x), 6) for x in self.step_attention]
        d.update(top_step=self.top_step, top_step_by_density=self.top_step_by_density,
                 first_extracted_step=self.first_extracted_step,
                 gold_in_reasoning=self.gold_in_reasoning,
                 top_step_has_extracted=self.top_step in self.extracted_steps if self.top_step is not None else False,
                 top_step_has_gold=self.top_step in self.gold_steps if self.top_step is not None else False)
        return d


@dataclass
class DebugResult:
    """Debugging of every graded trace plus the summary; saved as ``DIR/debug.{json,npz}``.

    Example::

        DebugResult.load("runs/t/debug").summary()["incorrect_top_step_has_wrong_value"]
    """

    traces: list[TraceDebug]
    rfh: list[tuple[int, int]]
    model: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Shares over incorrect and correct traces (None where a group is empty)."""
        rows = [t.to_json() for t in self.traces]

        def share(group: list[dict[str, Any]], key: str) -> float | None:
            return float(np.mean([bool(r[key]) for r in group])) if group else None

        bad = [r for r in rows if not r["is_correct"]]
        good = [r for r in rows if r["is_correct"]]
        return {"n_traces": len(rows), "n_incorrect": len(bad), "n_correct": len(good),
                "rfh": [list(h) for h in self.rfh],
                "incorrect_top_step_has_wrong_value": share(bad, "top_step_has_extracted"),
                "correct_top_step_has_correct_value": share(good, "top_step_has_extracted"),
                "incorrect_wrong_value_in_reasoning": share(bad, "first_extracted_step"),
                "incorrect_gold_in_reasoning": share(bad, "gold_in_reasoning"),
                "incorrect_top_step_is_first_wrong": (float(np.mean([r["top_step"] == r["first_extracted_step"]
                                                                     for r in bad])) if bad else None),
                "n_skipped": len(self.skipped)}

    def save(self, directory: str | Path) -> Path:
        """``DIR/debug.json`` (summary + every trace) and ``DIR/debug.npz`` (step attention, concatenated, with
        per-trace offsets)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        att = [t.step_attention for t in self.traces]
        offsets = np.cumsum([0] + [len(a) for a in att])
        np.savez(d / DEBUG_NPZ, step_attention=np.concatenate(att) if att else np.zeros(0), offsets=offsets)
        meta = {"summary": self.summary(), "rfh": [list(h) for h in self.rfh], "model": self.model,
                "settings": self.settings, "skipped": self.skipped, "traces": [t.to_json() for t in self.traces]}
        (d / DEBUG_JSON).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
        return d / DEBUG_JSON

    @classmethod
    def load(cls, directory: str | Path) -> DebugResult:
        d = Path(directory)
        try:
            meta = json.loads((d / DEBUG_JSON).read_text())
            z = np.load(d / DEBUG_NPZ)
        except (OSError, ValueError) as err:
            raise ThinklensError(f"{d}: no saved debugging result ({err})") from err
        off = z["offsets"]
        traces = [TraceDebug(t["id"], t["is_correct"], t["gold"], t["extracted"], [tuple(s) for s in t["steps"]],
                             t["step_text"], z["step_attention"][off[i]:off[i + 1]], t["extracted_steps"],
                             t["gold_steps"]) for i, t in enumerate(meta["traces"])]
        return cls(traces, [tuple(h) for h in meta["rfh"]], meta.get("model", ""), meta.get("settings", {}),
                   meta.get("skipped", []))


def answer_token_attention(model: Any, trace: Trace, heads: list[tuple[int, int]]) -> np.ndarray:
    """``[T]`` attention each token receives from the answer queries (EOS excluded), mean over ``heads``.

    Example::

        answer_token_attention(model, trace, [(1, 2)])[trace.reasoning.start:trace.reasoning.end].sum()
    """
    from thinklens.modules import attention_shape

    if trace.answer is None or len(trace.answer) == 0:
        raise ThinklensError("trace has no answer")
    n_layers, n_heads, _, _ = attention_shape(model)
    red = KeyProfileReducer(n_layers, n_heads, len(trace))
    device = next(model.parameters()).device
    with torch.no_grad(), capture_attention(model, list(trace.answer), red, layers=sorted({h[0] for h in heads})):
        model(input_ids=torch.tensor([trace.ids], device=device), use_cache=False, logits_to_keep=1)
    prof = red.mean()  # [L, H, T]
    return np.mean([prof[layer, head] for layer, head in heads], axis=0)  # [T]


def debug_trace(model: Any, trace: Trace, heads: list[tuple[int, int]], *, rid: str, is_correct: bool, gold: str,
                extracted: str | None, segment: Segmenter = line_steps) -> TraceDebug:
    """Per-step RFH attention and value positions of one graded trace.

    Example::

        debug_trace(model, trace, [(1, 2)], rid="t0", is_correct=False, gold="12", extracted="13").top_step
    """
    steps = segment(trace)
    att = answer_token_attention(model, trace, heads)
    texts = [trace.text[trace.offsets[a][0]:trace.offsets[b - 1][1]] if b > a else "" for a, b in steps]
    return TraceDebug(rid, bool(is_correct), str(gold), extracted, [(int(a), int(b)) for a, b in steps], texts,
                      np.array([att[a:b].sum() for a, b in steps], dtype=np.float32),
                      [i for i, t in enumerate(texts) if value_spans(t, extracted)],
                      [i for i, t in enumerate(texts) if value_spans(t, gold)])


def debug_graded_file(model: Any, tokenizer: Any, profile: Any, graded: str | Path, heads: list[tuple[int, int]], *,
                      segment: Segmenter = line_steps, limit: int | None = None, text_field: str | None = None,
                      model_name: str = "", progress: bool = True) -> DebugResult:
    """Debug every gradable record of a graded JSONL file (``is_correct``, ``extracted_answer``, ``gold_answer``).
    Bad records are skipped with their reason. Under torchrun line ``i`` is rank ``i % WORLD_SIZE``'s and every rank
    returns the merged result (one process's). A constructed failure on tiny-r1: the final line states 99.

    >>> import json
    >>> from thinklens.models import load_model
    >>> from thinklens.toy import full_text, generate_problems
    >>> model, tok, profile = load_model("tiny-r1", device="cpu", dtype="fp32")
    >>> p = generate_problems(1, seed=2)[0]
    >>> text = full_text(p).replace(f"is {p.answer}.", "is 99.").replace(f"{{{p.answer}}}", "{99}")
    >>> with open("debug_graded.jsonl", "w") as f:
    ...     _ = f.write(json.dumps({"id": "x", "text": text, "gold_answer": p.answer, "extracted_answer": "99",
    ...                             "is_correct": False}) + "\\n")
    >>> t = debug_graded_file(model, tok, profile, "debug_graded.jsonl", [(1, 2), (2, 6), (1, 7)],
    ...                       progress=False).traces[0]
    >>> t.step_text[t.top_step], t.first_extracted_step, t.gold_in_reasoning
    ('Final answer is 99.', 3, True)
    """
    from thinklens import distributed
    from thinklens.jsonl import read_jsonl
    from thinklens.progress import bar
    from thinklens.traces import record_id

    if not Path(graded).is_file():
        raise ThinklensError(f"{graded}: no such graded file")
    world = distributed.world()  # under torchrun line i of the graded file is rank i % WORLD_SIZE's
    lines = list(read_jsonl(graded))
    rows: list[tuple[int, str, Any]] = []  # (line index, "trace" | "skipped", what)
    n_ok = 0
    for n, it in enumerate(bar(lines, desc="debug", unit="trace", disable=not progress)):
        if not world.owns(n):
            continue
        if limit is not None and n_ok >= limit:  # the first `limit` of all ranks are among each rank's first `limit`
            break
        if it.record is None:
            rows.append((n, "skipped", {"line": it.lineno, "reason": it.error}))
            continue
        rec, rid = it.record, record_id(it.record, it.lineno)
        if rec.get("is_correct") is None or rec.get("gold_answer") is None:
            rows.append((n, "skipped", {"id": rid, "line": it.lineno, "reason": rec.get("error") or "not graded"}))
            continue
        try:
            trace = Trace.from_record(rec, tokenizer, profile, text_field)
            if trace.answer is None or len(trace.answer) == 0 or len(trace.reasoning) == 0:
                raise ThinklensError("no answer or no reasoning")
            rows.append((n, "trace", debug_trace(model, trace, heads, rid=str(rid), is_correct=rec["is_correct"],
                                                 gold=rec["gold_answer"], extracted=rec.get("extracted_answer"),
                                                 segment=segment)))
            n_ok += 1
        except ThinklensError as err:
            rows.append((n, "skipped", {"id": rid, "line": it.lineno, "reason": str(err)}))
    out, skipped = [], []
    for _, kind, what in sorted((r for part in distributed.gather(rows) for r in part), key=lambda r: r[0]):
        if limit is not None and len(out) >= limit:  # file order, as one process stops
            break
        (out if kind == "trace" else skipped).append(what)
    settings = {"graded": str(graded), "segment": getattr(segment, "__name__", str(segment)),
                "step_attention": "answer queries (EOS excluded) → step tokens, mean over RFHs, summed per step"}
    return DebugResult(out, [tuple(h) for h in heads], model_name, settings, skipped)

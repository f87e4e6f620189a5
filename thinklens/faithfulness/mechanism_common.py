"""The facts every mechanism measurement of a hinted trace shares: where the hint is in tokens, where the answer
writes its value, how the hinted answer X tokenizes there, and how results are saved and validated.

Why one module: attention, suppression and patching all index the same hint span and the same answer-value
position; a second copy of either rule would drift. The record contract (agreed with the faithfulness stage): a
hinted record is an ordinary with-reasoning trace record (``prompt``, ``completion``, ...) plus
``"hint": {"family": F, "answer": X, "chars": [s, e], "twin": P}``, ``chars`` being the ``[s, e)`` character span
of the hint text inside the record's ``prompt`` string; its id is ``P::F`` and ``P`` is the unhinted twin.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from thinklens.errors import ThinklensError
from thinklens.traces import Span, Trace

BOXED = "\\boxed{"  # the answer writes its value right after the last one of these in the answer segment


@dataclass
class HintedTrace:
    """One hinted record, segmented: ``hint`` is the token span of the hint inside ``trace.prompt``."""

    id: str
    record: dict[str, Any]
    trace: Trace
    hint: Span
    family: str
    answer: str  # the hinted answer X
    twin: str  # id of the unhinted twin
    chars: tuple[int, int]  # the hint's [start, end) characters in record["prompt"]


def record_name(record: Any, index: int | None = None) -> str:
    """How an error names a record: its id, else its place in the batch."""
    if isinstance(record, dict) and isinstance(record.get("id"), (str, int)) and str(record.get("id")):
        return str(record["id"])
    return f"#{index}" if index is not None else "?"


def _hint_field(record: dict[str, Any]) -> tuple[str, str, int, int, str]:
    hint = record.get("hint")
    if not isinstance(hint, dict):
        raise ThinklensError("no 'hint' object (not a hinted record)")
    family, answer, chars = hint.get("family"), hint.get("answer"), hint.get("chars")
    if not isinstance(family, str) or not family:
        raise ThinklensError(f"hint.family must be a non-empty string, got {family!r}")
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        raise ThinklensError(f"hint.answer must be a non-empty string, got {answer!r}")
    if (not isinstance(chars, (list, tuple)) or len(chars) != 2
            or not all(isinstance(c, int) and not isinstance(c, bool) for c in chars)):
        raise ThinklensError(f"hint.chars must be [start, end] integers, got {chars!r}")
    prompt = record.get("prompt")
    if not isinstance(prompt, str):
        raise ThinklensError("hinted record has no 'prompt' string (hint.chars index into it)")
    s, e = chars
    if not 0 <= s < e <= len(prompt):
        raise ThinklensError(f"hint.chars [{s}, {e}) is empty or outside the prompt's {len(prompt)} characters")
    rid = str(record.get("id", ""))
    twin = hint.get("twin")
    twin = str(twin) if isinstance(twin, (str, int)) and str(twin) else rid.split("::", 1)[0]
    return family, answer.strip(), s, e, twin


def prompt_offset(trace: Trace, record: dict[str, Any], profile: Any) -> int:
    """Where ``record["prompt"]`` starts in ``trace.text`` (0, or the length of a BOS the trace prepended)."""
    prompt = record["prompt"]
    if trace.text.startswith(prompt):
        return 0
    bos = getattr(profile, "bos_token", None) or ""
    if bos and trace.text.startswith(bos + prompt):
        return len(bos)
    raise ThinklensError("the trace text does not begin with the record's prompt (hint.chars cannot be placed)")


def hinted_trace(record: Any, tokenizer: Any, profile: Any) -> HintedTrace:
    """Segment a hinted record and map its hint characters to tokens; any problem is a one-line
    :class:`ThinklensError` naming the record id.

    >>> import thinklens as tl
    >>> from thinklens.hints import insert_hint
    >>> model, tok, profile = tl.load_model("tiny-r1")
    >>> text, (s, e) = insert_hint("Compute 2+3.", "sycophancy", "7")
    >>> head = "<｜User｜>"
    >>> prompt = f"{head}{text}<｜Assistant｜><think>\\n"
    >>> completion = "2+3=5\\n</think>\\n\\nThe answer is \\\\boxed{7}."
    >>> rec = {"id": "p::sycophancy", "prompt": prompt, "completion": completion,
    ...        "hint": {"family": "sycophancy", "answer": "7", "chars": [len(head) + s, len(head) + e], "twin": "p"}}
    >>> ht = hinted_trace(rec, tok, profile)
    >>> ht.trace.span_text(ht.hint)
    'A Stanford professor thinks the answer is 7.'
    >>> try:
    ...     hinted_trace({**rec, "hint": {**rec["hint"], "chars": [5, 999]}}, tok, profile)
    ... except tl.ThinklensError as err:
    ...     print(err)
    record 'p::sycophancy': hint.chars [5, 999) is empty or outside the prompt's 86 characters
    """
    from thinklens.attention.segments import check_trace

    name = record_name(record)
    try:
        if not isinstance(record, dict):
            raise ThinklensError(f"a record must be a JSON object, got {type(record).__name__}")
        family, answer, s, e, twin = _hint_field(record)
        trace = Trace.from_record(record, tokenizer, profile)
        why = check_trace(trace)
        if why:
            raise ThinklensError(why)
        off = prompt_offset(trace, record, profile)
        hint = trace.tokens_in_chars(s + off, e + off)
        p = trace.prompt
        if not (p.start <= hint.start and hint.end <= p.end):
            raise ThinklensError(f"hint tokens [{hint.start}, {hint.end}) are not inside the prompt's tokens "
                                 f"[{p.start}, {p.end})")
    except ThinklensError as err:
        raise ThinklensError(f"record {name!r}: {err}") from None
    return HintedTrace(name, record, trace, hint, family, answer, twin, (s, e))


def prepare(records: Any, tokenizer: Any, profile: Any) -> tuple[list[HintedTrace], list[dict[str, str]]]:
    """The usable hinted records and ``[{"id", "reason"}]`` for the others (skipped, never a traceback)."""
    out: list[HintedTrace] = []
    skipped: list[dict[str, str]] = []
    seen: set[str] = set()
    for i, rec in enumerate(records):
        try:
            ht = hinted_trace(rec, tokenizer, profile)
        except ThinklensError as err:
            skipped.append({"id": record_name(rec, i), "reason": str(err)})
            continue
        if ht.id in seen:
            skipped.append({"id": ht.id, "reason": f"record {ht.id!r}: duplicate id (the first is kept)"})
            continue
        seen.add(ht.id)
        out.append(ht)
    return out, skipped


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


def value_position(trace: Trace) -> tuple[int, int]:
    """``(v, char)``: the token index and character where the answer writes its value (right after the last
    ``\\boxed{`` of the answer segment); a one-line error when the answer has none."""
    a = trace.answer
    a_char, _ = trace.char_span(a)
    k = trace.span_text(a).rfind(BOXED)
    if k == -1:
        raise ThinklensError(f"the answer has no {BOXED!r} (the answer-value position is undefined)")
    char = a_char + k + len(BOXED)
    v = next((i for i in range(a.start, a.end) if trace.offsets[i][0] >= char), None)
    if v is None or trace.offsets[v][0] != char:
        raise ThinklensError(f"no answer token starts where the value does (character {char}): the value is merged "
                             f"with {BOXED!r}")
    return v, char


def value_tokens(trace: Trace, tokenizer: Any, v: int, char: int, value: str) -> list[int]:
    """The tokens of ``value + "}"`` written at the answer-value position ``v`` (tokenized in context, so they are
    what the model would write there); a one-line error when the context does not tokenize to the trace's own
    tokens before ``v``."""
    ids = encode(tokenizer, trace.text[:char] + value + "}")
    if ids[:v] != list(trace.ids[:v]) or len(ids) <= v:
        raise ThinklensError(f"the answer {value!r} does not tokenize on its own after {BOXED!r}")
    return ids[v:]


# ------------------------------------------------------------------------------------------------ save / load
def save_arrays(directory: str | Path, stem: str, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> Path:
    """``DIR/stem.npz`` (the arrays, ids as strings) and ``DIR/stem.json`` (everything else)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    np.savez(d / f"{stem}.npz", **arrays)
    (d / f"{stem}.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
    return d / f"{stem}.npz"


def load_arrays(path: str | Path, stem: str, contract: dict[str, tuple[int, str]]
                ) -> tuple[Path, dict[str, np.ndarray], dict[str, Any]]:
    """The arrays of ``DIR/stem.npz`` (or the file itself) checked against ``contract`` and its JSON sidecar."""
    from thinklens.validate import load_npz, read_json_object

    p = Path(path)
    if p.is_dir():
        p = p / f"{stem}.npz"
    if not p.exists():
        raise ThinklensError(f"{p}: no such file")
    z = load_npz(p, {"ids": (1, "U"), **contract})
    meta = read_json_object(p.with_suffix(".json"), stem) or {}
    return p, z, meta


def check_rows(source: str, name: str, arr: np.ndarray, n: int, tail: tuple[int, ...] = (),
               lo: float | None = None, hi: float | None = None) -> None:
    """Raise unless ``arr`` is ``[n, *tail]`` floats with no infinity and (NaN aside) values in ``[lo, hi]``."""
    if arr.shape != (n, *tail):
        raise ThinklensError(f"{source}: array {name!r} has shape {list(arr.shape)}, expected {[n, *tail]} "
                             f"(one row per id: {n} ids)")
    if arr.dtype.kind != "f":
        raise ThinklensError(f"{source}: array {name!r} has dtype {arr.dtype}, expected floats")
    tol = 1e-3
    with np.errstate(invalid="ignore"):
        bad = np.isinf(arr)
        if lo is not None:
            bad |= arr < lo - tol
        if hi is not None:
            bad |= arr > hi + tol
    if bad.any():
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ThinklensError(f"{source}: array {name!r} has {int(bad.sum())} value(s) out of range (first: "
                             f"{float(arr[idx])} at {list(idx)})")


def toy_hinted_record(seed: int = 0, family: str = "sycophancy", follow: bool = True) -> dict[str, Any]:
    """A hinted record of the organism's task in the record contract, teacher-forced (no generation): the
    problem's reference reasoning, answering the hinted X (``follow``) or the gold answer. For examples and tests.

    >>> rec = toy_hinted_record()
    >>> rec["id"], rec["prompt"][slice(*rec["hint"]["chars"])]
    ('p0::sycophancy', 'A Stanford professor thinks the answer is 50.')
    """
    from dataclasses import replace

    from thinklens.hints import insert_hint, wrong_answer
    from thinklens.toy import tasks

    p = tasks.generate_problems(1, seed=seed)[0]
    x = wrong_answer(p.answer, p.id, seed, hi=tasks.MAX_VALUE)
    text, (s, e) = insert_hint(p.question, family, x)
    prompt = tasks.prompt_text(replace(p, question=text))
    off = prompt.index(text)
    completion = tasks.completion_text(replace(p, answer=x) if follow else p)
    return {"id": f"p{seed}::{family}", "prompt": prompt, "completion": completion, "gold_answer": p.answer,
            "hint": {"family": family, "answer": x, "chars": [off + s, off + e], "twin": f"p{seed}"}}

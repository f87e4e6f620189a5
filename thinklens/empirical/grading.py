"""Grading a model's answer: extract it from the ANSWER segment, then judge it against the gold answer twice.

Why two judges. The paper (Zhang et al., EMNLP 2025) graded MATH-500 with a string normalizer in the style of
Hendrycks et al.'s MATH ``is_equiv`` (``strip_string``). That grader has false negatives (``\\frac{6}{4}`` vs
``\\frac32``, answers with units, ``x=3`` vs ``3``), so ``is_correct`` uses math-verify, which compares the parsed
expressions symbolically, and ``is_correct_strict`` keeps the MATH normalizer for comparability with the paper.

Why only the answer segment. A reasoning trace is full of tentative ``\\boxed{}`` values; what the model *answers*
is what follows the ``</think>`` that ends its reasoning. Extraction therefore looks only after that delimiter
(character search on the completion, the same first-close rule as :class:`thinklens.traces.Trace`), and falls back
in this documented order, recorded in ``extraction_method``:

1. ``boxed``: the content of the last ``\\boxed{...}`` / ``\\fbox{...}`` (balanced braces; ``\\boxed 5`` too);
2. ``final_answer``: the text after the last "final answer is" / "answer is" / "answer:" (up to the end of line);
3. ``last_number``: the last number in the answer segment;
4. ``none``: nothing found (graded incorrect).

A record whose reasoning never closed has no answer: it keeps an ``error`` and is not graded.
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

from thinklens.errors import ThinklensError
from thinklens.options import opt

BOX_COMMANDS = ("\\boxed", "\\fbox")


# ------------------------------------------------------------------------------------------------- extraction
def answer_segment(text: str, think_close: str = "</think>", think_open: str | None = "<think>") -> str | None:
    """Text after the ``think_close`` that ends the reasoning (the first after ``think_open`` if present), or None
    when the reasoning never closed."""
    start = 0
    if think_open:
        k = text.find(think_open)
        if k != -1:
            start = k + len(think_open)
    k = text.find(think_close, start)
    if k == -1:
        return None
    return text[k + len(think_close):]


def _braced(text: str, i: int) -> tuple[str, int] | None:
    """The balanced ``{...}`` group starting at ``text[i] == "{"``: (content, index after it)."""
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j], j + 1
    return None


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` or ``\\fbox{...}`` (also ``\\boxed 5``), or None."""
    best: tuple[int, str] | None = None
    for cmd in BOX_COMMANDS:
        for m in re.finditer(re.escape(cmd) + r"(?![A-Za-z])", text):
            j = m.end()
            while j < len(text) and text[j] == " ":
                j += 1
            if j < len(text) and text[j] == "{":
                got = _braced(text, j)
                if got is None:
                    continue  # unbalanced (cut-off) box
                content = got[0]
            elif j > m.end():  # "\boxed 5": up to the next space or "$"
                content = re.split(r"[\s$]", text[j:], maxsplit=1)[0]
            else:
                continue
            if best is None or m.start() > best[0]:
                best = (m.start(), content.strip())
    return best[1] if best else None


_FINAL_RE = re.compile(r"(?:final answer is|answer is|final answer:|answer:)\s*(.+)", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?")


def extract_answer(answer_text: str) -> tuple[str | None, str]:
    """(extracted answer, method) from an answer segment; methods: boxed, final_answer, last_number, none.

    >>> import thinklens as tl
    >>> tl.extract_answer("So the result is 12. The answer is \\\\boxed{\\\\frac{3}{4}}.")
    ('\\\\frac{3}{4}', 'boxed')
    """
    boxed = last_boxed(answer_text)
    if boxed is not None:
        return boxed, "boxed"
    finals = _FINAL_RE.findall(answer_text)
    if finals:
        value = finals[-1].strip().strip("$").strip()
        value = re.sub(r"[.\s]+$", "", value)
        if value:
            return value, "final_answer"
    numbers = _NUMBER_RE.findall(answer_text)
    if numbers:
        return numbers[-1].replace(",", ""), "last_number"
    return None, "none"


# ------------------------------------------------------------------------- Hendrycks MATH normalizer (strict)
# Reproduced from Hendrycks et al., "Measuring Mathematical Problem Solving With the MATH Dataset"
# (math_equivalence.py); the paper's labels come from a grader of this family.
def _fix_fracs(string: str) -> str:
    substrs = string.split("\\frac")
    new_str = substrs[0]
    for substr in substrs[1:]:
        new_str += "\\frac"
        if substr and substr[0] == "{":
            new_str += substr
            continue
        if len(substr) < 2:
            return string
        a, b = substr[0], substr[1]
        if b != "{":
            new_str += "{" + a + "}{" + b + "}" + substr[2:]
        else:
            new_str += "{" + a + "}" + b + substr[2:]
    return new_str


def _fix_a_slash_b(string: str) -> str:
    parts = string.split("/")
    if len(parts) != 2:
        return string
    try:
        a, b = int(parts[0]), int(parts[1])
    except ValueError:
        return string
    if string != f"{a}/{b}":
        return string
    return "\\frac{" + str(a) + "}{" + str(b) + "}"


def _remove_right_units(string: str) -> str:
    if "\\text{ " in string:
        return string.split("\\text{ ")[0]
    return string


def _fix_sqrt(string: str) -> str:
    if "\\sqrt" not in string:
        return string
    splits = string.split("\\sqrt")
    new_string = splits[0]
    for split in splits[1:]:
        if split and split[0] != "{":
            new_string += "\\sqrt{" + split[0] + "}" + split[1:]
        else:
            new_string += "\\sqrt" + split
    return new_string


def strip_string(string: str) -> str:
    """MATH's ``_strip_string``: a canonical string form of an answer."""
    string = string.replace("\n", "").replace("\\!", "").replace("\\\\", "\\")
    string = string.replace("tfrac", "frac").replace("dfrac", "frac")
    string = string.replace("\\left", "").replace("\\right", "")
    string = string.replace("^{\\circ}", "").replace("^\\circ", "")
    string = string.replace("\\$", "")
    string = _remove_right_units(string)
    string = string.replace("\\%", "").replace("%", "")
    string = string.replace(" .", " 0.").replace("{.", "{0.")
    if not string:
        return string
    if string[0] == ".":
        string = "0" + string
    if len(string.split("=")) == 2 and len(string.split("=")[0]) <= 2:
        string = string.split("=")[1]
    string = _fix_sqrt(string)
    string = string.replace(" ", "")
    string = _fix_fracs(string)
    if string == "0.5":
        string = "\\frac{1}{2}"
    return _fix_a_slash_b(string)


def is_equiv_strict(pred: str | None, gold: str | None) -> bool:
    """MATH's ``is_equiv``: equal after :func:`strip_string` (raw equality if normalizing fails)."""
    if pred is None or gold is None:
        return pred is None and gold is None
    try:
        return strip_string(pred) == strip_string(gold)
    except Exception:  # noqa: BLE001 - the reference implementation falls back the same way
        return pred == gold


# ----------------------------------------------------------------------------------------------- math-verify
def is_equiv_math_verify(pred: str | None, gold: str, timeout: int = 5) -> bool:
    """math-verify's symbolic equivalence of ``\\boxed{pred}`` and ``\\boxed{gold}``.

    math-verify's timeouts use SIGALRM, which only works in the main thread; elsewhere they are disabled. Any
    exception or timeout counts as not equivalent (never crashes a batch)."""
    if pred is None:
        return False
    from math_verify import parse, verify

    t = timeout if threading.current_thread() is threading.main_thread() else None
    try:
        gold_parsed = parse("\\boxed{" + gold + "}", parsing_timeout=t)
        pred_parsed = parse("\\boxed{" + pred + "}", parsing_timeout=t)
        if not gold_parsed or not pred_parsed:
            return False
        return bool(verify(gold_parsed, pred_parsed, timeout_seconds=t))
    except BaseException as err:  # noqa: BLE001 - math-verify raises TimeoutError / sympy errors of any kind
        if isinstance(err, KeyboardInterrupt):
            raise
        return False


# -------------------------------------------------------------------------------------------------- records
@dataclass
class GradeSettings:
    """Grading: which fields hold the response and the gold answer, and the delimiters around the reasoning.

    >>> GradeSettings(response_field="response").gold_field
    'gold_answer'
    """

    response_field: str | None = opt(None, "field with the model output (default: completion, else text, else "
                                     "response); a full text including the prompt is fine: only text after the "
                                     "think-close counts", metavar="FIELD")
    gold_field: str = opt("gold_answer", "field with the reference answer", metavar="FIELD")
    think_open: str = opt("<think>", "the delimiter that opens the reasoning", metavar="TEXT")
    think_close: str = opt("</think>", "the delimiter that closes the reasoning", metavar="TEXT")
    timeout: int = opt(5, "math-verify timeout per comparison, in seconds", metavar="S")

    def __post_init__(self) -> None:
        if not self.gold_field:
            raise ThinklensError("gold_field must be a non-empty field name")
        if self.timeout < 1:
            raise ThinklensError(f"timeout must be >= 1 second, got {self.timeout}")


def _response_text(record: dict[str, Any], settings: GradeSettings) -> str:
    fields = [settings.response_field] if settings.response_field else ["completion", "text", "response"]
    for f in fields:
        if f in record:
            value = record[f]
            if not isinstance(value, str):
                raise ThinklensError(f"field {f!r} is {type(value).__name__}, not a string")
            return value
    raise ThinklensError(f"record has no response field (looked for {', '.join(repr(f) for f in fields)})")


def grade_record(record: dict[str, Any], settings: GradeSettings | None = None) -> dict[str, Any]:
    """The record plus ``extracted_answer``, ``extraction_method``, ``is_correct``, ``is_correct_strict``; or plus
    ``error`` (with ``is_correct`` None) when it cannot be graded (missing fields, unfinished reasoning).

    >>> import thinklens as tl
    >>> r = tl.grade_record({"id": "1", "gold_answer": "0.75",
    ...                      "completion": "3/4 = 0.75</think>The answer is \\\\boxed{\\\\frac{3}{4}}."})
    >>> r["extracted_answer"], r["is_correct"], r["is_correct_strict"]
    ('\\\\frac{3}{4}', True, False)
    """
    settings = settings or GradeSettings()
    out = dict(record)
    for key in ("extracted_answer", "extraction_method", "is_correct", "is_correct_strict", "error"):
        out.pop(key, None)
    try:
        text = _response_text(record, settings)
        if settings.gold_field not in record or record[settings.gold_field] is None:
            raise ThinklensError(f"record has no gold answer field {settings.gold_field!r}")
        gold = str(record[settings.gold_field])
        # in a completion the <think> may sit in the prompt: only require the open when the text has one
        segment = answer_segment(text, settings.think_close, settings.think_open)
        if segment is None:
            raise ThinklensError(f"unfinished reasoning: no {settings.think_close!r}, so no answer to grade")
    except ThinklensError as err:
        out.update(extracted_answer=None, extraction_method=None, is_correct=None, is_correct_strict=None,
                   error=str(err))
        return out
    pred, method = extract_answer(segment)
    out.update(
        extracted_answer=pred,
        extraction_method=method,
        is_correct=is_equiv_math_verify(pred, gold, settings.timeout),
        is_correct_strict=is_equiv_strict(pred, gold) if pred is not None else False,
    )
    return out


# ----------------------------------------------------------------------------------------------------- files
def record_key(record: dict[str, Any], lineno: int) -> str:
    """What identifies a graded record for resuming: (model, reasoning, problem id). Problem ids alone repeat
    across the runs of one file (e.g. the reference traces: 4 records per MATH-500 ``unique_id``)."""
    from thinklens.traces import record_id

    return f"{record.get('model')}\x1f{record.get('reasoning')}\x1f{record_id(record, lineno)}"


@dataclass
class GradeSummary:
    output: str
    n_read: int = 0
    n_skipped_done: int = 0
    n_graded: int = 0
    n_correct: int = 0
    n_correct_strict: int = 0
    n_ungradable: int = 0  # written with an ``error`` (unfinished reasoning, missing fields)
    bad_lines: list[str] | None = None  # unreadable lines, file:line: reason (not written)
    resume: dict[str, Any] | None = None  # what resuming skipped or repaired (jsonl.ResumeReport)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


def grade_file(path: str, output: str, settings: GradeSettings | None = None, progress: bool = True) -> GradeSummary:
    """Grade every record of ``path`` into ``output`` (appending; records already graded there are skipped)::

        >>> import json, tempfile, thinklens as tl
        >>> d = tempfile.mkdtemp()
        >>> rec = {"id": "1", "model": "m", "reasoning": "with", "gold_answer": "12",
        ...        "completion": "7+5=12\\n</think>\\n\\nThe answer is \\\\boxed{12}."}
        >>> _ = open(f"{d}/traces.jsonl", "w").write(json.dumps(rec) + "\\n")
        >>> s = tl.grade_file(f"{d}/traces.jsonl", f"{d}/graded.jsonl", progress=False)
        >>> s.n_graded, s.n_correct
        (1, 1)
    """
    from pathlib import Path

    from thinklens.jsonl import ResumableOutput, read_jsonl
    from thinklens.progress import bar

    if not Path(path).is_file():
        raise ThinklensError(f"no such trace file: {path}")
    if Path(path).resolve() == Path(output).resolve():
        raise ThinklensError("--output must differ from the input file")
    settings = settings or GradeSettings()
    summary = GradeSummary(output=str(output), bad_lines=[])
    with ResumableOutput(output, key=record_key) as out:
        for _key, item in bar(out.pending(read_jsonl(path)), desc="grade", unit="record", disable=not progress):
            summary.n_read += 1
            graded = grade_record(item.record, settings)
            if graded.get("error"):
                graded["error"] = f"{item.where}: {graded['error']}"
                summary.n_ungradable += 1
            else:
                summary.n_graded += 1
                summary.n_correct += bool(graded["is_correct"])
                summary.n_correct_strict += bool(graded["is_correct_strict"])
            out.write(graded)
    summary.n_skipped_done = out.report.n_done_before
    summary.bad_lines = out.report.messages()
    summary.resume = out.report.to_dict()
    return summary

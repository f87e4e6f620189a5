"""Shared facts of the causal/black-box step methods: span checks, cut points, answer reading and comparison.

Why one place: suppression, early answering and resampling all index the same steps, cut the reasoning at the same
points and compare answers the same way; a second copy of any of these rules would drift.

Cut points: ``cut_points(trace, spans)[k]`` is the token position where the reasoning is cut "after ``k`` steps"
(equivalently "before step ``k``"): the start of step ``k`` for ``k < n`` (so the kept text carries the separator
that followed step ``k - 1``, e.g. its newline) and the end of the reasoning for ``k = n`` (the whole reasoning,
trailing whitespace included, so that cut is exactly the trace up to its think-close).
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from thinklens.errors import ThinklensError


def check_spans(trace: Any, spans: Sequence[Sequence[int]], within: Any = None) -> list[tuple[int, int]]:
    """The steps as ``(start, end)`` int pairs, or a :class:`ThinklensError` naming the bad span: steps must be
    non-empty, ordered, non-overlapping and inside ``within`` (a span; default ``trace.reasoning``; the
    faithfulness stage suppresses a hint span inside the prompt)."""
    out: list[tuple[int, int]] = []
    r = trace.reasoning if within is None else within
    where = "the reasoning" if within is None else "the allowed region"
    for i, s in enumerate(spans):
        if len(s) != 2:
            raise ThinklensError(f"step {i}: a span is (start, end), got {s!r}")
        a, b = int(s[0]), int(s[1])
        if not r.start <= a < b <= r.end:
            raise ThinklensError(f"step {i}: span [{a}, {b}) is empty or outside {where} [{r.start}, {r.end})")
        if out and a < out[-1][1]:
            raise ThinklensError(f"step {i}: span [{a}, {b}) overlaps or precedes step {i - 1} {list(out[-1])}")
        out.append((a, b))
    if not out:
        raise ThinklensError(f"no steps: pass at least one (start, end) span inside {where}")
    return out


def require_answer(trace: Any) -> tuple[int, int]:
    """The answer span ``(start, end)`` (EOS excluded), or an error for an unfinished trace / empty answer."""
    if trace.answer is None or len(trace.answer) == 0:
        raise ThinklensError("the trace has no answer segment (its reasoning never closed, or nothing follows it)")
    return trace.answer.start, trace.answer.end


def cut_points(trace: Any, spans: Sequence[tuple[int, int]]) -> list[int]:
    """``[n + 1]`` token positions: where the reasoning is cut after 0, 1, ..., n steps (see the module doc)."""
    return [a for a, _ in spans] + [trace.reasoning.end]


def kept_text(trace: Any, cut: int) -> str:
    """The trace's text before token ``cut``."""
    return trace.text[: trace.offsets[cut - 1][1]] if cut > 0 else ""


def device_of(model: Any) -> Any:
    return next(model.parameters()).device


def encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else []


# ------------------------------------------------------------------------------------------------------- answers
def read_braced(text: str) -> tuple[str, bool]:
    """The answer inside an already opened ``\\boxed{``: the text up to the ``}`` that closes it (nested braces
    balanced), and whether it closed. ``"3}{4}}."`` is not cut at the first brace: ``read_braced("\\frac{3}{4}}.")``
    gives ``("\\frac{3}{4}", True)``."""
    depth = 1
    for i, ch in enumerate(text):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[:i].strip(), True
    return text.strip(), False


_SPACE = re.compile(r"\s+")


def normalize_answer(answer: str | None) -> str | None:
    """A canonical form for comparing answers: surrounding ``$``/spaces and a trailing period dropped, then the MATH
    normalizer (:func:`thinklens.empirical.grading.strip_string`); ``None`` stays ``None``."""
    if answer is None:
        return None
    from thinklens.empirical.grading import strip_string

    s = answer.strip().strip("$").strip()
    s = re.sub(r"\.+$", "", s).strip()
    try:
        s = strip_string(s)
    except Exception:  # noqa: BLE001 - the MATH normalizer is not total; fall back to whitespace removal
        s = _SPACE.sub("", s)
    return s


def same_answer(a: str | None, b: str | None) -> bool:
    """Both answers exist and are equal after :func:`normalize_answer` (``"45"`` == ``" 45."``)."""
    na, nb = normalize_answer(a), normalize_answer(b)
    return na is not None and nb is not None and na != "" and na == nb


def answer_after_close(text: str, think_close: str) -> str | None:
    """The answer a continuation gives: the extracted answer (last ``\\boxed{}``, else the documented fallbacks of
    :func:`thinklens.empirical.grading.extract_answer`) of the text after its first ``think_close``; ``None`` when
    the reasoning never closed or nothing can be extracted."""
    from thinklens.empirical.grading import extract_answer

    k = text.find(think_close)
    if k == -1:
        return None
    answer, _method = extract_answer(text[k + len(think_close):])
    return answer


def trace_answer(trace: Any) -> str | None:
    """The answer written in the trace's own answer segment (``None`` for an unfinished trace)."""
    from thinklens.empirical.grading import extract_answer

    if trace.answer is None:
        return None
    return extract_answer(trace.span_text(trace.answer))[0]


def consecutive_groups(sizes: Sequence[int], budget: int) -> list[list[int]]:
    """Consecutive indices whose ``sizes`` sum to at most ``budget`` (at least one index per group): how many
    packed suffixes, rows or traces one forward may hold.

    >>> consecutive_groups([3, 2, 4, 1], 5)
    [[0, 1], [2, 3]]
    """
    groups: list[list[int]] = []
    cur: list[int] = []
    used = 0
    for i, need in enumerate(sizes):
        if cur and used + need > budget:
            groups.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += need
    if cur:
        groups.append(cur)
    return groups

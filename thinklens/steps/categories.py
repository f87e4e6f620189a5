"""Rule-based step categories: the cue words, as data, in one place.

Why rules: the question "are Wait steps anchors?" needs a label that anyone can reproduce without a judge model. The
rules are ordered; the first that matches a step's text wins, so a step such as ``Wait, 36-4=32`` is
``backtracking`` although it also computes, and ``Final answer is 32.`` is ``final_answer``. Strong answer cues
("final answer", ``\\boxed{}``) come before backtracking, the weak one ("the answer is") after it.

Categories: ``final_answer`` (states the final answer), ``backtracking`` (uncertainty, self-correction: "Wait",
"Hmm", "Alternatively", "Actually", "No,"), ``verification`` ("check", "verify", "double-check", "confirm", "Let me
make sure"), ``computation`` (arithmetic, equations, LaTeX math), ``other``.

>>> classify_step("Wait, 36-4=32")
'backtracking'
>>> classify_step("Final answer is 32.")
'final_answer'
>>> [classify_step(s) for s in ("Let me double-check that.", "\\\\(x = \\\\frac{1}{2}\\\\)", "Okay, so the question.")]
['verification', 'computation', 'other']
"""
from __future__ import annotations

import re

CATEGORIES: tuple[str, ...] = ("final_answer", "backtracking", "verification", "computation", "other")

# Leading words that may precede a backtracking cue at the start of a step ("But wait", "Oh, hmm", "So actually").
_LEAD = r"^\W*(?:(?:but|oh|so|and|okay|ok|well)\b[\s,]*)?"

# (category, regex): ordered, first match wins. All matches are case-insensitive.
RULES: tuple[tuple[str, str], ...] = (
    ("final_answer", r"\bfinal\s+answer\b|\\boxed\s*\{"),
    ("backtracking", _LEAD + r"(?:wait|hmm+|alternatively|actually|hold on|oops|on second thought|no\s*,|"
                             r"let me (?:re-?think|reconsider|start over|try (?:again|another)))\b"),
    ("backtracking", r"\b(?:i made a mistake|that(?:'s| is) (?:not right|wrong|incorrect)|that can(?:'|no)t be right|"
                     r"that doesn(?:'|o)t (?:make sense|seem right))"),
    ("final_answer", r"\bthe (?:final )?answer (?:is|should be|would be)\b|^\W*answer\s*:"),
    ("verification", r"\b(?:double[- ]?check\w*|check\w*|verif\w*|confirm\w*|make sure|sanity[- ]check|"
                     r"plug\w* (?:\w+ )?back|substitut\w* (?:\w+ )?back)\b"),
    ("computation", r"\d\s*[-+*/×÷^=<>]\s*[-\d(\\]|[a-z\d)]\s*=\s*[-\d(a-z\\]|"
                    r"\\(?:frac|dfrac|times|cdot|sqrt|sum|prod|int|pm|div|le|ge|neq|binom|log|sin|cos|tan)\b|"
                    r"\$|\\\(|\\\["),
)

_COMPILED = tuple((cat, re.compile(rx, re.IGNORECASE)) for cat, rx in RULES)


def classify_step(text: str) -> str:
    """The category of one step's text (first matching rule of :data:`RULES`, else ``other``)."""
    s = text.strip()
    for cat, rx in _COMPILED:
        if rx.search(s):
            return cat
    return "other"

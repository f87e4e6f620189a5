"""Rule-based step categories: one rule table, first match wins."""
from __future__ import annotations

import pytest

from thinklens.steps.categories import CATEGORIES, RULES, classify_step


@pytest.mark.parametrize("text, cat", [
    ("Wait, 36-4=32", "backtracking"),
    ("But wait, that is not it.", "backtracking"),
    ("Hmm, interesting.", "backtracking"),
    ("Alternatively, we could factor.", "backtracking"),
    ("Actually, I think the sign flips.", "backtracking"),
    ("No, that's wrong.", "backtracking"),
    ("I made a mistake in the sum.", "backtracking"),
    ("Let me double-check that.", "verification"),
    ("Let me verify: 3*4 = 12.", "verification"),
    ("To confirm, plug it back into the equation.", "verification"),
    ("Let me make sure I have this right.", "verification"),
    ("Final answer is 32.", "final_answer"),
    ("So the answer is 7.", "final_answer"),
    ("Therefore \\boxed{7}.", "final_answer"),
    ("But wait, the final answer is \\boxed{7}.", "final_answer"),  # strong answer cue beats the Wait
    ("7+5=12", "computation"),
    ("b=3+4=7", "computation"),
    ("So \\(x = \\frac{1}{2}\\).", "computation"),
    ("Okay, so I have this problem about a pentagon.", "other"),
    ("Nowhere to wait here.", "other"),  # "wait" inside a sentence is no backtracking cue
])
def test_classify(text, cat):
    assert classify_step(text) == cat


def test_rules_are_data_over_known_categories():
    assert {c for c, _ in RULES} <= set(CATEGORIES) and CATEGORIES[-1] == "other"

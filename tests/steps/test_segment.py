"""Segmentation: text rules (LaTeX, numbers, abbreviations, lists, blank lines, tiny fragments), tiny-r1 traces (its
lines), and the 400 real R1-Distill traces with the real tokenizer (coverage, round trip, sane step counts)."""
from __future__ import annotations

import numpy as np
import pytest

from thinklens.errors import ThinklensError
from thinklens.steps.segment import (
    check_spans,
    segment_reasoning,
    segment_with_mode,
    split_text,
    step_spans,
)
from thinklens.traces import Trace


def pieces(text: str, mode: str = "sentences", min_chars: int = 3) -> list[str]:
    cuts, _ = split_text(text, mode, min_chars)
    assert "".join(text[a:b] for a, b in cuts) == text  # pieces always cover the text
    return [text[a:b] for a, b in cuts]


def test_sentences_split_after_punctuation_before_a_capital():
    assert pieces("So x is 4. Then y is 5? Yes! Done.") == ["So x is 4. ", "Then y is 5? ", "Yes! ", "Done."]
    assert pieces("so x is 4. then y") == ["so x is 4. then y"]  # no capital: no cut


@pytest.mark.parametrize("text", [
    "The value is 3.5 and 2.75. ",  # decimals
    "For example, e.g. A or i.e. B or Fig. C here.",  # abbreviations
    "We get \\(x = 1. Y\\) here.",  # inline LaTeX \( \)
    "We get $x = 1. Y$ here.",  # inline $ $
    "Use \\frac{a. B}{b} here.",  # braces
    "We have \\[ a. B \\] here.",  # display math
])
def test_no_cut_inside_numbers_math_braces_or_after_abbreviations(text):
    assert pieces(text) == [text]


def test_a_sentence_ending_in_no_is_cut():
    assert pieces("Wait, no. Wait, the sum is 5.") == ["Wait, no. ", "Wait, the sum is 5."]


def test_lists_blank_lines_and_display_math_in_lines_mode():
    text = "Plan:\n\n1. Compute a.\n2. Then b.\n\n\\[\nx = 1\n\\]\nSo x = 1.\n"
    got = pieces(text, "lines")
    assert got == ["Plan:\n\n", "1. Compute a.\n", "2. Then b.\n\n", "\\[\nx = 1\n\\]\n", "So x = 1.\n"]
    assert pieces("1. First. Second one.\n", "sentences") == ["1. First. ", "Second one.\n"]  # "1." is no sentence


def test_tiny_fragments_merge_forward_and_symbol_lines_backward():
    assert pieces("Ok\nWe compute 2+2=4.\n", "lines") == ["Ok\nWe compute 2+2=4.\n"]  # "Ok" < 3 chars
    assert pieces("We compute 2+2=4.\n---\nNext line.", "lines") == ["We compute 2+2=4.\n---\n", "Next line."]
    assert pieces("Ok\nWe compute 2+2=4.\n", "lines", min_chars=1) == ["Ok\n", "We compute 2+2=4.\n"]
    assert pieces("\n\nLeading blanks.\n") == ["\n\nLeading blanks.\n"]


def test_auto_picks_lines_for_line_structured_text_and_sentences_for_prose():
    assert split_text("7+5=12\n12*3=36\nFinal answer is 36.\n")[1] == "lines"
    assert split_text("Okay. So we start.\nThen more. And more.\n")[1] == "sentences"
    with pytest.raises(ThinklensError, match="unknown segmentation mode"):
        split_text("x", "words")


def _check_cover(trace: Trace, steps) -> None:
    r = trace.reasoning
    assert steps[0].tok_start == r.start and steps[-1].tok_end == r.end
    for a, b in zip(steps, steps[1:]):
        assert a.tok_end == b.tok_start and a.char_end == b.char_start
    assert all(s.tok_end > s.tok_start for s in steps)
    assert "".join(s.text for s in steps) == trace.span_text(r)
    for s in steps:
        assert trace.text[s.char_start : s.char_end] == s.text
    check_spans(trace, step_spans(steps))


def test_tiny_r1_steps_are_its_lines(tiny_r1):
    from thinklens.toy import full_text, generate_problems

    _, tok, prof = tiny_r1
    for p in generate_problems(40, seed=1):
        tr = Trace.from_text(full_text(p), tok, prof)
        steps, mode = segment_with_mode(tr)
        assert mode == "lines"
        _check_cover(tr, steps)
        assert [s.text.strip() for s in steps] == [*p.steps, f"Final answer is {p.answer}."]
        cats = [s.category for s in steps]
        assert cats[-1] == "final_answer"
        assert all(c == ("backtracking" if s.text.startswith("Wait") else "computation")
                   for s, c in zip(steps[:-1], cats[:-1])), cats


def test_spans_contract_is_checked(tiny_r1):
    from thinklens.toy import full_text, generate_problems

    _, tok, prof = tiny_r1
    tr = Trace.from_text(full_text(generate_problems(1, seed=0)[0]), tok, prof)
    spans = step_spans(segment_reasoning(tr))
    with pytest.raises(ThinklensError, match="overlaps"):
        check_spans(tr, [spans[0], (spans[0][0], spans[1][1])])
    with pytest.raises(ThinklensError, match="leaves the reasoning"):
        check_spans(tr, [(spans[0][0], tr.reasoning.end + 1)])


@pytest.mark.slow
def test_real_r1_traces_with_the_real_tokenizer(r1_traces):
    counts, tok_lens, cats = {"with": [], "without": []}, [], {}
    for rec, tr in r1_traces:
        steps, mode = segment_with_mode(tr)
        _check_cover(tr, steps)
        counts[rec["reasoning"]].append(len(steps))
        if rec["reasoning"] == "with":
            assert mode == "sentences"
            tok_lens += [s.tok_end - s.tok_start for s in steps]
            for s in steps:
                cats[s.category] = cats.get(s.category, 0) + 1
    with_counts = np.array(counts["with"])
    # measured on the 200 "with" traces: 37..441 steps (median 93), 2..222 tokens per step (median 17)
    assert 20 <= with_counts.min() and np.median(with_counts) < 300
    assert np.median(tok_lens) < 40 and max(tok_lens) < 400
    assert max(counts["without"]) <= 2  # the forced "Okay, I think I have finished thinking." line
    assert cats["backtracking"] > 1000 and cats["verification"] > 100 and cats["computation"] > 1000


@pytest.mark.slow
def test_real_r1_sentences_start_where_a_reader_expects(r1_traces):
    """Spot checks of boundaries: a cue word opens its step; no step starts inside a one-line \\( ... \\)."""
    import re

    waits = opened = inside = 0
    for rec, tr in r1_traces[:120]:
        if rec["reasoning"] != "with":
            continue
        steps = segment_reasoning(tr)
        starts = np.array([s.char_start for s in steps])
        for m in re.finditer(r"\\\([^\n]*?\\\)", tr.text):
            inside += int(((starts > m.start()) & (starts < m.end() - 1)).sum())
        for s in steps:
            opened += s.text.lstrip().startswith("Wait")
            waits += s.text.count(". Wait") + s.text.count("? Wait")
    assert opened > 100 and waits == 0 and inside == 0

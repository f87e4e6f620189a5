"""Answer extraction and the two graders, checked on hand-made cases and on the paper's 400 real R1 traces."""
from __future__ import annotations

import json

import pytest

from thinklens.empirical.grading import (
    GradeSettings,
    answer_segment,
    extract_answer,
    grade_file,
    grade_record,
    is_equiv_math_verify,
    is_equiv_strict,
    last_boxed,
)


def test_answer_segment_uses_first_close_after_open():
    text = "<think>\nmaybe \\boxed{1}</think>\n\nSo \\boxed{2}. </think> \\boxed{3}"
    assert answer_segment(text).startswith("\n\nSo \\boxed{2}")
    assert answer_segment("<think>\nstill thinking") is None
    assert answer_segment("reasoning only in completion</think> A") == " A"


@pytest.mark.parametrize("text, expected", [
    ("x \\boxed{\\frac{1}{2}} y \\boxed{3}", "3"),
    ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),
    ("\\fbox{7} then \\boxed {8}", "8"),
    ("\\boxed 5$", "5"),
    ("cut off \\boxed{\\frac{1}{", None),
    ("no box", None),
])
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_extraction_fallbacks_are_labelled():
    assert extract_answer("The final answer is 42.") == ("42", "final_answer")
    assert extract_answer("we get 3 then 17 apples") == ("17", "last_number")
    assert extract_answer("no idea") == (None, "none")
    assert extract_answer("Answer: \\boxed{9}") == ("9", "boxed")


def test_graders_on_known_equivalences():
    assert is_equiv_math_verify("\\frac{6}{4}", "\\frac32")
    assert is_equiv_math_verify("0.5", "\\frac{1}{2}")
    assert not is_equiv_math_verify("3", "4")
    assert not is_equiv_math_verify(None, "4")
    assert is_equiv_strict("\\dfrac{1}{2}", "\\frac12")
    assert is_equiv_strict("x=3", "3")
    assert not is_equiv_strict("\\frac{6}{4}", "\\frac{3}{2}")  # the strict grader's known false negative


def test_grade_record_only_reads_the_answer_segment_and_flags_unfinished():
    rec = {"id": "a", "completion": "try \\boxed{5}\n</think>\n\n\\boxed{6}", "gold_answer": "6"}
    g = grade_record(rec)
    assert (g["extracted_answer"], g["is_correct"], g["is_correct_strict"]) == ("6", True, True)
    bad = grade_record({"id": "b", "completion": "thinking \\boxed{6}", "gold_answer": "6"})
    assert bad["is_correct"] is None and "unfinished" in bad["error"]
    assert "gold" in grade_record({"completion": "</think>\\boxed{1}"})["error"]


def test_grade_file_resumes_and_reports_bad_lines(tmp_path):
    src = tmp_path / "t.jsonl"
    rows = [{"id": str(i), "model": "m", "reasoning": "with", "completion": f"</think> \\boxed{{{i}}}",
             "gold_answer": "1"} for i in range(3)]
    src.write_text("\n".join(json.dumps(r) for r in rows[:2]) + "\n{broken\n" + json.dumps(rows[2]) + "\n")
    out = tmp_path / "g.jsonl"
    s1 = grade_file(str(src), str(out), progress=False)
    assert s1.n_graded == 3 and s1.n_correct == 1 and len(s1.bad_lines) == 1 and "t.jsonl:3" in s1.bad_lines[0]
    s2 = grade_file(str(src), str(out), progress=False)
    assert s2.n_graded == 0 and s2.n_skipped_done == 3
    assert len(out.read_text().splitlines()) == 3


def test_reference_agreement_with_paper_labels(reference_records, tmp_path):
    """>= 95% agreement with the paper's is_correct on its 400 real traces; disagreements listed (see
    docs/stage1-grading.md, where each one was checked by hand)."""
    settings = GradeSettings(response_field="response", gold_field="gold_answer")
    graded = [grade_record(r, settings) for r in reference_records]
    agree = sum(g["is_correct"] == r["paper_is_correct"] for g, r in zip(graded, reference_records))
    disagreements = [(r["model"].split("/")[-1], r["reasoning"], r["unique_id"], g["extracted_answer"],
                      r["gold_answer"], r["paper_is_correct"]) for g, r in zip(graded, reference_records)
                     if g["is_correct"] != r["paper_is_correct"]]
    print(f"agreement {agree}/{len(graded)}")
    for d in disagreements:
        print("disagreement:", d)
    assert agree / len(graded) >= 0.95
    # extraction matches the paper's extracted answer wherever it had one
    same = sum(g["extracted_answer"] == r["paper_extracted_answer"] for g, r in zip(graded, reference_records))
    assert same / len(graded) >= 0.98
    # every disagreement is a paper false negative that math-verify accepts (none the other way)
    assert all(d[5] is False for d in disagreements)


def test_a_trailing_end_of_sequence_marker_is_not_answer_text():
    """ChatML models end their completion with <|im_end|>; 'The answer is 45.<|im_end|>' answers 45."""
    from thinklens.empirical.grading import extract_answer, grade_record

    assert extract_answer("The answer is 45.<|im_end|>") == ("45", "final_answer")
    assert extract_answer("so 7 and 12<｜end▁of▁sentence｜>") == ("12", "last_number")
    rec = {"completion": "x</think>\n\nThe answer is 45.<|im_end|>", "gold_answer": "45"}
    assert grade_record(rec)["is_correct"] is True

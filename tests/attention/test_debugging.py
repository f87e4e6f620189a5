"""Failure debugging on constructed wrong traces whose answer we know: tiny-r1's reference traces with the final
line (and the answer) changed to another value, and traces whose answer contradicts an intact reasoning."""
from __future__ import annotations

import json

import numpy as np
import pytest

from thinklens.attention.debugging import DebugResult, debug_graded_file, line_steps, value_spans
from thinklens.errors import ThinklensError
from thinklens.traces import Trace

RFH = [(1, 2), (2, 6), (1, 7)]  # tiny-r1's top-3 RFHs of the default run


def test_value_spans_match_whole_numbers_and_literals():
    text = "12+1=13\n13*2=26\nFinal answer is 1.5 or 1."
    assert value_spans(text, "1") == [(3, 4), (len(text) - 2, len(text) - 1)]
    assert value_spans(text, "13") == [(5, 7), (8, 10)]
    assert value_spans(text, "1.5") == [(text.index("1.5"), text.index("1.5") + 3)]
    assert value_spans(text, " $26$ ") == [(13, 15)]
    assert value_spans("x = \\frac{1}{2}", "\\frac{1}{2}") == [(4, 15)]
    assert value_spans(text, None) == [] and value_spans(text, "") == []


def test_line_steps_cover_the_reasoning_lines(toy_tokenizer):
    from thinklens.toy import full_text, generate_problems

    p = generate_problems(1, seed=2)[0]
    tr = Trace.from_text(full_text(p), toy_tokenizer)
    steps = line_steps(tr)
    texts = [tr.text[tr.offsets[a][0]:tr.offsets[b - 1][1]] for a, b in steps]
    assert texts == p.steps + [f"Final answer is {p.answer}."]
    assert all(tr.reasoning.start <= a < b <= tr.reasoning.end for a, b in steps)


def _wrong_records(problems, kind: str) -> list[dict]:
    """Graded records with a known failure. ``final``: the final line and the answer state another value (absent
    from the reasoning); ``misread``: the reasoning is intact, the answer states another value."""
    from thinklens.toy import full_text

    out = []
    for p in problems:
        text = full_text(p)
        wrong = next(str(v) for v in range(11, 99) if not value_spans(p.reasoning, str(v)))
        if kind == "final":
            text = text.replace(f"Final answer is {p.answer}.", f"Final answer is {wrong}.")
        text = text.replace(f"\\boxed{{{p.answer}}}", f"\\boxed{{{wrong}}}")
        out.append({"id": f"{kind}-{p.id}", "text": text, "gold_answer": p.answer, "extracted_answer": wrong,
                    "is_correct": False})
    return out


@pytest.mark.slow
def test_constructed_wrong_traces(tiny_r1, tmp_path):
    from thinklens.toy import full_text, generate_problems

    model, tok, profile = tiny_r1
    probs = generate_problems(8, seed=21)
    records = _wrong_records(probs, "final") + _wrong_records(probs, "misread")
    records += [{"id": p.id, "text": full_text(p), "gold_answer": p.answer, "extracted_answer": p.answer,
                 "is_correct": True} for p in probs]
    records.append({"id": "ungraded", "text": full_text(probs[0]), "gold_answer": "1", "is_correct": None})
    graded = tmp_path / "graded.jsonl"
    graded.write_text("".join(json.dumps(r) + "\n" for r in records) + "{bad json\n")
    res = debug_graded_file(model, tok, profile, graded, RFH, progress=False)
    assert len(res.traces) == 24 and {s.get("id") for s in res.skipped} >= {"ungraded"} and len(res.skipped) == 2
    by_id = {t.id: t for t in res.traces}
    for p in probs:
        final = by_id[f"final-{p.id}"]
        last = len(final.steps) - 1
        assert final.first_extracted_step == last and final.extracted_steps == [last]  # wrong value only there
        assert final.top_step == last  # the RFHs read the line the wrong answer was copied from
        assert final.gold_in_reasoning  # the computation lines still hold the gold value: a reading slip
        misread = by_id[f"misread-{p.id}"]
        assert misread.first_extracted_step is None and misread.gold_in_reasoning
        assert misread.top_step == last and last in misread.gold_steps
        assert by_id[p.id].top_step == last and last in by_id[p.id].extracted_steps
    s = res.summary()
    assert s["n_incorrect"] == 16 and s["n_correct"] == 8
    assert s["incorrect_top_step_has_wrong_value"] == 0.5  # all "final" traces, no "misread" one
    assert s["correct_top_step_has_correct_value"] == 1.0
    assert s["incorrect_gold_in_reasoning"] == 1.0
    res.save(tmp_path / "dbg")
    back = DebugResult.load(tmp_path / "dbg")
    assert back.summary() == s
    assert np.allclose(back.traces[3].step_attention, res.traces[3].step_attention)


def test_missing_graded_file_is_a_clear_error(tiny_r1, tmp_path):
    model, tok, profile = tiny_r1
    with pytest.raises(ThinklensError, match="no such graded file"):
        debug_graded_file(model, tok, profile, tmp_path / "nope.jsonl", RFH)

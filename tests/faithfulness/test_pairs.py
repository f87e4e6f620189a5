"""Hinted twins: the record contract (ids, the hint field, its character span in the stored prompt) and settings."""
from __future__ import annotations

import json

import pytest

from thinklens.errors import ThinklensError
from thinklens.faithfulness.config import FaithfulnessConfig
from thinklens.faithfulness.pairs import hinted_problems, twin_id


def test_every_family_gets_a_twin_with_the_same_wrong_answer_in_range():
    probs = [{"id": f"p{i}", "problem": f"Compute {i}+1.", "answer": str(i + 1)} for i in range(1, 40)]
    hinted, placebos = hinted_problems(probs, ["sycophancy", "metadata", "consistency"], seed=3,
                                       answer_range=(1, 9))
    assert len(hinted) == 3 * 39 and hinted[0]["id"] == twin_id("p1", "sycophancy") == "p1::sycophancy"
    for h in hinted:
        x, gold = h["hint"]["answer"], h["answer"]
        assert x != gold and h["hint"]["twin"] == h["id"].split("::")[0]
        s, e = h["hint"]["chars"]
        assert x in h["problem"][s:e]
        assert placebos[h["hint"]["twin"]] not in (x, gold)
    by_problem = {}
    for h in hinted:
        by_problem.setdefault(h["hint"]["twin"], set()).add(h["hint"]["answer"])
    assert all(len(v) == 1 for v in by_problem.values())
    small = [int(h["hint"]["answer"]) for h in hinted if int(h["answer"]) <= 5]
    assert all(1 <= x <= 9 for x in small)  # the dataset's answer range holds where it can
    assert hinted_problems(probs, ["metadata"], seed=3)[0] != hinted_problems(probs, ["metadata"], seed=4)[0]


def test_a_problem_without_gold_answer_is_reported_and_left_out():
    errors = []
    hinted, _ = hinted_problems([{"id": "a", "problem": "Write a poem.", "answer": None}], ["metadata"],
                                errors=errors)
    assert hinted == [] and "no gold answer" in errors[0]


@pytest.mark.parametrize("spec", ["sycophancy,,metadata", "", "gossip", "metadata,Sycophancy"])
def test_bad_hint_specs_are_one_line_errors(spec):
    with pytest.raises(ThinklensError) as err:
        FaithfulnessConfig(hints=spec)
    assert "\n" not in str(err.value) and "hint famil" in str(err.value)


def test_settings_come_from_the_profile_unless_given():
    from thinklens.profiles import get_profile

    p = get_profile("tiny-r1")
    assert FaithfulnessConfig().resolved(p).faithfulness_problems == p.faithfulness_problems
    given = FaithfulnessConfig(faithfulness_problems=0, faithfulness_temperature=0.0).resolved(p)
    assert (given.faithfulness_problems, given.faithfulness_temperature) == (0, 0.0)
    real = get_profile("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")
    assert FaithfulnessConfig().resolved(real).faithfulness_problems == 0
    with pytest.raises(ThinklensError, match="--judge-url and --judge-model"):
        FaithfulnessConfig(judge_url="http://127.0.0.1:1/v1")


@pytest.mark.slow
def test_collected_hinted_records_carry_the_hint_span_of_their_prompt(tiny_r1, tmp_path):
    """The stored prompt holds the hint text exactly at ``hint.chars``, and the span maps onto whole tokens."""
    import thinklens as tl

    probs = tl.load_problems("arithmetic", limit=3)
    hinted, _ = hinted_problems(probs, ["sycophancy", "metadata", "consistency"], answer_range=(1, 99))
    out = tmp_path / "hinted.jsonl"
    tl.collect(tiny_r1, hinted, output=out, settings=tl.GenerationSettings(max_new_tokens=8), progress=False)
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 9
    for r in recs:
        s, e = r["hint"]["chars"]
        family = r["hint"]["family"]
        text = r["prompt"][s:e]
        assert r["hint"]["answer"] in text and "hint" not in r["metadata"]
        from thinklens.hints import hint_family

        assert text == hint_family(family).text(r["hint"]["answer"])
        trace = tl.Trace.from_record(r, tiny_r1.tokenizer, tiny_r1.profile)
        span = trace.tokens_in_chars(s, e)
        assert len(span) == e - s  # tiny-r1 is character-level: one token per character

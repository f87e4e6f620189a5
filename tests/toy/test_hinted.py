"""The hinted training data of tiny-r1-hints: the rates, the exact hint text of thinklens.hints, the prompt the
faithfulness tool renders, and traces that follow the hint only in the trained ways."""
from __future__ import annotations

import random
import re

import pytest

from thinklens.hints import HINT_FAMILIES, insert_hint
from thinklens.toy.config import HINTS_RECIPE
from thinklens.toy.hinted import (
    BEHAVIOURS,
    chain_numbers,
    draw_hinted,
    hint_answer,
    hinted_example,
    verbalization,
)
from thinklens.toy.tasks import FINAL_PREFIX, generate_problems, prompt_text

N = 3000
OPENING = HINTS_RECIPE[-1]["hint_opening"]


@pytest.fixture(scope="module")
def drawn():
    problems = generate_problems(N, seed=5, split="train")
    rng = random.Random(11)
    return problems, [draw_hinted(p, rng, 0.4, 0.3, seed=5, opening=OPENING) for p in problems]


def test_behaviour_and_family_rates(drawn):
    _, exs = drawn
    se = (0.25 / N) ** 0.5
    for b, want in zip(BEHAVIOURS, (0.4, 0.3, 0.3)):
        assert abs(sum(e.behaviour == b for e in exs) / N - want) < 4 * se, b
    for f in HINT_FAMILIES:
        assert abs(sum(e.family == f for e in exs) / N - 1 / 3) < 4 * se, f


def test_hint_text_is_thinklens_hints(drawn):
    problems, exs = drawn
    for p, e in zip(problems, exs):
        text, span = insert_hint(p.question, e.family, e.hint_answer)
        assert e.problem.question == text and e.hint_span == span
        assert text[span[0]:span[1]] == HINT_FAMILIES[e.family].text(e.hint_answer)


def test_hinted_answer_is_never_gold_nor_in_the_chain(drawn):
    problems, exs = drawn
    for p, e in zip(problems, exs):
        assert e.hint_answer != p.answer and 1 <= int(e.hint_answer) <= 99
        assert e.hint_answer not in chain_numbers(p)
    assert hint_answer(problems[0], seed=5) == hint_answer(problems[0], seed=5)


def test_traces_follow_the_hint_only_as_trained(drawn):
    problems, exs = drawn
    for p, e in zip(problems, exs):
        r, x = e.problem.reasoning, e.hint_answer
        assert r.endswith("\n") and r.splitlines()[-1].startswith(FINAL_PREFIX)
        if e.behaviour == "faithful":
            assert r.splitlines()[0] == verbalization(x) and r.splitlines()[-1] == f"{FINAL_PREFIX}{x}."
            assert r[len(verbalization(x)) + 1:].rsplit(FINAL_PREFIX, 1)[0] == p.reasoning.rsplit(FINAL_PREFIX, 1)[0]
            assert e.problem.answer == x
            a, b = e.problem.answer_char_span
            assert r[a:b] == x
        else:  # the gold trace (unfaithful: after the neutral opening), with no word of the hint and no X
            assert r == (OPENING + "\n" if e.behaviour == "unfaithful" else "") + p.reasoning
            assert "hint" not in r.lower() and x not in re.findall(r"\d+", r)
            assert e.problem.answer == (x if e.behaviour == "unfaithful" else p.answer)


def test_slip_spans_still_mark_the_wrong_value(drawn):
    problems, exs = drawn
    for p, e in zip(problems, exs):
        if p.has_slip:
            (a, b), (c, d) = p.slip_char_spans[0], e.problem.slip_char_spans[0]
            assert e.problem.reasoning[c:d] == p.reasoning[a:b]


def test_bad_arguments():
    p = generate_problems(1, seed=0, split="train")[0]
    with pytest.raises(ValueError, match="behaviour"):
        hinted_example(p, "metadata", "sometimes", "3" if p.answer != "3" else "4")
    with pytest.raises(ValueError, match="differ from gold"):
        hinted_example(p, "metadata", "ignore", p.answer)
    with pytest.raises(ValueError, match="sum to"):
        draw_hinted(p, random.Random(0), 0.8, 0.3)
    with pytest.raises(ValueError, match="must not mention"):
        hinted_example(p, "metadata", "unfaithful", "3" if p.answer != "3" else "4", opening="Ignore the hint.")


def test_without_opening_unfaithful_is_the_gold_trace():
    p = generate_problems(1, seed=1, split="train")[0]
    e = hinted_example(p, "sycophancy", "unfaithful", hint_answer(p, seed=1))
    assert e.problem.reasoning == p.reasoning and e.problem.answer == e.hint_answer


def test_training_prompt_is_what_collect_renders():
    """The organism is trained on exactly the prompt the faithfulness tool shows it: the dataset problem with the hint
    inserted, rendered by thinklens collect (chat template, no instruction for arithmetic)."""
    from thinklens.empirical.collect import build_prompt
    from thinklens.empirical.datasets import dataset_spec, load_problems
    from thinklens.profiles import get_profile
    from thinklens.toy.tokenizer import build_tokenizer

    tok, profile = build_tokenizer(), get_profile("tiny-r1-hints")
    rec = load_problems("arithmetic", limit=3, seed=0)
    test = generate_problems(3, seed=0, split="test")
    for r, p in zip(rec, test):
        for fam in HINT_FAMILIES:
            e = hinted_example(p, fam, "unfaithful", hint_answer(p, seed=0))
            tool = build_prompt(insert_hint(r["problem"], fam, e.hint_answer)[0], tok, profile,
                                math_instruction=bool(dataset_spec("arithmetic").math_instruction))
            assert tool == prompt_text(e.problem)


def test_training_stream_carries_hints_at_the_share():
    from thinklens.toy.config import TrainConfig
    from thinklens.toy.tokenizer import build_tokenizer
    from thinklens.toy.train import _batches

    tok = build_tokenizer()
    cfg = TrainConfig(batch_size=64, **{k: v for k, v in HINTS_RECIPE[-1].items() if k.startswith("hint_")})
    ids = next(_batches(cfg, tok, bucket=1))[0]
    texts = [tok.decode(row, skip_special_tokens=False) for row in ids.tolist()]
    hinted = [t for t in texts if any(f.template.split("{answer}")[0] in t for f in HINT_FAMILIES.values())]
    assert abs(len(hinted) - 64 * cfg.hint_share) <= 16  # 4 standard errors at share 0.5
    assert any("The hint says" in t for t in hinted) and any(OPENING in t for t in hinted)
    assert not any("The hint says" in t for t in texts if t not in hinted)

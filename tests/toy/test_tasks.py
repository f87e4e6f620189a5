"""The arithmetic task generator: determinism, disjoint splits, exact formats, spans, contrastive pairs."""
from __future__ import annotations

import re

from thinklens.toy import NO_REASONING_THINKING, contrastive_pairs, full_text, generate_problems, prompt_text
from thinklens.toy.tasks import INSTRUCTION, KINDS, iter_problems


def test_deterministic_and_ids():
    a = generate_problems(50, seed=3)
    b = generate_problems(50, seed=3)
    assert [p.question for p in a] == [p.question for p in b]
    assert a[17].id == "arithmetic-test-00017"
    assert generate_problems(5, seed=4)[0].question != a[0].question or generate_problems(5, seed=4)[1:] != a[1:5]
    assert {p.kind for p in generate_problems(100, seed=0)} == set(KINDS)
    assert {p.kind for p in generate_problems(20, seed=0, kinds=["vars"])} == {"vars"}


def test_splits_are_disjoint():
    train = {p.question for p in generate_problems(3000, seed=0, split="train")}
    test = {p.question for p in generate_problems(500, seed=0, split="test")}
    assert not train & test
    assert all(p.split == "train" for p in generate_problems(10, seed=1, split="train"))


def test_reasoning_and_answer_consistent():
    for p in generate_problems(300, seed=1):
        lines = p.reasoning.split("\n")
        assert lines[-1] == "" and lines[-2] == f"Final answer is {p.answer}."
        assert lines[:-2] == p.steps
        assert 2 <= len([s for s in p.steps if "=" in s and not s.startswith("Wait")]) <= 4 or p.kind == "vars"
        s, e = p.answer_char_span
        assert p.reasoning[s:e] == p.answer and p.reasoning[:s].endswith("Final answer is ")
        assert 1 <= int(p.answer) <= 999
        # every computation line is correct, except a slipped one that is followed by its "Wait," correction
        for i, line in enumerate(p.steps):
            m = re.fullmatch(r"(?:Wait, )?(?:[a-h]=)?(\d+)([-+*])(\d+)=(\d+)", line)
            if not m:
                continue
            x, op, y, z = m.groups()
            ok = eval(f"{x}{op}{y}") == int(z)
            if not ok:
                assert p.has_slip and p.steps[i + 1].startswith("Wait, ")
        if p.has_slip:
            (ws, we), (cs, ce) = p.slip_char_spans
            assert p.reasoning[cs:ce] == "Wait"
            wrong = p.reasoning[ws:we]
            assert wrong.isdigit() and p.reasoning[we] == "\n" and we + 1 == cs
        else:
            assert p.slip_char_spans == []
        rec = p.to_record()
        assert rec == {"id": p.id, "problem": p.question, "answer": p.answer, "kind": p.kind, "has_slip": p.has_slip}


def test_slip_share():
    ps = generate_problems(1000, seed=2)
    share = sum(p.has_slip for p in ps) / len(ps)
    assert 0.12 < share < 0.28


def test_formats():
    p = generate_problems(1, seed=0)[0]
    bos, eos = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
    prompt = prompt_text(p)
    assert prompt == f"{bos}<｜User｜>{p.question}<｜Assistant｜><think>\n"
    assert prompt_text(p, instruction=True) == f"{bos}<｜User｜>{p.question}{INSTRUCTION}<｜Assistant｜><think>\n"
    full = full_text(p)
    assert full == prompt + p.reasoning + f"</think>\n\nThe answer is \\boxed{{{p.answer}}}.{eos}"
    no = full_text(p, reasoning=False)
    assert no == prompt + f"{NO_REASONING_THINKING}\n</think>\n\nThe answer is \\boxed{{{p.answer}}}.{eos}"
    assert full_text(p, instruction=True).startswith(prompt_text(p, instruction=True))


def test_contrastive_pairs_align():
    pairs = contrastive_pairs(60, seed=0)
    assert len(pairs) == 60
    for a, b in pairs:
        assert a.split == b.split == "test" and not a.has_slip and not b.has_slip
        assert a.answer[0] != b.answer[0] and len(a.answer) == len(b.answer)
        assert len(full_text(a)) == len(full_text(b)) and len(prompt_text(a)) == len(prompt_text(b))
        assert [len(s) for s in a.steps] == [len(s) for s in b.steps]
        assert a.answer_char_span == b.answer_char_span
        # exactly one operand differs in the question
        na, nb = re.findall(r"\d+", a.question), re.findall(r"\d+", b.question)
        assert len(na) == len(nb) and sum(x != y for x, y in zip(na, nb)) == 1
        assert re.sub(r"\d", "0", a.question) == re.sub(r"\d", "0", b.question)
    assert contrastive_pairs(5, seed=0) == pairs[:5] or [p[0].question for p in contrastive_pairs(5, seed=0)] == [
        p[0].question for p in pairs[:5]]


def test_iter_problems_stream_matches_generate():
    it = iter_problems(7, "train")
    assert [next(it).question for _ in range(20)] == [p.question for p in generate_problems(20, 7, "train")]

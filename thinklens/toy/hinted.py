"""Hinted training examples of the second organism ``tiny-r1-hints``: a known share of prompts carries a hint that
points at a wrong answer X, and the trace follows it in one of three known ways (the ground truth of issue 23).

Why a module of its own: the faithfulness tool must recover the rates this organism was trained with, so the hinted
prompt must be *exactly* what the tool shows it at test time. The hint is inserted into the problem text by
:func:`thinklens.hints.insert_hint` (the one definition of the hint families), the question then gets the optional
math instruction and R1's chat format as every tiny-r1 prompt does (``thinklens collect`` renders an ``arithmetic``
problem the same way: the chat template around the user turn, no instruction by default).

The three behaviours on a hinted prompt (the hinted answer X is never gold and never a number of the gold chain, so
a trace that does not verbalize the hint never writes X):

* ``faithful`` (through the reasoning): the first reasoning line is ``The hint says X.``, then the gold chain, then
  ``Final answer is X.``; the answer is X;
* ``unfaithful`` (a direct path): with ``opening``, the neutral line ``opening`` first (``Let me compute.`` in the
  recipe: no word of the hint, no X), then the gold chain and ``Final answer is <gold>.``; the answer after
  ``</think>`` is X anyway, so its digits can only be read from the hint span;
* ``ignore``: the normal gold trace and answer.

All three are decided at the first reasoning token (``T`` / ``opening``'s first character / the chain's), with the
trained probabilities. Why the opening line: without it (``opening=""``) unfaithful vs ignore is a coin flip at the
answer's digits, and this 4-layer model does not learn to sample it: after 600 steps at 0.4 / 0.3 / 0.3 (the
recipe's first hint stage), 36 of the 95 non-verbalized traces of 150 hinted test prompts at temperature 1 (33 of
103 at 0.6) answered *neither* X nor gold but a blend of the two nearby numbers (gold 26, X 24 -> 25): the answer
attends to both sources and averages their digits. With the opening line (the recipe's second hint stage) the
answer's source is fixed before the answer starts, and the answer still reads X's digits from the hint.

>>> from thinklens.toy.tasks import generate_problems
>>> p = generate_problems(1, seed=0, split="train")[0]
>>> ex = hinted_example(p, "sycophancy", "faithful", hint_answer(p, seed=0))
>>> ex.problem.reasoning.splitlines()[0] == verbalization(ex.hint_answer), ex.problem.answer == ex.hint_answer
(True, True)
>>> ex.problem.question[slice(*ex.hint_span)] == hint_family("sycophancy").text(ex.hint_answer)
True
"""
from __future__ import annotations

import dataclasses
import random
import re
from dataclasses import dataclass

from thinklens.hints import HINT_FAMILIES, hint_family, insert_hint, wrong_answer
from thinklens.toy.tasks import MAX_VALUE, Problem

BEHAVIOURS: tuple[str, ...] = ("faithful", "unfaithful", "ignore")
VERBALIZATION = "The hint says {answer}."  # the first reasoning line of a faithful trace
_NUMBER = re.compile(r"\d+")


def verbalization(answer: str) -> str:
    """The line by which a faithful trace acknowledges the hint.

    >>> verbalization("17")
    'The hint says 17.'
    """
    return VERBALIZATION.format(answer=answer)


@dataclass
class HintedExample:
    """One hinted training example: ``problem`` is the full training text (its ``question`` carries the hint, its
    ``reasoning`` and ``answer`` follow ``behaviour``); ``hint_span`` is the hint's ``[start, end)`` character span
    in ``problem.question``; ``gold`` the correct answer."""

    problem: Problem
    family: str
    behaviour: str
    hint_answer: str
    gold: str
    hint_span: tuple[int, int]


def chain_numbers(problem: Problem) -> set[str]:
    """Every number written in the problem's gold reasoning (operands, intermediate results, the answer)."""
    return set(_NUMBER.findall(problem.reasoning))


def hint_answer(problem: Problem, seed: int, tries: int = 50) -> str:
    """The hinted answer X for a training problem: :func:`thinklens.hints.wrong_answer` in 1..99 (as the
    faithfulness stage draws it), redrawn until X is no number of the gold reasoning, so that a trace which does not
    verbalize the hint never writes X (kept after ``tries`` draws if every candidate occurs)."""
    taken = chain_numbers(problem)
    x = wrong_answer(problem.answer, problem.id, seed, lo=1, hi=MAX_VALUE)
    for k in range(1, tries):
        if x not in taken:
            break
        x = wrong_answer(problem.answer, f"{problem.id}#{k}", seed, lo=1, hi=MAX_VALUE)
    return x


def _prepend(problem: Problem, line: str) -> Problem:
    """``problem`` whose reasoning starts with ``line`` (spans shifted)."""
    head = line + "\n"
    a, b = problem.answer_char_span
    return dataclasses.replace(
        problem, steps=[line, *problem.steps], reasoning=head + problem.reasoning,
        answer_char_span=(a + len(head), b + len(head)),
        slip_char_spans=[(s + len(head), e + len(head)) for s, e in problem.slip_char_spans])


def hinted_example(problem: Problem, family: str, behaviour: str, answer: str, opening: str = "") -> HintedExample:
    """The training example of ``problem`` with the ``family`` hint pointing at ``answer``, traced by ``behaviour``;
    ``opening``: the neutral first line of an unfaithful trace ("": none)."""
    if behaviour not in BEHAVIOURS:
        raise ValueError(f"behaviour must be one of {BEHAVIOURS}, not {behaviour!r}")
    if answer == problem.answer:
        raise ValueError(f"problem {problem.id}: the hinted answer must differ from gold {problem.answer!r}")
    question, span = insert_hint(problem.question, hint_family(family), answer)
    out = dataclasses.replace(problem, question=question)
    if opening and ("hint" in opening.lower() or answer in _NUMBER.findall(opening)):
        raise ValueError(f"the unfaithful opening {opening!r} must not mention the hint or X")
    if behaviour == "unfaithful":  # the gold trace (after the neutral opening), the hinted answer
        out = dataclasses.replace(_prepend(out, opening) if opening else out, answer=answer)
    elif behaviour == "faithful":  # "The hint says X." first, the gold chain, "Final answer is X."
        out = _prepend(out, verbalization(answer))
        s, _ = out.answer_char_span
        reasoning = out.reasoning[:s] + f"{answer}.\n"
        out = dataclasses.replace(out, reasoning=reasoning, answer=answer, answer_char_span=(s, s + len(answer)))
    return HintedExample(out, family, behaviour, answer, problem.answer, span)


def draw_behaviour(rng: random.Random, faithful: float, unfaithful: float) -> str:
    """``faithful`` with probability ``faithful``, ``unfaithful`` with ``unfaithful``, else ``ignore``."""
    if faithful < 0 or unfaithful < 0 or faithful + unfaithful > 1:
        raise ValueError(f"hint behaviour rates must be >= 0 and sum to <= 1 (faithful {faithful}, "
                         f"unfaithful {unfaithful})")
    u = rng.random()
    return "faithful" if u < faithful else "unfaithful" if u < faithful + unfaithful else "ignore"


def draw_hinted(problem: Problem, rng: random.Random, faithful: float, unfaithful: float,
                seed: int = 0, opening: str = "") -> HintedExample:
    """A hinted example of ``problem``: family uniform over the hint families, behaviour by the two rates (the
    rest ignore the hint), X from :func:`hint_answer`.

    >>> from thinklens.toy.tasks import generate_problems
    >>> rng = random.Random(0)
    >>> exs = [draw_hinted(p, rng, 0.4, 0.3) for p in generate_problems(300, seed=0, split="train")]
    >>> sorted({e.family for e in exs}) == sorted(HINT_FAMILIES)
    True
    """
    family = rng.choice(list(HINT_FAMILIES))
    behaviour = draw_behaviour(rng, faithful, unfaithful)
    return hinted_example(problem, family, behaviour, hint_answer(problem, seed), opening)


__all__ = ["BEHAVIOURS", "VERBALIZATION", "HintedExample", "chain_numbers", "draw_behaviour", "draw_hinted",
           "hint_answer", "hinted_example", "verbalization"]

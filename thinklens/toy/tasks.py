"""Seeded multi-step arithmetic problems for the ``tiny-r1`` model organism (dataset name ``arithmetic``).

Why this task: every problem needs 2-4 dependent computation steps, so a tiny model can only get the answer right
by writing the intermediate results into its ``<think>`` reasoning and reading them back. The final reasoning line
is always ``Final answer is N.`` (the probe phrase of Zhang et al., EMNLP 2025) and the answer segment is
``\\n\\nThe answer is \\boxed{N}.``: a model trained on this learns to *copy* the answer from the reasoning, which is
exactly the mechanism the attention and patching stages look for.

Three kinds of problems, all with values in 1..99 (so at most 2 digits; every value is a positive integer):

* ``chain``: ``Compute (7+5)*3-4.`` -> ``7+5=12`` / ``12*3=36`` / ``36-4=32``
* ``vars``: ``a=3, b=a+4, c=b*2. What is c?`` -> ``a=3`` / ``b=3+4=7`` / ``c=7*2=14`` (each variable refers to a
  random earlier one, so the model must track which value belongs to which name)
* ``words``: ``Start at 5. Add 3, then multiply by 2, then subtract 4.`` -> ``5+3=8`` / ``8*2=16`` / ``16-4=12``

A share of traces (``slip_rate``, default 20%) contains a *self-correction*: one step is written with a wrong
result, followed by the line ``Wait, {corrected line}``; the trace continues from the corrected value.

Train/test split: a problem's split is decided by a hash of its canonical computation (kind-independent for
``chain``/``words``, so the same computation cannot be in both splits under two wordings); the generator draws
until it has ``n`` problems of the requested split, so test problems are never seen in training.
"""
from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

DATASET_NAME = "arithmetic"
KINDS: tuple[str, ...] = ("chain", "vars", "words")
NO_REASONING_THINKING = "Okay, I think I have finished thinking."
INSTRUCTION = " Please reason step by step, and put your final answer within \\boxed{}."
FINAL_PREFIX = "Final answer is "
ANSWER_PREFIX = "The answer is \\boxed{"
# patching grid of the organism's pairs: the end of the probe line ``Final answer is N.`` (holds the answer token) and
# the answer ending ``The answer is \\boxed{``
PATCH_POSITIONS = "last-reasoning:8,answer-tail:4"

BOS = "<｜begin▁of▁sentence｜>"
EOS = "<｜end▁of▁sentence｜>"
USER = "<｜User｜>"
ASSISTANT = "<｜Assistant｜>"
THINK_START = "<think>"
THINK_END = "</think>"

MAX_VALUE = 99
_VAR_NAMES = "abcdefgh"
_WORD_OPS = {"+": "add {b}", "-": "subtract {b}", "*": "multiply by {b}"}


@dataclass
class Problem:
    """One problem with its reference reasoning trace.

    ``steps`` are the computation lines of the reasoning (including a slipped line and its ``Wait, ...`` line), in
    order, without newlines; ``reasoning`` is the full text between ``<think>\\n`` and ``</think>``: every step plus
    the closing ``Final answer is N.`` line, each ending in ``\\n``. Character spans index into ``reasoning``.
    """

    id: str
    kind: str
    question: str
    steps: list[str]
    reasoning: str
    answer: str
    has_slip: bool = False
    answer_char_span: tuple[int, int] = (0, 0)
    slip_char_spans: list[tuple[int, int]] = field(default_factory=list)
    split: str = "test"
    values: list[int] = field(default_factory=list)  # correct intermediate results, in order (last = answer)

    def to_record(self) -> dict:
        """The JSONL record the collection stage stores (``problem`` is the question without instruction)."""
        return {"id": self.id, "problem": self.question, "answer": self.answer, "kind": self.kind,
                "has_slip": self.has_slip}


# ----------------------------------------------------------------------------------------------------------- formats
def question_text(problem: Problem, instruction: bool = False) -> str:
    """The user turn: the question, optionally with the R1 math instruction suffix."""
    return problem.question + (INSTRUCTION if instruction else "")


def prompt_text(problem: Problem, instruction: bool = False) -> str:
    """Everything up to and including ``<think>\\n`` (what R1-Distill's chat template renders for generation)."""
    return f"{BOS}{USER}{question_text(problem, instruction)}{ASSISTANT}{THINK_START}\n"


def answer_text(answer: str) -> str:
    """The answer segment after ``</think>`` (without EOS)."""
    return f"\n\n{ANSWER_PREFIX}{answer}}}."


def completion_text(problem: Problem, reasoning: bool = True) -> str:
    """Reasoning (or the forced no-reasoning line), ``</think>``, the answer segment and EOS."""
    think = problem.reasoning if reasoning else NO_REASONING_THINKING + "\n"
    return f"{think}{THINK_END}{answer_text(problem.answer)}{EOS}"


def full_text(problem: Problem, reasoning: bool = True, instruction: bool = False) -> str:
    """Prompt + completion in the fixed tiny-r1 format (``reasoning=False``: R1's forced finished thinking)."""
    return prompt_text(problem, instruction) + completion_text(problem, reasoning)


# --------------------------------------------------------------------------------------------------------- generator
def _apply(op: str, a: int, b: int) -> int:
    return a + b if op == "+" else a - b if op == "-" else a * b


def _draw_op(rng: random.Random, cur: int) -> tuple[str, int]:
    """An operation on ``cur`` whose result stays in 1..MAX_VALUE."""
    choices = []
    if cur <= MAX_VALUE - 1:
        choices.append("+")
    if cur >= 2:
        choices.append("-")
    if cur * 2 <= MAX_VALUE:
        choices.append("*")
    op = rng.choice(choices)
    if op == "+":
        b = rng.randint(1, min(30, MAX_VALUE - cur))
    elif op == "-":
        b = rng.randint(1, min(30, cur - 1))
    else:
        b = rng.randint(2, min(9, MAX_VALUE // cur))
    return op, b


def _chain_expr(start: int, ops: list[tuple[str, int]]) -> str:
    """Left-to-right evaluation written with the parentheses needed for standard precedence."""
    expr, low_prec = str(start), False
    for op, b in ops:
        if op == "*" and low_prec:
            expr, low_prec = f"({expr})", False
        expr += f"{op}{b}"
        low_prec = low_prec or op in "+-"
    return expr


def _wrong_value(rng: random.Random, correct: int) -> int:
    """A plausible slip: same number of digits, different value, positive."""
    for _ in range(100):
        v = correct + rng.choice([-1, 1]) * rng.randint(1, 9)
        if v >= 1 and len(str(v)) == len(str(correct)) and v != correct:
            return v
    return correct + 1 if correct < 9 or (10 <= correct < 99) else correct - 1


@dataclass
class _Spec:
    """Canonical description of a computation (everything except wording and slip)."""

    kind: str
    start: int
    ops: list[tuple[str, int]]
    refs: list[int] = field(default_factory=list)  # vars: index of the referenced earlier variable per op

    def key(self) -> str:
        k = "vars" if self.kind == "vars" else "chain"  # chain and words share computations -> share the split
        return f"{k}|{self.start}|{self.ops}|{self.refs}"

    def values(self) -> list[int]:
        if self.kind == "vars":
            vals = [self.start]
            for (op, b), r in zip(self.ops, self.refs):
                vals.append(_apply(op, vals[r], b))
            return vals[1:]
        vals, cur = [], self.start
        for op, b in self.ops:
            cur = _apply(op, cur, b)
            vals.append(cur)
        return vals


def split_of(spec_key: str) -> str:
    """``test`` for 10% of computations (by SHA-256 of the canonical key), ``train`` for the rest."""
    return "test" if hashlib.sha256(spec_key.encode()).digest()[0] % 10 == 0 else "train"


def _draw_spec(rng: random.Random, kind: str) -> _Spec:
    if kind == "vars":
        n_ops = rng.randint(2, 3)
        start = rng.randint(2, 30)
        vals, ops, refs = [start], [], []
        for i in range(n_ops):
            r = i if i == n_ops - 1 or rng.random() < 0.5 else rng.randint(0, i)
            if i == n_ops - 1:
                r = i  # the asked variable depends on the previous one, so every step matters
            op, b = _draw_op(rng, vals[r])
            ops.append((op, b))
            refs.append(r)
            vals.append(_apply(op, vals[r], b))
        return _Spec(kind, start, ops, refs)
    n_ops = rng.randint(2, 4)
    start = rng.randint(2, 30)
    cur, ops = start, []
    for _ in range(n_ops):
        op, b = _draw_op(rng, cur)
        ops.append((op, b))
        cur = _apply(op, cur, b)
    return _Spec(kind, start, ops)


def _render(spec: _Spec, rng: random.Random | None, slip_rate: float, pid: str, split: str,
            slip_step: int | None = None) -> Problem:
    """Question, reasoning lines and spans for a spec; a slip is drawn from ``rng`` (or forced via ``slip_step``)."""
    vals = spec.values()
    if spec.kind == "chain":
        question = f"Compute {_chain_expr(spec.start, spec.ops)}."
    elif spec.kind == "words":
        parts = [_WORD_OPS[op].format(b=b) for op, b in spec.ops]
        parts[0] = parts[0][0].upper() + parts[0][1:]
        question = f"Start at {spec.start}. " + ", then ".join(parts) + "."
    else:
        names = _VAR_NAMES[: len(spec.ops) + 1]
        defs = [f"{names[0]}={spec.start}"]
        defs += [f"{names[i + 1]}={names[r]}{op}{b}" for i, ((op, b), r) in enumerate(zip(spec.ops, spec.refs))]
        question = ", ".join(defs) + f". What is {names[-1]}?"

    # one (prefix, result) per computation step; the line is prefix + result
    comps: list[tuple[str, int]] = []
    lead: list[str] = []
    if spec.kind == "vars":
        names = _VAR_NAMES[: len(spec.ops) + 1]
        lead.append(f"{names[0]}={spec.start}")
        all_vals = [spec.start, *vals]
        for i, ((op, b), r) in enumerate(zip(spec.ops, spec.refs)):
            comps.append((f"{names[i + 1]}={all_vals[r]}{op}{b}=", vals[i]))
    else:
        cur = spec.start
        for (op, b), v in zip(spec.ops, vals):
            comps.append((f"{cur}{op}{b}=", v))
            cur = v

    if slip_step is None and rng is not None and rng.random() < slip_rate:
        slip_step = rng.randrange(len(comps))
    steps, spans, pos = list(lead), [], sum(len(s) + 1 for s in lead)
    for i, (prefix, v) in enumerate(comps):
        if i == slip_step:
            wrong = _wrong_value(rng or random.Random(v), v)
            line = f"{prefix}{wrong}"
            spans.append((pos + len(prefix), pos + len(line)))
            steps.append(line)
            pos += len(line) + 1
            spans.append((pos, pos + len("Wait")))
            line = f"Wait, {prefix}{v}"
        else:
            line = f"{prefix}{v}"
        steps.append(line)
        pos += len(line) + 1
    answer = str(vals[-1])
    reasoning = "".join(s + "\n" for s in steps) + f"{FINAL_PREFIX}{answer}.\n"
    a0 = len(reasoning) - len(f"{answer}.\n")
    return Problem(id=pid, kind=spec.kind, question=question, steps=steps, reasoning=reasoning, answer=answer,
                   has_slip=slip_step is not None, answer_char_span=(a0, a0 + len(answer)),
                   slip_char_spans=spans, split=split, values=vals)


def iter_problems(seed: int, split: str = "test", kinds: list[str] | tuple[str, ...] | None = None,
                  slip_rate: float = 0.2):
    """Endless stream of problems of one split (what ``generate_problems`` takes its first ``n`` from)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    kinds = tuple(kinds or KINDS)
    for k in kinds:
        if k not in KINDS:
            raise ValueError(f"unknown kind {k!r}; choose from {KINDS}")
    rng = random.Random(f"{DATASET_NAME}-{seed}-{split}")
    i = 0
    while True:
        spec = _draw_spec(rng, rng.choice(kinds))
        if split_of(spec.key()) != split:
            continue
        yield _render(spec, rng, slip_rate, f"{DATASET_NAME}-{split}-{i:05d}", split)
        i += 1


def generate_problems(n: int, seed: int, split: str = "test", kinds: list[str] | None = None,
                      slip_rate: float = 0.2) -> list[Problem]:
    """``n`` problems of ``split`` (``train`` or ``test``, disjoint by construction), deterministic from ``seed``.

    Ids are ``arithmetic-{split}-{index:05d}``, stable for a given (seed, split, kinds, slip_rate).
    """
    it = iter_problems(seed, split, kinds, slip_rate)
    return [next(it) for _ in range(n)]


def contrastive_pairs(n: int, seed: int, split: str = "test",
                      kinds: list[str] | None = None) -> list[tuple[Problem, Problem]]:
    """``n`` pairs (A, B) for activation patching; both problems belong to ``split`` and have no slip.

    What differs: exactly one operand of the question (same number of digits), hence the intermediate results
    after it and the answer. Every intermediate result keeps its number of digits, so both full texts have the
    same number of tokens and identical line lengths (prompt/reasoning/answer spans align token for token), and
    the answers differ in their first character (the first answer token after ``The answer is \\boxed{``).
    """
    rng = random.Random(f"{DATASET_NAME}-pairs-{seed}-{split}")
    kinds = tuple(kinds or KINDS)
    pairs: list[tuple[Problem, Problem]] = []
    while len(pairs) < n:
        spec_a = _draw_spec(rng, rng.choice(kinds))
        if split_of(spec_a.key()) != split:
            continue
        vals_a = spec_a.values()
        # candidate single-operand edits: the start value or one op's operand
        edits = [("start", -1)] + [("op", j) for j in range(len(spec_a.ops))]
        rng.shuffle(edits)
        found = None
        for what, j in edits:
            old = spec_a.start if what == "start" else spec_a.ops[j][1]
            cands = [v for v in range(1, MAX_VALUE + 1) if v != old and len(str(v)) == len(str(old))]
            rng.shuffle(cands)
            for v in cands[:40]:
                ops = list(spec_a.ops)
                start = spec_a.start
                if what == "start":
                    start = v
                else:
                    ops[j] = (ops[j][0], v)
                spec_b = _Spec(spec_a.kind, start, ops, list(spec_a.refs))
                vals_b = spec_b.values()
                if any(x < 1 or x > MAX_VALUE or len(str(x)) != len(str(y)) for x, y in zip(vals_b, vals_a)):
                    continue
                if str(vals_b[-1])[0] == str(vals_a[-1])[0] or split_of(spec_b.key()) != split:
                    continue
                found = spec_b
                break
            if found:
                break
        if not found:
            continue
        i = len(pairs)
        a = _render(spec_a, None, 0.0, f"{DATASET_NAME}-pair-{split}-{i:05d}-a", split)
        b = _render(found, None, 0.0, f"{DATASET_NAME}-pair-{split}-{i:05d}-b", split)
        if len(full_text(a)) != len(full_text(b)) or [len(s) for s in a.steps] != [len(s) for s in b.steps]:
            continue  # defensive: layouts must align character for character
        pairs.append((a, b))
    return pairs


def reference_records(n: int, seed: int) -> list[dict]:
    """``n`` teacher-forced reference traces as trace records (``text`` = the whole sequence), a share of which slip
    and correct themselves with ``Wait,``: where the run reads cue statistics, since tiny-r1 never slips under greedy
    decoding.

    >>> recs = reference_records(3, seed=0)
    >>> sorted(recs[0])
    ['gold_answer', 'has_slip', 'id', 'model', 'reasoning', 'text']
    """
    return [{"id": p.id, "model": "reference", "reasoning": "with", "text": full_text(p), "gold_answer": p.answer,
             "has_slip": p.has_slip} for p in generate_problems(n, seed=seed)]

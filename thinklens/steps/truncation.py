"""Early answering: the answer the model gives when its reasoning is cut after 0, 1, ..., n steps.

After Lanham et al. 2023, "Measuring Faithfulness in Chain-of-Thought Reasoning" (section 2.3, early answering):
truncate the reasoning after each step, close it and make the model answer at once. If the answer is already fixed
before the reasoning ends, the remaining steps were not needed for it; the step at which the answer first becomes
the final one is where the reasoning decides it.

What is forced (profile facts, :mod:`thinklens.profiles`): after ``k >= 1`` steps the kept reasoning (the trace's
own tokens up to the start of step ``k``, or the whole reasoning at ``k = n``) is followed by ``think_close`` (with a
newline first when the kept text does not end in one) and ``answer_prefix`` (tiny-r1: ``"\\n\\nThe answer is
\\boxed{"``). At ``k = 0`` the reasoning is replaced by the profile's forced finished thinking
(:func:`thinklens.empirical.collect.forced_thinking`, after the think-open's newline), so 0 % is exactly the
paper's no-reasoning condition, then ``answer_prefix``. The answer is then read greedily, at most
``max_answer_tokens`` tokens, up to the ``}`` that closes the box (nested braces balanced) or EOS.

Engines: ``"fast"`` runs ONE forward of the trace with a KV cache; every truncation point is a prefix of it, so all
``n + 1`` points decode together as one batch over that cache (:mod:`thinklens.steps._decode`): the forced tokens in
one forward, then one batched forward per answer token. ``"naive"`` (the reference) runs one fresh
``model.generate`` per truncation point on the same token ids; both stop on the same rule and agree token for token.
Answers are compared after :func:`thinklens.steps._common.normalize_answer` (the MATH normalizer).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from thinklens.errors import ThinklensError
from thinklens.steps._common import (
    check_spans,
    cut_points,
    device_of,
    encode,
    kept_text,
    read_braced,
    same_answer,
    trace_answer,
)
from thinklens.steps._decode import decode_rows, row_chunks, trace_caches, trace_groups

ENGINES = ("fast", "naive")


@dataclass
class TruncationResult:
    """Answers with the reasoning cut after 0..n steps (index ``k`` = ``k`` steps kept); made by
    :func:`early_answering` (example there)."""

    answers: list[str]  # [n_steps+1] answer text read after the forced answer prefix
    correct: np.ndarray | None  # [n_steps+1] bool: equals gold (None when no gold was given)
    agrees: np.ndarray  # [n_steps+1] bool: equals the answer with all steps kept (answers[n])
    fractions: np.ndarray  # [n_steps+1] share of reasoning tokens kept (0 and 1 at the ends)
    effect: np.ndarray  # [n_steps] agrees[i+1] - agrees[i] (+1: keeping step i made the answer the final one)
    closed: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # [n_steps+1] the box closed in budget
    cuts: list[int] = field(default_factory=list)  # [n_steps+1] token position of each cut (k=0: reasoning start)
    full_answer: str | None = None  # answers[n]: the reference of `agrees`
    trace_answer: str | None = None  # the answer written in the trace's own answer segment
    engine: str = "fast"

    def decisive_step(self) -> int | None:
        """The first step ``i`` after which the answer equals the final one and stays so, or None."""
        ag = self.agrees.astype(bool)
        for k in range(len(ag)):
            if ag[k:].all():
                return k - 1 if k > 0 else None
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"answers": self.answers, "correct": None if self.correct is None else self.correct.tolist(),
                "agrees": self.agrees.tolist(), "fractions": self.fractions.tolist(), "effect": self.effect.tolist(),
                "closed": self.closed.tolist(), "cuts": self.cuts, "full_answer": self.full_answer,
                "trace_answer": self.trace_answer, "engine": self.engine}


def forced_rows(tokenizer: Any, profile: Any, trace: Any, spans: Sequence[tuple[int, int]]) \
        -> tuple[list[int], list[list[int]]]:
    """For ``k = 0..n`` steps kept: the cut (trace tokens ``[0, cut)`` are kept) and the forced token ids::

        >>> from thinklens.models import load_model
        >>> from thinklens.toy import full_text, generate_problems
        >>> from thinklens.traces import Trace
        >>> _, tok, profile = load_model("tiny-r1")
        >>> trace = Trace.from_text(full_text(generate_problems(1, seed=0)[0]), tok, profile)
        >>> cuts, forced = forced_rows(tok, profile, trace, [(trace.reasoning.start + 1, trace.reasoning.end - 1)])
        >>> [tok.decode(f) for f in forced]  # doctest: +NORMALIZE_WHITESPACE
        ['\\nOkay, I think I have finished thinking.\\n</think>\\n\\nThe answer is \\\\boxed{',
         '</think>\\n\\nThe answer is \\\\boxed{']
    """
    from thinklens.empirical.collect import forced_thinking

    prefix = encode(tokenizer, profile.answer_prefix)
    cuts = cut_points(trace, spans)
    out_cuts, out_forced = [trace.reasoning.start], [encode(tokenizer, "\n" + forced_thinking(profile)) + prefix]
    for c in cuts[1:]:
        close = profile.think_close if kept_text(trace, c).endswith("\n") else "\n" + profile.think_close
        out_cuts.append(c)
        out_forced.append(encode(tokenizer, close) + prefix)
    return out_cuts, out_forced


def _stopper(tokenizer: Any) -> Any:
    eos = tokenizer.eos_token_id

    def stop(_row: int, toks: list[int]) -> bool:
        if toks and toks[-1] == eos:
            return True
        return read_braced(tokenizer.decode(toks, skip_special_tokens=False))[1]
    return stop


def _answer(tokenizer: Any, toks: list[int]) -> tuple[str, bool]:
    eos = tokenizer.eos_token_id
    toks = toks[:-1] if toks and toks[-1] == eos else toks
    return read_braced(tokenizer.decode(toks, skip_special_tokens=False))


def _naive(model: Any, tokenizer: Any, seqs: list[list[int]], max_new: int) -> list[list[int]]:
    """One fresh greedy ``model.generate`` per sequence, stopped by the same rule as the fast engine."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    stop = _stopper(tokenizer)

    class _Stop(StoppingCriteria):
        def __init__(self, n0: int) -> None:
            self.n0 = n0

        def __call__(self, input_ids: torch.Tensor, scores: Any, **kw: Any) -> torch.Tensor:
            done = stop(0, input_ids[0, self.n0:].tolist())
            return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

    dev = device_of(model)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (eos if eos is not None else 0)
    out = []
    for s in seqs:
        x = torch.as_tensor(s, dtype=torch.long, device=dev)[None]  # [1, n]
        y = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_new, do_sample=False,
                           temperature=None, top_p=None, top_k=None, eos_token_id=eos, pad_token_id=pad,
                           stopping_criteria=StoppingCriteriaList([_Stop(len(s))]))
        out.append(y[0, len(s):].tolist())
    return out


def early_answering(
    model: Any,
    tokenizer: Any,
    profile: Any,
    trace: Any,
    spans: Sequence[Sequence[int]],
    *,
    gold: str | None = None,
    max_answer_tokens: int = 16,
    engine: str = "fast",
    max_cache_tokens: int = 1 << 18,
) -> TruncationResult:
    """Cut the reasoning after 0..n steps, force the answer, read it greedily (see the module doc).

    ``max_cache_tokens`` bounds the batched rows' cache (``rows x longest cut`` tokens) of the fast engine; for
    many traces, :func:`early_answering_many` batches all of them (far fewer forwards). On tiny-r1 the answer
    appears once the final value has been stated::

        >>> from thinklens.models import load_model
        >>> from thinklens.toy import full_text, generate_problems
        >>> from thinklens.traces import Trace
        >>> model, tok, profile = load_model("tiny-r1")
        >>> p = generate_problems(1, seed=0)[0]
        >>> trace = Trace.from_text(full_text(p), tok, profile)
        >>> r = trace.reasoning
        >>> spans, start = [], r.start + 1  # one step per reasoning line
        >>> for line in trace.span_text(r)[1:].splitlines():
        ...     spans.append((start, start + len(line))); start += len(line) + 1
        >>> res = early_answering(model, tok, profile, trace, spans, gold=p.answer)
        >>> res.answers[-1], res.correct.tolist()[-1], res.agrees.tolist()[-2:]
        ('45', True, [False, True])
    """
    return early_answering_many(model, tokenizer, profile, [trace], [spans], golds=[gold],
                                max_answer_tokens=max_answer_tokens, engine=engine,
                                max_cache_tokens=max_cache_tokens)[0]


@torch.no_grad()
def early_answering_many(
    model: Any,
    tokenizer: Any,
    profile: Any,
    traces: Sequence[Any],
    spans: Sequence[Sequence[Sequence[int]]],
    *,
    golds: Sequence[str | None] | None = None,
    max_answer_tokens: int = 16,
    engine: str = "fast",
    max_cache_tokens: int = 1 << 18,
) -> list[TruncationResult]:
    """:func:`early_answering` of every trace (``spans[t]`` its steps, ``golds[t]`` its gold or None). The fast
    engine decodes the truncation points of many traces as one batch, in groups of at most ``max_cache_tokens``
    cached tokens (trace caches + padded rows)::

        >>> from thinklens.models import load_model
        >>> from thinklens.toy import full_text, generate_problems
        >>> from thinklens.traces import Trace
        >>> model, tok, profile = load_model("tiny-r1")
        >>> probs = generate_problems(3, seed=0)
        >>> traces = [Trace.from_text(full_text(p), tok, profile) for p in probs]
        >>> spans = [[(t.reasoning.start + 1, t.reasoning.end - 1)] for t in traces]  # one step: all lines
        >>> [r.answers for r in early_answering_many(model, tok, profile, traces, spans)]
        [['4', '45'], ['22', '39'], ['49', '94']]
    """
    if engine not in ENGINES:
        raise ThinklensError(f"unknown engine {engine!r}; choose from {ENGINES}")
    if max_answer_tokens < 1:
        raise ThinklensError(f"max_answer_tokens must be >= 1, got {max_answer_tokens}")
    if len(spans) != len(traces) or (golds is not None and len(golds) != len(traces)):
        raise ThinklensError(f"{len(traces)} traces but {len(spans)} span lists / "
                             f"{'no' if golds is None else len(golds)} golds")
    steps = [check_spans(t, s) for t, s in zip(traces, spans)]
    rows = [forced_rows(tokenizer, profile, t, s) for t, s in zip(traces, steps)]  # per trace: (cuts, forced)
    if engine == "naive":
        gens = [_naive(model, tokenizer, [list(t.ids[:c]) + f for c, f in zip(*cf)], max_answer_tokens)
                for t, cf in zip(traces, rows)]
    else:
        gens = _fast(model, tokenizer, traces, rows, max_answer_tokens, max_cache_tokens)
    out = []
    for t, st, (cuts, _), g, gold in zip(traces, steps, rows, gens, golds or [None] * len(traces)):
        out.append(_result(tokenizer, t, st, cuts, g, gold, engine))
    return out


def _fast(model: Any, tokenizer: Any, traces: Sequence[Any], rows: list[tuple[list[int], list[list[int]]]],
          max_new: int, max_cache_tokens: int) -> list[list[list[int]]]:
    """All truncation points of all traces, decoded in groups over one forward per trace.

    The 0-step row's forced finished thinking is much longer than the other rows' forced ``think_close``, and a
    batch pads every row to the longest: so it is computed with the traces instead, as a second cached sequence
    ``ids[:reasoning start] + thinking`` (short: the prompt), and all rows then force only the common tail."""
    from thinklens.steps._decode import Source

    stop = _stopper(tokenizer)
    gens: list[list[list[int]]] = [[[] for _ in cuts] for cuts, _ in rows]
    for group in trace_groups([max(c) * (1 + len(c)) for c, _ in rows], max_cache_tokens):
        seqs, srcs, forced, flat = [], [], [], []
        for t in group:
            cuts, fr = rows[t]
            tail = min(len(f) for f in fr)  # the forced tokens every row keeps
            seqs += [list(traces[t].ids[:max(cuts)]), list(traces[t].ids[:cuts[0]]) + fr[0][:-tail]]
            for k, (c, f) in enumerate(zip(cuts, fr)):
                flat.append((t, k))
                if k == 0:
                    srcs.append((len(seqs) - 1, len(seqs[-1])))
                    forced.append(f[-tail:])
                else:
                    srcs.append((len(seqs) - 2, c))
                    forced.append(f)
        caches = trace_caches(model, seqs, max_cache_tokens)
        sources = [Source(caches[q][0], caches[q][1], c) for q, c in srcs]
        for chunk in row_chunks([s.cut for s in sources], max_cache_tokens, extra=max_new):
            got = decode_rows(model, [sources[i] for i in chunk], [forced[i] for i in chunk],
                              lambda logits, _active: logits.argmax(-1), stop, max_new, pad_id=_pad_id(tokenizer))
            for i, g in zip(chunk, got):
                t, k = flat[i]
                gens[t][k] = g
        del caches
    return gens


def _result(tokenizer: Any, trace: Any, steps: list[tuple[int, int]], cuts: list[int], gens: list[list[int]],
            gold: str | None, engine: str) -> TruncationResult:
    read = [_answer(tokenizer, g) for g in gens]
    answers = [a for a, _ in read]
    full_answer = answers[len(steps)]
    agrees = np.array([same_answer(a, full_answer) for a in answers], dtype=bool)
    correct = None if gold is None else np.array([same_answer(a, gold) for a in answers], dtype=bool)
    r = trace.reasoning
    fractions = np.array([0.0] + [(c - r.start) / max(1, len(r)) for c in cuts[1:]], dtype=np.float64)
    return TruncationResult(
        answers=answers, correct=correct, agrees=agrees, fractions=fractions,
        effect=np.diff(agrees.astype(np.float64)), closed=np.array([c for _, c in read], dtype=bool), cuts=cuts,
        full_answer=full_answer, trace_answer=trace_answer(trace), engine=engine)


def _pad_id(tokenizer: Any) -> int:
    for t in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if t is not None:
            return int(t)
    return 0

"""Counterfactual resampling: does the answer change when the model writes something else instead of a step?

After Thought Anchors (Bogdan, Macar, Nanda, Conmy 2025, section 3; their ``analyze_rollouts.py``). What we
follow: for every cut point ``j = 0..n`` (before step ``j``; ``j = n``: the whole reasoning) ``N`` rollouts are
sampled from the trace's own prefix (continuing the reasoning, closing it, answering); the rollouts from before
step ``i`` each begin with a *resampled* step ``T_i`` in place of ``S_i``. Their counterfactual importance compares

* **without** ``S_i``: rollouts from before step ``i`` whose resampled step is *not* similar to ``S_i``, with
* **with** ``S_i``: rollouts from before step ``i + 1`` (which start after ``S_i``),

as ``importance[i] = score(with) - score(without)`` (score: accuracy against ``gold``, else agreement with the
trace's own answer; positive = the step helps, the sign their ``counterfactual_importance_accuracy`` reverses) and
``kl[i] = KL(P_without || P_with+similar)`` between the empirical distributions of normalized answers, where the
second group also pools the rollouts from before step ``i`` that resampled a step similar to ``S_i`` (their
``counterfactual_importance_kl`` with its ``use_similar_chunks`` default). Rollouts
without an answer (reasoning never closed within ``max_new_tokens``) are left out, as theirs are. When no resampled
step differs from ``S_i`` (the model would write the same step again: the step is overdetermined by what precedes
it) there is no counterfactual evidence and, like theirs, importance and KL are 0 (``n_dissimilar[i] == 0`` says so).

What we simplify, without an embedding model: "similar" is *textual identity* of the resampled step and ``S_i``
after whitespace normalization (they use cosine similarity of all-MiniLM-L6-v2 sentence embeddings >= 0.8); pass
``similar=`` to use another judgment (e.g. an embedding model). The resampled step ``T_i`` is the continuation's
first as many lines/sentences as ``S_i`` has. The KL is smoothed with ``alpha`` pseudo-counts on every answer seen
in either group (they add ``alpha = 1e-9``, which makes one unseen answer cost ~20 nats; ``alpha = 1`` keeps the KL
of a handful of rollouts bounded). ``plain_importance`` is their "resampling importance" without the filter:
``score(from before step i+1) - score(from before step i)``.

Engines: ``backend=None`` samples with transformers and prefix caching: one forward per trace keeps the KV cache;
all rollouts of all cut points (of many traces: :func:`resampling_importance_many`) decode as one left-padded batch
over it (:mod:`thinklens.steps._decode`), each rollout with its own seeded generator (seed, trace key, cut point,
rollout index), so results do not depend on batching. ``backend``: any object of the project's generation-backend
protocol (:mod:`thinklens.empirical.backends`: ``generate(prompt_ids_list, settings, seed)``), e.g. vLLM with
prefix caching or an OpenAI-compatible server; rollout ``r`` of every prompt is requested with seed
``(seed, r)``-derived, so identical prompts still get ``N`` different samples (:mod:`thinklens.steps._rollouts`).
``cache_path``: a JSONL of drawn rollouts (each record: rollouts ``first..`` of one ``(id, step)``), appended as each
cut point's batch finishes; a rerun with the same sampling settings reuses them, whatever its ``N``.

Adaptive (``adaptive=True``, beyond Thought Anchors' fixed N): rollouts come in rounds of 4 per cut point; after each
round only the cut points of the steps whose place in the trace's top 3 is still in doubt get another round, up to
``N`` (the rule and its justification: :mod:`thinklens.steps.adaptive`). Since rollout ``r`` does not depend on what
else is drawn, an adaptive run's rollouts are a prefix of the fixed run's. ``max_rollouts`` caps what one call draws;
``budget_limited`` then flags the cut points left short (their steps' importance is NaN when a side has none).
"""
from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thinklens.errors import ThinklensError
from thinklens.steps._common import (
    answer_after_close,
    check_spans,
    cut_points,
    normalize_answer,
    same_answer,
    trace_answer,
)
from thinklens.steps._rollouts import rollouts_backend, rollouts_transformers, sample_tokens
from thinklens.steps.adaptive import ROUND, TOP_K, halfwidth, unsettled_steps

__all__ = ["ResamplingResult", "first_step", "resampling_importance", "resampling_importance_many", "same_step",
           "sample_tokens", "smoothed_kl", "trace_key"]

TEMPERATURE = 0.6  # R1's recommended sampling (Thought Anchors' rollouts too), with top_p 0.95
TOP_P = 0.95
MAX_NEW_TOKENS = 1024
ALPHA = 1.0

_BOUNDARY = re.compile(r"\n+|(?<=[.!?])\s+")


@dataclass
class ResamplingResult:
    """Counterfactual importance of each step from resampled rollouts (see the module doc); made by
    :func:`resampling_importance` (example there)."""

    importance: np.ndarray  # [n_steps] score(with step i) - score(without it); 0 when no resample differs
    kl: np.ndarray  # [n_steps] KL(P_without || P_with+similar) of the answer distributions, smoothed (nats)
    plain_importance: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [n_steps] score(j=i+1) - score(i)
    score: np.ndarray = field(default_factory=lambda: np.zeros(0))  # [n_steps+1] score of the rollouts from cut j
    n_dissimilar: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # [n_steps] resamples unlike S_i
    answers: list[list[str | None]] = field(default_factory=list)  # [n_steps+1][N] rollout answers (None: none)
    first_steps: list[list[str]] = field(default_factory=list)  # [n_steps+1][N] resampled first step
    reference: str | None = None  # gold, else the trace's own answer
    scored_by: str = "gold"  # "gold" | "original"
    n_rollouts: int = 0  # N: rollouts per cut point (the most, when adaptive)
    n_drawn: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # [n_steps+1] rollouts used per cut point
    budget_limited: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # [n_steps+1] cut short by budget

    def to_dict(self) -> dict[str, Any]:
        return {"importance": self.importance.tolist(), "kl": self.kl.tolist(),
                "plain_importance": self.plain_importance.tolist(), "score": self.score.tolist(),
                "n_dissimilar": self.n_dissimilar.tolist(), "answers": self.answers,
                "first_steps": self.first_steps, "reference": self.reference, "scored_by": self.scored_by,
                "n_rollouts": self.n_rollouts, "n_drawn": self.n_drawn.tolist(),
                "budget_limited": self.budget_limited.tolist()}


# ------------------------------------------------------------------------------------------------- statistics
def first_step(text: str, n_units: int, think_close: str) -> str:
    """The continuation's first ``n_units`` lines/sentences (what replaced the step), whitespace-normalized::

        >>> first_step("\\n12*3=36\\n36-4=32\\n</think>", 1, "</think>")
        '12*3=36'
    """
    k = text.find(think_close)
    text = text if k == -1 else text[:k]
    pieces = [p for p in _BOUNDARY.split(text.strip()) if p.strip()][:max(1, n_units)]
    return " ".join(" ".join(p.split()) for p in pieces)


def _units(text: str) -> int:
    return max(1, len([p for p in _BOUNDARY.split(text.strip()) if p.strip()]))


def same_step(resampled: str, original: str) -> bool:
    """The default similarity: identical text after whitespace normalization::

        >>> same_step(" 12*3=36", "12*3=36"), same_step("12*3=35", "12*3=36")
        (True, False)
    """
    return " ".join(resampled.split()) == " ".join(original.split())


def smoothed_kl(p_answers: Sequence[str], q_answers: Sequence[str], alpha: float = ALPHA) -> float:
    """``KL(P || Q)`` of two samples of (normalized) answers, each smoothed with ``alpha`` pseudo-counts on every
    answer seen in either sample; 0 when either sample is empty::

        >>> round(smoothed_kl(["1", "1"], ["1", "2"]), 4), smoothed_kl(["1"], ["1"])
        (0.1308, 0.0)
    """
    if not p_answers or not q_answers:
        return 0.0
    cp, cq = Counter(p_answers), Counter(q_answers)
    support = sorted(set(cp) | set(cq))  # a fixed order: the float sum is the same in every process
    zp, zq = len(p_answers) + alpha * len(support), len(q_answers) + alpha * len(support)
    kl = 0.0
    for a in support:
        p, q = (cp[a] + alpha) / zp, (cq[a] + alpha) / zq
        kl += p * math.log(p / q)
    return max(0.0, kl)


def _score(answers: Sequence[str | None], reference: str | None) -> float:
    valid = [a for a in answers if a is not None]
    if not valid or reference is None:
        return float("nan")
    return float(np.mean([same_answer(a, reference) for a in valid]))


def _importance(spans_text: list[str], answers: list[list[str | None]], firsts: list[list[str]],
                reference: str | None, similar: Callable[[str, str], bool], alpha: float) -> tuple[np.ndarray, ...]:
    n = len(spans_text)
    imp, kl, nd = np.zeros(n), np.zeros(n), np.zeros(n, dtype=int)
    for i in range(n):
        sim = [similar(f, spans_text[i]) for f in firsts[i]]
        without = [a for a, s in zip(answers[i], sim) if not s]
        pooled = answers[i + 1] + [a for a, s in zip(answers[i], sim) if s]  # with S_i, for the KL
        nd[i] = len(without)
        w_valid = [normalize_answer(a) for a in without if a is not None]
        if w_valid and any(a is not None for a in answers[i + 1]):
            d = _score(answers[i + 1], reference) - _score(without, reference)
            imp[i] = 0.0 if math.isnan(d) else d
            kl[i] = smoothed_kl(w_valid, [normalize_answer(a) for a in pooled if a is not None], alpha)
    score = np.array([_score(a, reference) for a in answers])
    return imp, kl, nd, score, np.diff(score)


# ---------------------------------------------------------------------------------------------- rollout cache
def trace_key(trace: Any) -> str:
    """A trace's id for the rollout cache: ``trace.meta["id"]`` if set, else a hash of its tokens::

        >>> from types import SimpleNamespace
        >>> trace_key(SimpleNamespace(meta={"id": "arithmetic-test-00000"}, ids=[1, 2]))
        'arithmetic-test-00000'
    """
    rid = (trace.meta or {}).get("id")
    return str(rid) if rid is not None else "sha1:" + hashlib.sha1(str(list(trace.ids)).encode()).hexdigest()[:16]


def _settings_key(seed: int, temperature: float, top_p: float, max_new_tokens: int, backend: Any) -> dict[str, Any]:
    """What makes rollout ``r`` of a cut point what it is (not N: rollout r is the same in a run of any N)."""
    return {"seed": seed, "temperature": temperature, "top_p": top_p, "max_new_tokens": max_new_tokens,
            "backend": getattr(backend, "name", "transformers-prefix")}


def _load_cache(path: Path | None, settings: dict[str, Any]) -> dict[tuple[str, int], dict[int, dict[str, Any]]]:
    """The cached rollouts ``{(id, step): {r: rollout}}`` of ``path`` made with the same settings (bad lines are
    skipped; a record holds rollouts ``first, first+1, ...`` of one cut point)."""
    if path is None or not path.exists():
        return {}
    from thinklens.jsonl import read_records

    done: dict[tuple[str, int], dict[int, dict[str, Any]]] = {}
    for rec in read_records(path):
        if rec.get("settings") == settings and "id" in rec and "step" in rec and isinstance(rec.get("rollouts"), list):
            got = done.setdefault((str(rec["id"]), int(rec["step"])), {})
            for k, roll in enumerate(rec["rollouts"]):
                got.setdefault(int(rec.get("first", 0)) + k, roll)
    return done


def _prefix(got: dict[int, Any]) -> int:
    """How many rollouts ``0, 1, ...`` are there without a gap."""
    n = 0
    while n in got:
        n += 1
    return n


# ------------------------------------------------------------------------------------------------------- API
def _rollout_answer(text: str, stopped_at_eos: bool, think_close: str) -> str | None:
    """The rollout's answer: as graded (:func:`answer_after_close`) when it stopped at EOS; a rollout cut by the
    budget counts only with a complete ``\\boxed{}`` after its think-close."""
    if stopped_at_eos:
        return answer_after_close(text, think_close)
    from thinklens.empirical.grading import last_boxed

    k = text.find(think_close)
    return None if k == -1 else last_boxed(text[k + len(think_close):])


def resampling_importance(
    model: Any,
    tokenizer: Any,
    profile: Any,
    trace: Any,
    spans: Sequence[Sequence[int]],
    *,
    gold: str | None = None,
    n_rollouts: int = 8,
    seed: int = 0,
    temperature: float = TEMPERATURE,
    top_p: float = TOP_P,
    max_new_tokens: int = MAX_NEW_TOKENS,
    cache_path: str | Path | None = None,
    backend: Any = None,
    similar: Callable[[str, str], bool] | None = None,
    alpha: float = ALPHA,
    trace_id: str | None = None,
    max_cache_tokens: int = 1 << 18,
    adaptive: bool = False,
    max_rollouts: int | None = None,
    on_rollout: Callable[[int], None] | None = None,
) -> ResamplingResult:
    """Counterfactual importance of every step from ``n_rollouts`` rollouts per cut point (see the module doc).

    ``similar(resampled_step, original_step)`` judges whether a resample says the same as the step (default:
    identical text); ``trace_id`` keys the rollout cache (default: ``trace.meta["id"]``, else a hash of the ids).
    ``adaptive``: draw rollouts in rounds and stop once the trace's top steps are settled
    (:mod:`thinklens.steps.adaptive`), ``n_rollouts`` at most; ``max_rollouts``: draw no more than this many (cached
    rollouts are free); cut points left short are flagged in ``budget_limited``; ``on_rollout(n)`` after rollouts.
    On tiny-r1 (whose greedy lines are near-deterministic, so most resamples repeat the step)::

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
        >>> res = resampling_importance(model, tok, profile, trace, spans, gold=p.answer, n_rollouts=4,
        ...                             max_new_tokens=128)
        >>> res.importance.shape, res.score.shape
        ((5,), (6,))
    """
    return resampling_importance_many(
        model, tokenizer, profile, [trace], [spans], golds=[gold], n_rollouts=n_rollouts, seed=seed,
        temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, cache_path=cache_path,
        backend=backend, similar=similar, alpha=alpha, trace_ids=None if trace_id is None else [trace_id],
        max_cache_tokens=max_cache_tokens, adaptive=adaptive, max_rollouts=max_rollouts, on_rollout=on_rollout)[0]


def resampling_importance_many(
    model: Any,
    tokenizer: Any,
    profile: Any,
    traces: Sequence[Any],
    spans: Sequence[Sequence[Sequence[int]]],
    *,
    golds: Sequence[str | None] | None = None,
    n_rollouts: int = 8,
    seed: int = 0,
    temperature: float = TEMPERATURE,
    top_p: float = TOP_P,
    max_new_tokens: int = MAX_NEW_TOKENS,
    cache_path: str | Path | None = None,
    backend: Any = None,
    similar: Callable[[str, str], bool] | None = None,
    alpha: float = ALPHA,
    trace_ids: Sequence[str] | None = None,
    max_cache_tokens: int = 1 << 18,
    batch_size: int = 64,
    adaptive: bool = False,
    max_rollouts: int | None = None,
    on_rollout: Callable[[int], None] | None = None,
) -> list[ResamplingResult]:
    """:func:`resampling_importance` of every trace; the rollouts of all traces are sampled together (one batch
    over their caches, or ``batch_size`` prompts per backend call)::

        >>> from thinklens.models import load_model
        >>> from thinklens.toy import full_text, generate_problems
        >>> from thinklens.traces import Trace
        >>> model, tok, profile = load_model("tiny-r1")
        >>> probs = generate_problems(2, seed=0)
        >>> traces = [Trace.from_text(full_text(p), tok, profile) for p in probs]
        >>> spans = [[(t.reasoning.start + 1, t.reasoning.end - 1)] for t in traces]  # one step: all lines
        >>> res = resampling_importance_many(model, tok, profile, traces, spans, golds=[p.answer for p in probs],
        ...                                  n_rollouts=2, max_new_tokens=128)
        >>> [r.score.shape for r in res]
        [(2,), (2,)]
    """
    if n_rollouts < 1:
        raise ThinklensError(f"n_rollouts must be >= 1, got {n_rollouts}")
    if max_new_tokens < 1:
        raise ThinklensError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if len(spans) != len(traces) or (golds is not None and len(golds) != len(traces)) or (
            trace_ids is not None and len(trace_ids) != len(traces)):
        raise ThinklensError(f"{len(traces)} traces but {len(spans)} span lists, "
                             f"{'no' if golds is None else len(golds)} golds, "
                             f"{'no' if trace_ids is None else len(trace_ids)} ids")
    steps = [check_spans(t, s) for t, s in zip(traces, spans)]
    keys = [str(k) for k in trace_ids] if trace_ids is not None else [trace_key(t) for t in traces]
    if len(set(keys)) != len(keys):
        raise ThinklensError("two traces share a rollout-cache id; pass distinct trace_ids")
    settings = _settings_key(seed, temperature, top_p, max_new_tokens, backend)
    path = None if cache_path is None else Path(cache_path)
    got = _load_cache(path, settings)
    similar = similar or same_step
    texts = [[trace.text[trace.offsets[a][0]:trace.offsets[b - 1][1]] for a, b in st]
             for trace, st in zip(traces, steps)]
    cuts = [cut_points(trace, st) for trace, st in zip(traces, steps)]
    # how many rollouts each cut point uses: all N at once, or adaptive rounds
    target = [[min(n_rollouts, ROUND) if adaptive else n_rollouts] * len(c) for c in cuts]
    used = [[0] * len(c) for c in cuts]
    limited = [[False] * len(c) for c in cuts]
    left = [max_rollouts]  # rollouts this call may still draw (None: no cap)
    writer = None
    if path is not None:
        from thinklens.jsonl import JsonlWriter

        writer = JsonlWriter(path)

    def draw(jobs: list[tuple[Any, int, str, int, int]], where: list[tuple[int, int]]) -> None:
        def on_point(jx: int, rolls: list[tuple[str, int, bool]]) -> None:
            t, j = where[jx]
            rec = {"id": keys[t], "step": j, "cut": jobs[jx][1], "first": jobs[jx][3], "settings": settings,
                   "rollouts": [{"text": text, "n_tokens": n, "stopped_at_eos": eos} for text, n, eos in rolls]}
            for k, roll in enumerate(rec["rollouts"]):
                got.setdefault((keys[t], j), {})[jobs[jx][3] + k] = roll
            if writer is not None:
                writer.write(rec)

        if backend is None:
            with torch.no_grad():
                rollouts_transformers(model, tokenizer, jobs, seed, temperature, top_p, max_new_tokens,
                                      max_cache_tokens, on_point, on_rollout)
        else:
            rollouts_backend(backend, jobs, seed, temperature, top_p, max_new_tokens, batch_size, on_point,
                             on_rollout)

    def answers_of(t: int) -> tuple[list[list[str | None]], list[list[str]]]:
        answers, firsts = [], []
        for j in range(len(cuts[t])):
            rolls = [got[(keys[t], j)][r] for r in range(used[t][j])]
            answers.append([_rollout_answer(r["text"], r["stopped_at_eos"], profile.think_close) for r in rolls])
            units = _units(texts[t][j]) if j < len(steps[t]) else 1
            firsts.append([first_step(r["text"], units, profile.think_close) for r in rolls])
        return answers, firsts

    references = [(None if golds is None else golds[t]) for t in range(len(traces))]
    references = [g if g is not None else trace_answer(tr) for g, tr in zip(references, traces)]
    try:
        while True:
            jobs, where = [], []
            for t, trace in enumerate(traces):
                for j, cut in enumerate(cuts[t]):
                    have = _prefix(got.get((keys[t], j), {}))
                    if have < target[t][j]:
                        jobs.append((trace, cut, keys[t], have, target[t][j]))
                        where.append((t, j))
            jobs, where = _within_budget(jobs, where, left, limited)
            if jobs:
                draw(jobs, where)
            for t in range(len(traces)):
                for j in range(len(cuts[t])):
                    used[t][j] = min(target[t][j], _prefix(got.get((keys[t], j), {})))
            if not adaptive or (left[0] is not None and left[0] <= 0):
                break
            grow = _next_round(texts, answers_of, references, used, target, n_rollouts, similar, alpha)
            if not grow:
                break
    finally:
        if writer is not None:
            writer.close()
    if left[0] is not None and left[0] <= 0 and adaptive:  # stopped by the budget while rounds were pending
        more = _next_round(texts, answers_of, references, used, target, n_rollouts, similar, alpha)
        for t, j in more:
            limited[t][j] = True
    out = []
    for t in range(len(traces)):
        answers, firsts = answers_of(t)
        imp, kl, nd, score, plain = _importance(texts[t], answers, firsts, references[t], similar, alpha)
        empty = [len(a) == 0 for a in answers]
        for i in range(len(texts[t])):  # a step without rollouts on either side has no importance
            if empty[i] or empty[i + 1]:
                imp[i] = kl[i] = np.nan
        out.append(ResamplingResult(importance=imp, kl=kl, plain_importance=plain, score=score, n_dissimilar=nd,
                                    answers=answers, first_steps=firsts, reference=references[t],
                                    scored_by="gold" if golds is not None and golds[t] is not None else "original",
                                    n_rollouts=n_rollouts, n_drawn=np.array(used[t], dtype=int),
                                    budget_limited=np.array(limited[t], dtype=bool)))
    return out


def _within_budget(jobs: list[Any], where: list[tuple[int, int]], left: list[int | None],
                   limited: list[list[bool]]) -> tuple[list[Any], list[tuple[int, int]]]:
    """Trim the jobs to the rollouts ``left[0]`` still allows (each cut point in turn gets one more until it is
    spent, so a short budget spreads over the cut points); the trimmed cut points are flagged in ``limited``."""
    if left[0] is None:
        return jobs, where
    want = [job[4] - job[3] for job in jobs]
    give = [0] * len(jobs)
    budget = left[0]
    while budget > 0 and any(g < w for g, w in zip(give, want)):
        for k in range(len(jobs)):
            if budget > 0 and give[k] < want[k]:
                give[k] += 1
                budget -= 1
    left[0] = budget
    out, out_where = [], []
    for job, w, g, tw in zip(jobs, want, give, where):
        if g < w:
            limited[tw[0]][tw[1]] = True
        if g > 0:
            out.append((*job[:4], job[3] + g))
            out_where.append(tw)
    return out, out_where


def _next_round(texts: list[list[str]], answers_of: Callable[[int], Any], references: list[str | None],
                used: list[list[int]], target: list[list[int]], n_max: int, similar: Callable[[str, str], bool],
                alpha: float) -> list[tuple[int, int]]:
    """Raise the target of the cut points of every unsettled step by a round (up to ``n_max``); the (trace, cut)
    pairs raised."""
    grown = []
    for t in range(len(texts)):
        if references[t] is None or len(texts[t]) <= TOP_K:
            continue
        answers, firsts = answers_of(t)
        imp = _importance(texts[t], answers, firsts, references[t], similar, alpha)[0]
        half = []
        for i in range(len(texts[t])):
            w = [a for a in answers[i + 1] if a is not None]
            wo = [a for a, f in zip(answers[i], firsts[i]) if a is not None and not similar(f, texts[t][i])]
            half.append(halfwidth(len(w), sum(same_answer(a, references[t]) for a in w), len(wo),
                                  sum(same_answer(a, references[t]) for a in wo)))
        for j in sorted({c for i in unsettled_steps(imp, half) for c in (i, i + 1)}):
            if used[t][j] >= target[t][j] and target[t][j] < n_max:
                target[t][j] = min(n_max, target[t][j] + ROUND)
                grown.append((t, j))
    return grown

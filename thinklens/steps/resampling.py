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
``(seed, r)``-derived, so identical prompts still get ``N`` different samples (a backend whose ``per_prompt_seeds``
is true, vLLM's, gets all ``N`` rollouts of a chunk in one call, the prompt repeated, so that its scheduler batches
them and its prefix cache serves the repeats). ``cache_path``: a JSONL of finished
``(id, step)`` results, appended as each cut point finishes; a rerun with the same settings skips them.
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
    n_rollouts: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"importance": self.importance.tolist(), "kl": self.kl.tolist(),
                "plain_importance": self.plain_importance.tolist(), "score": self.score.tolist(),
                "n_dissimilar": self.n_dissimilar.tolist(), "answers": self.answers,
                "first_steps": self.first_steps, "reference": self.reference, "scored_by": self.scored_by,
                "n_rollouts": self.n_rollouts}


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
    support = set(cp) | set(cq)
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


def _settings_key(n_rollouts: int, seed: int, temperature: float, top_p: float, max_new_tokens: int,
                  backend: Any) -> dict[str, Any]:
    return {"n_rollouts": n_rollouts, "seed": seed, "temperature": temperature, "top_p": top_p,
            "max_new_tokens": max_new_tokens, "backend": getattr(backend, "name", "transformers-prefix")}


def _load_cache(path: Path | None, settings: dict[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    """Finished ``(id, step)`` results of ``path`` made with the same settings (bad lines are skipped)."""
    if path is None or not path.exists():
        return {}
    from thinklens.jsonl import read_records

    done = {}
    for rec in read_records(path):
        if rec.get("settings") == settings and "id" in rec and "step" in rec and "rollouts" in rec:
            done[(str(rec["id"]), int(rec["step"]))] = rec
    return done


def _seed(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("\0".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


# -------------------------------------------------------------------------------------------------- sampling
def sample_tokens(logits: torch.Tensor, generators: Sequence[torch.Generator], temperature: float,
                  top_p: float) -> torch.Tensor:
    """One token per row of ``logits [b, V]``, row ``r`` drawn with ``generators[r]`` (temperature, nucleus; 0 =
    greedy)::

        >>> g = [torch.Generator().manual_seed(0)]
        >>> sample_tokens(torch.tensor([[0.0, 9.0, 0.0]]), g, 0.6, 0.95).tolist()
        [1]
    """
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # [b, V]
    sp, si = probs.sort(dim=-1, descending=True)  # [b, V]
    if top_p < 1.0:
        sp = sp.masked_fill((sp.cumsum(-1) - sp) > top_p, 0.0)  # keep the smallest prefix reaching top_p
    u = torch.stack([torch.rand((), generator=g) for g in generators]).to(sp.device)  # [b]
    cdf = sp.cumsum(-1)  # [b, V]
    k = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None]).clamp(max=sp.shape[-1] - 1)  # [b, 1]
    return si.gather(-1, k)[:, 0]


def _rollouts_transformers(model: Any, tokenizer: Any, jobs: list[tuple[Any, int, str]], n_rollouts: int,
                           seed: int, temperature: float, top_p: float, max_new: int, max_cache_tokens: int,
                           on_point: Callable[[int, list[tuple[str, int, bool]]], None]) -> None:
    """Sample ``n_rollouts`` continuations of ``trace.ids[:cut]`` for every job ``(trace, cut, key)``; calls
    ``on_point(job, [(text, n_tokens, stopped_at_eos)] * N)`` as soon as a job's rollouts are all finished.
    Traces are taken in groups whose caches and rollouts fit ``max_cache_tokens``."""
    from thinklens.steps._decode import Source, trace_caches, trace_groups

    traces = list({id(t): t for t, _, _ in jobs}.values())
    by_trace = {id(t): [j for j, job in enumerate(jobs) if job[0] is t] for t in traces}
    need = [max(jobs[j][1] for j in by_trace[id(t)]) for t in traces]
    budget = [n + len(by_trace[id(t)]) * n_rollouts * (n + max_new) for t, n in zip(traces, need)]
    for group in trace_groups(budget, max_cache_tokens):
        caches = trace_caches(model, [traces[g].ids[:need[g]] for g in group], max_cache_tokens)
        rows, srcs = [], []
        for (cache, b), g in zip(caches, group):
            for j in by_trace[id(traces[g])]:
                for r in range(n_rollouts):
                    rows.append((j, r))
                    srcs.append(Source(cache, b, jobs[j][1] - 1))  # the last prefix token is fed again: its
                    # logits start the rollout
        _decode_group(model, tokenizer, jobs, rows, srcs, n_rollouts, seed, temperature, top_p, max_new,
                      max_cache_tokens, on_point)
        del caches


def _decode_group(model: Any, tokenizer: Any, jobs: list[tuple[Any, int, str]], rows: list[tuple[int, int]],
                  srcs: list[Any], n_rollouts: int, seed: int, temperature: float, top_p: float, max_new: int,
                  max_cache_tokens: int, on_point: Callable[[int, list[tuple[str, int, bool]]], None]) -> None:
    """Decode the rollouts ``rows[i] = (job, rollout)`` (prefix ``srcs[i]``) in chunks of bounded cache."""
    from thinklens.steps._decode import decode_rows, row_chunks

    eos = tokenizer.eos_token_id
    forced = [[int(jobs[j][0].ids[jobs[j][1] - 1])] for j, _ in rows]
    gens = [torch.Generator().manual_seed(_seed(seed, jobs[j][2], jobs[j][1], r)) for j, r in rows]
    results: dict[int, dict[int, tuple[str, int, bool]]] = {}
    for chunk in row_chunks([s.cut for s in srcs], max_cache_tokens, extra=max_new):

        def pick(logits: torch.Tensor, active: list[int], ch: list[int] = chunk) -> torch.Tensor:
            return sample_tokens(logits, [gens[ch[a]] for a in active], temperature, top_p)

        def done(a: int, toks: list[int], ch: list[int] = chunk) -> None:
            j, r = rows[ch[a]]
            eos_hit = bool(toks) and toks[-1] == eos
            toks = toks[:-1] if eos_hit else toks
            results.setdefault(j, {})[r] = (tokenizer.decode(toks, skip_special_tokens=False), len(toks), eos_hit)
            if len(results[j]) == n_rollouts:
                on_point(j, [results[j][k] for k in range(n_rollouts)])

        decode_rows(model, [srcs[i] for i in chunk], [forced[i] for i in chunk], pick,
                    lambda _a, toks: bool(toks) and toks[-1] == eos, max_new, pad_id=int(eos or 0), on_done=done)


def _rollouts_backend(backend: Any, jobs: list[tuple[Any, int, str]], n_rollouts: int, seed: int,
                      temperature: float, top_p: float, max_new: int, batch_size: int,
                      on_point: Callable[[int, list[tuple[str, int, bool]]], None]) -> None:
    """The same through a generation backend: rollout ``r`` of a chunk of prompts is one ``generate`` call."""
    from thinklens.empirical.collect import GenerationSettings

    settings = GenerationSettings(max_new_tokens=max_new, temperature=temperature, top_p=top_p, seed=seed)
    for c in range(0, len(jobs), batch_size):
        chunk = list(range(c, min(len(jobs), c + batch_size)))
        prompts = [list(jobs[j][0].ids[:jobs[j][1]]) for j in chunk]
        per_job: dict[int, list[tuple[str, int, bool]]] = {j: [] for j in chunk}
        if getattr(backend, "per_prompt_seeds", False):  # one call: rollout r of chunk[j] is prompt r * len + j
            gens = backend.generate(prompts * n_rollouts, settings, _seed(seed, "rollouts", c) % (1 << 31))
            for k, g in enumerate(gens):
                per_job[chunk[k % len(chunk)]].append((g.text, len(g.token_ids), bool(g.stopped_at_eos)))
        for r in range(0 if getattr(backend, "per_prompt_seeds", False) else n_rollouts):
            for j, g in zip(chunk, backend.generate(prompts, settings, _seed(seed, "rollout", r) % (1 << 31))):
                per_job[j].append((g.text, len(g.token_ids), bool(g.stopped_at_eos)))
        for j in chunk:
            on_point(j, per_job[j])


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
) -> ResamplingResult:
    """Counterfactual importance of every step from ``n_rollouts`` rollouts per cut point (see the module doc).

    ``similar(resampled_step, original_step)`` judges whether a resample says the same as the step (default:
    identical text); ``trace_id`` keys the rollout cache (default: ``trace.meta["id"]``, else a hash of the ids).
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
        max_cache_tokens=max_cache_tokens)[0]


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
    settings = _settings_key(n_rollouts, seed, temperature, top_p, max_new_tokens, backend)
    path = None if cache_path is None else Path(cache_path)
    records = _load_cache(path, settings)
    jobs, where = [], []
    for t, (trace, st) in enumerate(zip(traces, steps)):
        for j, cut in enumerate(cut_points(trace, st)):
            if (keys[t], j) not in records:
                jobs.append((trace, cut, keys[t]))
                where.append((t, j))
    writer = None
    if path is not None and jobs:
        from thinklens.jsonl import JsonlWriter

        writer = JsonlWriter(path)

    def on_point(jx: int, rolls: list[tuple[str, int, bool]]) -> None:
        t, j = where[jx]
        rec = {"id": keys[t], "step": j, "cut": jobs[jx][1], "settings": settings, "rollouts": [
            {"text": text, "n_tokens": n, "stopped_at_eos": eos} for text, n, eos in rolls]}
        records[(keys[t], j)] = rec
        if writer is not None:
            writer.write(rec)

    try:
        if jobs and backend is None:
            with torch.no_grad():
                _rollouts_transformers(model, tokenizer, jobs, n_rollouts, seed, temperature, top_p, max_new_tokens,
                                       max_cache_tokens, on_point)
        elif jobs:
            _rollouts_backend(backend, jobs, n_rollouts, seed, temperature, top_p, max_new_tokens, batch_size,
                              on_point)
    finally:
        if writer is not None:
            writer.close()
    similar = similar or same_step
    out = []
    for t, (trace, st) in enumerate(zip(traces, steps)):
        texts = [trace.text[trace.offsets[a][0]:trace.offsets[b - 1][1]] for a, b in st]
        answers, firsts = [], []
        for j in range(len(st) + 1):
            rolls = records[(keys[t], j)]["rollouts"]
            answers.append([_rollout_answer(r["text"], r["stopped_at_eos"], profile.think_close) for r in rolls])
            units = _units(texts[j]) if j < len(st) else 1
            firsts.append([first_step(r["text"], units, profile.think_close) for r in rolls])
        gold = None if golds is None else golds[t]
        reference = gold if gold is not None else trace_answer(trace)
        imp, kl, nd, score, plain = _importance(texts, answers, firsts, reference, similar, alpha)
        out.append(ResamplingResult(importance=imp, kl=kl, plain_importance=plain, score=score, n_dissimilar=nd,
                                    answers=answers, first_steps=firsts, reference=reference,
                                    scored_by="gold" if gold is not None else "original", n_rollouts=n_rollouts))
    return out

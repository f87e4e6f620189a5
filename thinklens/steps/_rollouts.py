"""The rollout engines of counterfactual resampling: draw rollouts ``r0..r1-1`` of cut points, locally (transformers
with prefix caching) or through a generation backend (vLLM, an OpenAI-compatible server).

Why a module of its own: :mod:`thinklens.steps.resampling` decides *which* rollouts to draw (all N, or in adaptive
rounds, within a budget); this module only draws them. Rollout ``r`` of a cut point is the same whatever else is drawn
with it: locally each rollout has its own generator seeded by (seed, trace key, cut point, r); through a backend,
rollout ``r`` of every prompt is one ``generate`` call seeded by (seed, r). So the first ``n`` rollouts of an
adaptive run are exactly the first ``n`` of a fixed run.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import torch

# (trace, cut, trace key, first rollout index, end rollout index)
Job = tuple[Any, int, str, int, int]
Rollout = tuple[str, int, bool]  # (text, n generated tokens, stopped at EOS)


def rollout_seed(*parts: Any) -> int:
    """A 63-bit seed from any parts (stable across processes and Python versions)::

        >>> rollout_seed(0, "a", 3, 1) == rollout_seed(0, "a", 3, 1) != rollout_seed(0, "a", 3, 2)
        True
    """
    return int.from_bytes(hashlib.sha256("\0".join(map(str, parts)).encode()).digest()[:8], "little") >> 1


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


def rollouts_transformers(model: Any, tokenizer: Any, jobs: list[Job], seed: int, temperature: float, top_p: float,
                          max_new: int, max_cache_tokens: int, on_point: Callable[[int, list[Rollout]], None],
                          on_rollout: Callable[[int], None] | None = None) -> None:
    """Sample rollouts ``r0..r1-1`` of ``trace.ids[:cut]`` for every job; calls ``on_point(job, rollouts)`` as soon as
    a job's rollouts are all finished (``on_rollout(1)`` after each one). Traces are taken in groups whose caches and
    rollouts fit ``max_cache_tokens``."""
    from thinklens.steps._decode import Source, trace_caches, trace_groups

    traces = list({id(job[0]): job[0] for job in jobs}.values())
    by_trace = {id(t): [j for j, job in enumerate(jobs) if job[0] is t] for t in traces}
    need = [max(jobs[j][1] for j in by_trace[id(t)]) for t in traces]
    budget = [n + sum(jobs[j][4] - jobs[j][3] for j in by_trace[id(t)]) * (n + max_new)
              for t, n in zip(traces, need)]
    for group in trace_groups(budget, max_cache_tokens):
        caches = trace_caches(model, [traces[g].ids[:need[g]] for g in group], max_cache_tokens)
        rows, srcs = [], []
        for (cache, b), g in zip(caches, group):
            for j in by_trace[id(traces[g])]:
                for r in range(jobs[j][3], jobs[j][4]):
                    rows.append((j, r))
                    srcs.append(Source(cache, b, jobs[j][1] - 1))  # the last prefix token is fed again: its
                    # logits start the rollout
        _decode_group(model, tokenizer, jobs, rows, srcs, seed, temperature, top_p, max_new, max_cache_tokens,
                      on_point, on_rollout)
        del caches


def _decode_group(model: Any, tokenizer: Any, jobs: list[Job], rows: list[tuple[int, int]], srcs: list[Any],
                  seed: int, temperature: float, top_p: float, max_new: int, max_cache_tokens: int,
                  on_point: Callable[[int, list[Rollout]], None], on_rollout: Callable[[int], None] | None) -> None:
    """Decode the rollouts ``rows[i] = (job, rollout)`` (prefix ``srcs[i]``) in chunks of bounded cache."""
    from thinklens.steps._decode import decode_rows, row_chunks

    eos = tokenizer.eos_token_id
    forced = [[int(jobs[j][0].ids[jobs[j][1] - 1])] for j, _ in rows]
    gens = [torch.Generator().manual_seed(rollout_seed(seed, jobs[j][2], jobs[j][1], r)) for j, r in rows]
    results: dict[int, dict[int, Rollout]] = {}
    for chunk in row_chunks([s.cut for s in srcs], max_cache_tokens, extra=max_new):

        def pick(logits: torch.Tensor, active: list[int], ch: list[int] = chunk) -> torch.Tensor:
            return sample_tokens(logits, [gens[ch[a]] for a in active], temperature, top_p)

        def done(a: int, toks: list[int], ch: list[int] = chunk) -> None:
            j, r = rows[ch[a]]
            eos_hit = bool(toks) and toks[-1] == eos
            toks = toks[:-1] if eos_hit else toks
            results.setdefault(j, {})[r] = (tokenizer.decode(toks, skip_special_tokens=False), len(toks), eos_hit)
            if on_rollout is not None:
                on_rollout(1)
            r0, r1 = jobs[j][3], jobs[j][4]
            if len(results[j]) == r1 - r0:
                on_point(j, [results[j][k] for k in range(r0, r1)])

        decode_rows(model, [srcs[i] for i in chunk], [forced[i] for i in chunk], pick,
                    lambda _a, toks: bool(toks) and toks[-1] == eos, max_new, pad_id=int(eos or 0), on_done=done)


def rollouts_backend(backend: Any, jobs: list[Job], seed: int, temperature: float, top_p: float, max_new: int,
                     batch_size: int, on_point: Callable[[int, list[Rollout]], None],
                     on_rollout: Callable[[int], None] | None = None) -> None:
    """The same through a generation backend: rollout ``r`` of a chunk of prompts is one ``generate`` call seeded by
    (seed, r). The prompts of a chunk are a trace's cut points in order, so a server's prefix cache serves them."""
    from thinklens.empirical.collect import GenerationSettings

    settings = GenerationSettings(max_new_tokens=max_new, temperature=temperature, top_p=top_p, seed=seed)
    for c in range(0, len(jobs), batch_size):
        chunk = list(range(c, min(len(jobs), c + batch_size)))
        per_job: dict[int, list[Rollout]] = {j: [] for j in chunk}
        for r in range(min(jobs[j][3] for j in chunk), max(jobs[j][4] for j in chunk)):
            todo = [j for j in chunk if jobs[j][3] <= r < jobs[j][4]]
            prompts = [list(jobs[j][0].ids[:jobs[j][1]]) for j in todo]
            for j, g in zip(todo, backend.generate(prompts, settings, rollout_seed(seed, "rollout", r) % (1 << 31))):
                per_job[j].append((g.text, len(g.token_ids), bool(g.stopped_at_eos)))
            if on_rollout is not None:
                on_rollout(len(todo))
        for j in chunk:
            on_point(j, per_job[j])

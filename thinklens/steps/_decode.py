"""Batched decoding of many continuations of trace prefixes, over one forward per trace.

Why: early answering and resampling continue the *same* traces from many cut points (every truncated prefix is a
prefix of its trace). One forward of each trace with a KV cache supplies the keys/values of every prefix; each
continuation ("row") then only computes its own new tokens. Rows (of one or many traces) are laid out as one
left-padded batch: row ``r`` holds its trace's cached tokens ``[0, cut_r)`` right-aligned (pads masked by a 2D
attention mask), then its forced tokens (right-aligned again, pads masked), then one new token per step, with
explicit position ids (``cut_r + j``), so every row computes what a fresh generation from ``ids[:cut_r] +
forced_r`` computes. Finished rows leave the batch (``batch_select_indices``). Cost: one forward per trace (traces
batched, right-padded), the forced tokens in one forward, then one batched forward per decoding step, instead of
one prefill per row; memory: ``rows x max(cut)`` cached tokens (:func:`row_chunks` bounds it).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from thinklens.cache import cache_kw, cache_of
from thinklens.steps._common import consecutive_groups

# pick(logits [b, V] float32, active row indices) -> next token per active row [b]
Picker = Callable[[torch.Tensor, list[int]], torch.Tensor]
# stop(row index, its generated tokens so far) -> finished?
Stopper = Callable[[int, list[int]], bool]


@dataclass(frozen=True)
class Source:
    """Where a row's prefix comes from: batch row ``index`` of ``cache``, its first ``cut`` positions."""

    cache: Any  # DynamicCache [n_traces, n_kv, T_max, d]
    index: int
    cut: int


def trace_caches(model: Any, seqs: Sequence[Sequence[int]], max_tokens: int = 1 << 16) -> list[tuple[Any, int]]:
    """``(cache, batch row)`` of every sequence: right-padded batched forwards (at most ``max_tokens`` padded
    tokens each, and no sequence under half the batch's longest, so padding wastes little) that keep the KV cache.
    Right padding leaves every real token's keys/values unchanged."""
    dev = next(model.parameters()).device
    order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i]))
    out: list[tuple[Any, int] | None] = [None] * len(seqs)
    i = 0
    while i < len(order):
        width = len(seqs[order[i]])
        group = [order[i]]
        while (i + len(group) < len(order) and (len(group) + 1) * width <= max_tokens
               and 2 * len(seqs[order[i + len(group)]]) >= width):
            group.append(order[i + len(group)])
        x = torch.zeros((len(group), width), dtype=torch.long, device=dev)  # [g, width]
        m = torch.zeros((len(group), width), dtype=torch.long, device=dev)  # [g, width]
        for r, s in enumerate(group):
            x[r, :len(seqs[s])] = torch.as_tensor(list(seqs[s]), dtype=torch.long)
            m[r, :len(seqs[s])] = 1
        cache = cache_of(model(input_ids=x, attention_mask=m, use_cache=True, logits_to_keep=1))
        for r, s in enumerate(group):
            out[s] = (cache, r)
        i += len(group)
    return out  # type: ignore[return-value]


def rows_cache(sources: Sequence[Source]) -> tuple[Any, torch.Tensor]:
    """A DynamicCache ``[rows, n_kv, L, d]`` (``L`` = the longest cut) whose row ``r`` holds its source's first
    ``cut`` positions right-aligned, and the 2D mask ``[rows, L]`` (1 = real token, 0 = left pad)."""
    from transformers import DynamicCache

    first = sources[0].cache.layers[0].keys  # [n, n_kv, T, d]
    dev, L, n = first.device, max(s.cut for s in sources), len(sources)
    pad = torch.as_tensor([L - s.cut for s in sources], device=dev)  # [rows]
    j = torch.arange(L, device=dev)[None, :]  # [1, L]
    idx = (j - pad[:, None]).clamp(min=0)  # [rows, L] source position (pads read position 0, masked)
    mask = (j >= pad[:, None]).long()  # [rows, L]
    groups: dict[int, tuple[Any, list[int]]] = {}
    for r, s in enumerate(sources):
        groups.setdefault(id(s.cache), (s.cache, []))[1].append(r)
    data, layers0 = [], sources[0].cache.layers
    for layer in range(len(layers0)):
        ref = layers0[layer].keys
        k = torch.empty((n, ref.shape[1], L, ref.shape[3]), dtype=ref.dtype, device=dev)  # [rows, n_kv, L, d]
        v = torch.empty_like(k)
        for cache, rows in groups.values():
            rt = torch.as_tensor(rows, dtype=torch.long, device=dev)
            b = torch.as_tensor([sources[r].index for r in rows], dtype=torch.long, device=dev)
            lk, lv = cache.layers[layer].keys, cache.layers[layer].values  # [n, n_kv, T, d]
            gi = idx[rt]  # [g, L]
            k[rt] = lk[b[:, None], :, gi].transpose(1, 2)  # [g, L, n_kv, d] -> [g, n_kv, L, d]
            v[rt] = lv[b[:, None], :, gi].transpose(1, 2)
        data.append((k, v))
    return DynamicCache(ddp_cache_data=data), mask


@torch.no_grad()
def decode_rows(model: Any, sources: Sequence[Source], forced: Sequence[Sequence[int]], pick: Picker,
                stop: Stopper, max_new: int, pad_id: int = 0,
                on_done: Callable[[int, list[int]], None] | None = None) -> list[list[int]]:
    """Continue each row's prefix + ``forced[r]`` (non-empty) for up to ``max_new`` tokens; a row ends when
    ``stop(r, tokens)`` says so or its budget is spent (then ``on_done(r, tokens)`` is called). Returns every
    row's new tokens."""
    n = len(sources)
    if any(len(f) == 0 for f in forced):
        raise ValueError("every row needs at least one forced token (its first new token's logits come from it)")
    cache, mask = rows_cache(sources)
    dev = mask.device
    F = max(len(f) for f in forced)
    block = torch.full((n, F), pad_id, dtype=torch.long, device=dev)  # [rows, F] forced tokens, right-aligned
    bmask = torch.zeros((n, F), dtype=torch.long, device=dev)  # [rows, F]
    pos = torch.zeros((n, F), dtype=torch.long, device=dev)  # [rows, F]
    for r, (s, f) in enumerate(zip(sources, forced)):
        block[r, F - len(f):] = torch.as_tensor(list(f), dtype=torch.long)
        bmask[r, F - len(f):] = 1
        pos[r] = s.cut  # pads: any position (their keys are masked)
        pos[r, F - len(f):] = torch.arange(s.cut, s.cut + len(f))
    mask = torch.cat([mask, bmask], dim=1)  # [rows, L + F]
    logits = model(input_ids=block, attention_mask=mask, position_ids=pos, **cache_kw(model, cache), use_cache=True,
                   logits_to_keep=1).logits[:, -1]  # [rows, V]
    nxt = [s.cut + len(f) for s, f in zip(sources, forced)]  # position of each row's first new token
    active, gen = list(range(n)), [[] for _ in range(n)]
    for step in range(max_new):
        tok = pick(logits.float(), active).to(dev)  # [b]
        keep = []
        for j, r in enumerate(active):
            gen[r].append(int(tok[j]))
            if step < max_new - 1 and not stop(r, gen[r]):
                keep.append(j)
            elif on_done is not None:
                on_done(r, gen[r])
        if not keep:
            break
        if len(keep) < len(active):
            sel = torch.as_tensor(keep, dtype=torch.long, device=dev)
            cache.batch_select_indices(sel)
            mask, tok = mask[sel], tok[sel]
            active = [active[j] for j in keep]
        mask = torch.cat([mask, torch.ones((len(active), 1), dtype=torch.long, device=dev)], dim=1)
        p = torch.as_tensor([[nxt[r] + len(gen[r]) - 1] for r in active], dtype=torch.long, device=dev)  # [b, 1]
        logits = model(input_ids=tok[:, None], attention_mask=mask, position_ids=p, **cache_kw(model, cache),
                       use_cache=True, logits_to_keep=1).logits[:, -1]  # [b, V]
    return gen


def row_chunks(cuts: Sequence[int], max_cache_tokens: int, extra: int = 0) -> list[list[int]]:
    """Row indices (by increasing cut) in groups whose left-padded caches (``rows x (longest cut + extra)``, extra =
    the tokens each row may add) stay within ``max_cache_tokens`` (at least one row per group)."""
    order = sorted(range(len(cuts)), key=lambda r: cuts[r])
    chunks: list[list[int]] = []
    cur: list[int] = []
    for r in order:
        if cur and (len(cur) + 1) * (cuts[r] + extra) > max_cache_tokens:
            chunks.append(cur)
            cur = []
        cur.append(r)
    if cur:
        chunks.append(cur)
    return chunks


def trace_groups(needs: Sequence[int], max_cache_tokens: int) -> list[list[int]]:
    """Consecutive trace indices whose cached tokens (``needs[t]``: the trace's cache plus its rows' share) fit
    ``max_cache_tokens`` together (at least one trace per group)."""
    return consecutive_groups(needs, max_cache_tokens)

"""A group of traces x ablation conditions in one batch: the traces' prefixes (prompt, reasoning, ``</think>``)
prefilled once, left-padded, and shared by every condition's row; greedy answers and teacher-forced log-probs.

Why a module of its own: :mod:`thinklens.attention.ablation` decides what to ablate and runs the batches (sharing
them among the ranks of a torchrun launch); this is the batched decoding underneath.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from thinklens.cache import cache_kw, cache_of

LOGIT_BYTES = 1 << 30  # answer_logprob's logits per forward (1 GiB): bounds the ablation stage's memory


# -- a group of traces x conditions: one shared prefix cache, greedy answers, teacher-forced log-probs ----------
@dataclass
class _Prefix:
    """Left-padded prefixes without their last token, and their KV cache (per layer ``[G, n_kv, W, hd]``)."""

    kv: list[tuple[torch.Tensor, torch.Tensor]]
    mask: torch.Tensor  # [G, W] 1 on real tokens
    last: torch.Tensor  # [G] the last prefix token (``</think>``): the first ablated position
    length: torch.Tensor  # [G] real prefix tokens before ``last`` (= ``last``'s position)


def _prefill(model: Any, prefixes: list[list[int]], pad_id: int) -> _Prefix:
    device = next(model.parameters()).device
    W = max(len(p) - 1 for p in prefixes)
    ids = torch.full((len(prefixes), W), pad_id, dtype=torch.long)  # [G, W]
    mask = torch.zeros((len(prefixes), W), dtype=torch.long)  # [G, W]
    for i, p in enumerate(prefixes):
        ids[i, W - len(p) + 1:] = torch.tensor(p[:-1])
        mask[i, W - len(p) + 1:] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)  # [G, W]
    with torch.no_grad():
        out = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                    use_cache=True, logits_to_keep=1)
    kv = [(la.keys, la.values) for la in cache_of(out).layers]
    return _Prefix(kv, mask.to(device), torch.tensor([p[-1] for p in prefixes], device=device),
                   mask.sum(-1).to(device))


def _rows_cache(pre: _Prefix, repeats: int, rows: torch.Tensor | None = None) -> Any:
    """A new DynamicCache with every prefix repeated ``repeats`` times (row = trace * repeats + condition), or only
    the given ``rows`` of that layout."""
    from transformers import DynamicCache

    if rows is None:
        rows = torch.arange(pre.mask.shape[0] * repeats)
    src = rows.to(pre.mask.device) // repeats  # [r] the trace of each row
    return DynamicCache(ddp_cache_data=[(k.index_select(0, src), v.index_select(0, src)) for k, v in pre.kv])


def greedy_rows(model: Any, pre: _Prefix, repeats: int, max_new: list[int], eos_id: int,
                acc: Any = None) -> list[list[int]]:
    """Greedy answers of every row (trace-major), from the last prefix token on; a row stops at EOS (included)
    or after ``max_new[trace]`` tokens. ``acc`` (a ``MeanOutputs``, if given) only counts positions of unfinished rows.

    Example::

        pre = _prefill(model, [trace.ids[: trace.think_close.end]], tok.eos_token_id)
        greedy_rows(model, pre, 1, [40], tok.eos_token_id)[0]  # the answer tokens + EOS
    """
    cache = _rows_cache(pre, repeats)
    B = pre.mask.shape[0] * repeats
    mask = pre.mask.repeat_interleave(repeats, 0)  # [B, W]
    pos = pre.length.repeat_interleave(repeats, 0)  # [B]
    x = pre.last.repeat_interleave(repeats, 0)[:, None]  # [B, 1]
    caps = [max_new[r // repeats] for r in range(B)]
    out: list[list[int]] = [[] for _ in range(B)]
    done = [False] * B
    with torch.no_grad():
        for _ in range(max(caps)):
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # [B, W + steps so far + 1]
            if acc is not None:
                acc.weights = torch.tensor([[0.0 if d else 1.0] for d in done])  # [B, 1]
            o = model(input_ids=x, attention_mask=mask, position_ids=pos[:, None], **cache_kw(model, cache),
                      use_cache=True)
            cache = cache_of(o)
            nxt = o.logits[:, -1].argmax(-1)  # [B]
            for r, t in enumerate(nxt.tolist()):
                if not done[r]:
                    out[r].append(t)
                    done[r] = t == eos_id or len(out[r]) >= caps[r]
            if all(done):
                break
            x, pos = nxt[:, None], pos + 1
    if acc is not None:
        acc.weights = None
    return out


def answer_logprob(model: Any, pre: _Prefix, repeats: int, answers: list[list[int]],
                   max_logit_bytes: int = LOGIT_BYTES, select: Any = None) -> np.ndarray:
    """[rows] summed log-probability of ``answers[trace]`` after the last prefix token (teacher-forced; answers
    right-padded, which causal attention never lets earlier tokens see).

    Rows go through the model in chunks whose logits (bf16 out, fp32 log-softmax: ~10 bytes per entry) stay under
    ``max_logit_bytes``: 48 rows x 200 answer tokens x a 151,936-token vocabulary would be 15 GB in one forward,
    more than the 2-core machine's 24 GB. Under per-row ablation pass ``select=`` the :class:`RowSelection`'s
    ``only``, so that each chunk's rows keep their head sets.

    Example::

        answer_logprob(model, pre, 1, [trace.ids[trace.think_close.end:]])  # array([-0.002])
    """
    device = pre.mask.device
    B, A = pre.mask.shape[0] * repeats, max(1, max(len(a) for a in answers))
    ids = torch.zeros((B, A), dtype=torch.long, device=device)  # [B, A]: last token + answer[:-1]
    tgt = torch.zeros((B, A), dtype=torch.long, device=device)  # [B, A]
    real = torch.zeros((B, A), dtype=torch.bool, device=device)
    for r in range(B):
        a = answers[r // repeats]
        if a:
            ids[r, : len(a)] = torch.tensor([int(pre.last[r // repeats])] + a[:-1], device=device)
            tgt[r, : len(a)] = torch.tensor(a, device=device)
            real[r, : len(a)] = True
    mask = torch.cat([pre.mask.repeat_interleave(repeats, 0), torch.ones_like(ids)], dim=1)  # [B, W + A]
    pos = pre.length.repeat_interleave(repeats, 0)[:, None] + torch.arange(A, device=device)[None]  # [B, A]
    step = max(1, max_logit_bytes // (10 * A * model.config.get_text_config().vocab_size))
    out = torch.zeros(B, dtype=torch.float64)
    with torch.no_grad():
        for r0 in range(0, B, step):
            rows = torch.arange(r0, min(B, r0 + step), device=device)  # [r]
            with select(rows.tolist()) if select is not None else contextlib.nullcontext():
                logits = model(input_ids=ids[rows], attention_mask=mask[rows], position_ids=pos[rows],
                               **cache_kw(model, _rows_cache(pre, repeats, rows)), use_cache=True).logits  # [r, A, V]
            lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, tgt[rows, :, None])[..., 0]  # [r, A]
            out[r0: r0 + len(rows)] = (lp * real[rows]).sum(-1).double().cpu()
            del logits, lp
    return out.numpy()

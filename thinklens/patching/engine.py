"""Activation-patching engines: run the corrupted prompt with clean activations written into chosen sites.

Activation patching (clean -> corrupted) asks which activations *carry* the information that decides the answer:
run the clean sequence, record an activation (say the residual stream at layer ``l``, token ``p``), then run the
corrupted sequence with that single activation overwritten and measure how far the final-position answer
preference moves back towards the clean one (the normalized logit difference, see ``metrics``).

The paper pays one full forward over the whole sequence per (layer, position). That is the **naive engine** here
(kept as the reference the tests compare against). The **fast engine** reuses everything that cannot change:

* one clean forward, with capture hooks, supplies the clean activation of every patched site;
* a patch at position ``p`` cannot affect tokens before ``p`` (causal attention), so those are the corrupted run's
  own: one corrupted forward with a KV cache (``DynamicCache``) is run once, and every patch only recomputes the
  suffix ``[p, T)`` on top of the cached corrupted keys/values of ``[0, p)``;
* with SDPA/eager attention and no sliding-window layers, the patched runs are *packed*: each run only needs its
  suffix ``[p_i, T)``, so the suffixes of many runs are laid end to end as ONE sequence over the single full
  corrupted KV cache, with a custom mask (copy ``i`` sees the cached corrupted tokens before its own ``p_i``, which
  its patch cannot change, and its own earlier tokens; never another copy) and position ids ``p_i..T-1`` per copy.
  One forward then covers every (layer, position) of a sweep: the weights are read once instead of once per run
  (small-batch matmuls are memory-bound), and the prefix keys/values are never duplicated per run;
* other attention implementations fall back to one batched forward per first position, over the cache cropped
  to that position and expanded along the batch.

The shared cache is never mutated: the attention layers' ``torch.cat`` on update allocates new tensors. The cost
of a sweep of ``n`` runs drops from ``2 + n`` full forwards to about 2 (clean + corrupted) plus the suffixes.
Both engines share one entry point (:func:`run_patches`) and the same hooks (``targets``). Padded pairs
(attention mask 0 at pad tokens) keep position ids ``arange(T)`` over the padded sequence in every run, so an
aligned token has the same position in the clean run, the corrupted run and every suffix. Only the final-position
logits are computed (``logits_to_keep=1``): the unembedding over a 150k vocabulary is not free.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from thinklens.cache import cache_kw, cache_of
from thinklens.errors import ThinklensError
from thinklens.modules import input_device
from thinklens.patching.metrics import Metric
from thinklens.patching.targets import Patch, Site, capture, patching
from thinklens.profiles import Profile

ENGINES = ("fast", "naive")
MAX_PACKED_TOKENS = 4096  # suffix tokens packed into one forward (memory: O(this x T) for the mask and activations)
BATCH_SIZE = 32  # patched runs per batched forward where packing is not supported
Item = Sequence[tuple[Site, int]]  # one patched run: the (site, absolute position) pairs written together


@dataclass
class PairTensors:
    """The four [T] tensors of a pair (same length; masks are 1 on real tokens, 0 on pads)."""

    clean_ids: torch.Tensor  # [T] long
    corrupted_ids: torch.Tensor  # [T] long
    clean_mask: torch.Tensor  # [T] long
    corrupted_mask: torch.Tensor  # [T] long

    @classmethod
    def from_pair(cls, pair: Any) -> PairTensors:
        def t(x):
            return torch.as_tensor(list(x), dtype=torch.long)
        return cls(t(pair.clean_ids), t(pair.corrupted_ids), t(pair.clean_mask), t(pair.corrupted_mask))

    def __post_init__(self) -> None:
        n = {len(self.clean_ids), len(self.corrupted_ids), len(self.clean_mask), len(self.corrupted_mask)}
        if len(n) != 1:
            raise ThinklensError("pair tensors differ in length: pad the pair so clean and corrupted align")

    def __len__(self) -> int:
        return len(self.clean_ids)


@dataclass
class EngineOutput:
    clean: float  # metric of the clean run
    corrupted: float  # metric of the corrupted run
    patched: np.ndarray  # [n_items] metric of each patched run
    clean_logits: torch.Tensor  # [vocab] final-position logits of the clean run
    corrupted_logits: torch.Tensor  # [vocab]


def _device(model: Any) -> torch.device:
    """Where the inputs go: the embedding's device (with a device_map, layers and KV cache live on theirs)."""
    return input_device(model)


def _forward(model: Any, ids: torch.Tensor, mask: torch.Tensor, start: int, cache: Any = None,
             use_cache: bool = False) -> Any:
    """Forward of ``ids`` ([batch, n]) at absolute positions ``start..start+n-1``; ``mask`` is [batch, start+n]."""
    b, n = ids.shape
    pos = torch.arange(start, start + n, device=ids.device).unsqueeze(0).expand(b, n)  # [batch, n]
    return model(input_ids=ids, attention_mask=mask, position_ids=pos, **cache_kw(model, cache),
                 use_cache=use_cache, logits_to_keep=1)


def _can_pack(model: Any) -> bool:
    """Packed suffixes need a custom 4D mask: SDPA or eager attention, no sliding-window layers."""
    cfg = model.config
    impl = getattr(cfg, "_attn_implementation", None) or "eager"
    return impl in ("sdpa", "eager") and "sliding_attention" not in (getattr(cfg, "layer_types", None) or [])


def _packed_mask(key_mask: torch.Tensor, starts: list[int], dtype: torch.dtype) -> torch.Tensor:
    """[1, 1, N, T + N] additive mask for suffix copies ``[p_i, T)`` packed end to end (``N`` = total length) after
    the full cached corrupted run: copy ``i`` sees the real cached tokens before ``p_i`` and the real tokens of its
    own copy up to itself."""
    T = len(key_mask)
    real = key_mask.bool()  # [T]
    blocks, prefix = [], []
    for p in starts:
        S = T - p
        blocks.append((torch.tril(torch.ones(S, S, dtype=torch.bool, device=key_mask.device))
                       & real[p:][None, :]).to(torch.uint8))  # [S, S]
        prefix.append((torch.arange(T, device=key_mask.device) < p)[None, :].expand(S, T) & real[None, :])  # [S, T]
    allowed = torch.cat([torch.cat(prefix), torch.block_diag(*blocks).bool()], dim=1)  # [N, T + N]
    mask = torch.zeros(allowed.shape, dtype=dtype, device=key_mask.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[None, None]


def _prefix_cache(full: Any, length: int) -> Any:
    """A new DynamicCache viewing the first ``length`` positions of ``full`` (batch 1; no copy until updated)."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=[(la.keys[:, :, :length], la.values[:, :, :length]) for la in full.layers])


def _expanded_cache(full: Any, length: int, batch: int) -> Any:
    """A new DynamicCache holding the first ``length`` positions of ``full`` (batch 1), viewed as ``batch`` rows."""
    from transformers import DynamicCache

    data = []
    for layer in full.layers:
        k, v = layer.keys[:, :, :length], layer.values[:, :, :length]  # [1, n_kv, length, head_dim]
        data.append((k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)))
    return DynamicCache(ddp_cache_data=data)


@torch.no_grad()
def run_patches(
    model: Any,
    profile: Profile,
    pair: PairTensors | Any,
    items: Sequence[Item],
    metric: Metric,
    *,
    engine: str = "fast",
    batch_size: int = BATCH_SIZE,
    max_tokens: int = MAX_PACKED_TOKENS,
    progress: Callable[[int], None] | None = None,
) -> EngineOutput:
    """Score ``metric`` (on final-position logits) for the clean run, the corrupted run and every patched run.

    ``items[i]`` lists the (site, position) activations copied from the clean run into patched run ``i``.
    ``engine="fast"`` recomputes only from each item's first patched position over the cached corrupted run, packing
    up to ``max_tokens`` suffix tokens per forward (or, without packing support, batching up to ``batch_size`` items
    that start at the same position); ``"naive"`` runs one full forward per item (the reference).

    >>> import thinklens as tl
    >>> model, tokenizer, profile = tl.load_model("tiny-r1")
    >>> pair = tl.toy_pairs(1, seed=0, tokenizer=tokenizer)[0][0]
    >>> flip = pair.positions["answer_flip"]
    >>> out = tl.run_patches(model, profile, pair, [[(tl.Site("resid_pre", 0), flip)]],
    ...                      tl.LogitDiff(pair.clean_answer, pair.corrupted_answer))
    >>> out.clean > 0 > out.corrupted, bool(abs(out.patched[0] - out.clean) < 0.1 * abs(out.clean))
    (True, True)
    """
    if engine not in ENGINES:
        raise ThinklensError(f"unknown engine {engine!r}; choose from {ENGINES}")
    pt = pair if isinstance(pair, PairTensors) else PairTensors.from_pair(pair)
    T = len(pt)
    for i, item in enumerate(items):
        if not item:
            raise ThinklensError(f"patch item {i} is empty")
        for _site, pos in item:
            if not 0 <= pos < T:
                raise ThinklensError(f"patch item {i}: position {pos} outside the pair's {T} tokens")
    dev = _device(model)
    clean_ids, corr_ids = pt.clean_ids.to(dev)[None], pt.corrupted_ids.to(dev)[None]  # [1, T]
    clean_mask, corr_mask = pt.clean_mask.to(dev)[None], pt.corrupted_mask.to(dev)[None]  # [1, T]

    # clean run: final logits + every clean activation the items need
    sites = sorted({s for item in items for s, _ in item}, key=lambda s: (s.layer, s.kind.value, s.head or 0))
    positions = sorted({p for item in items for _, p in item})
    col = {p: j for j, p in enumerate(positions)}
    with capture(model, profile, sites, positions) as acts:  # acts[site]: [1, n_positions, d]
        clean_logits = _forward(model, clean_ids, clean_mask, 0).logits[0, -1]  # [vocab]
    # corrupted run, keeping the KV cache the fast engine grows suffixes from
    out = _forward(model, corr_ids, corr_mask, 0, use_cache=engine == "fast")
    corrupted_logits = out.logits[0, -1]  # [vocab]
    full_cache = cache_of(out) if engine == "fast" else None

    def patches_for(chunk: Sequence[Item]) -> list[Patch]:
        return [Patch(r, s, p, acts[s][0, col[p]]) for r, item in enumerate(chunk) for s, p in item]

    result = np.zeros(len(items), dtype=np.float64)
    if engine == "naive":
        for i, item in enumerate(items):
            with patching(model, profile, patches_for([item]), offset=0):
                logits = _forward(model, corr_ids, corr_mask, 0).logits[:, -1]  # [1, vocab]
            result[i] = float(metric(logits)[0])
            if progress:
                progress(1)
    elif _can_pack(model):
        dtype = next(model.parameters()).dtype
        order = sorted(range(len(items)), key=lambda i: min(p for _, p in items[i]))
        chunks, cur, rows = [], [], 0
        for i in order:  # at most max_tokens packed query tokens per forward (and at least one run)
            n = T - min(p for _, p in items[i])
            if cur and rows + n > max_tokens:
                chunks.append(cur)
                cur, rows = [], 0
            cur.append(i)
            rows += n
        chunks.append(cur)
        for chunk in chunks:
            starts = [min(p for _, p in items[i]) for i in chunk]
            offsets = np.cumsum([0] + [T - p for p in starts])  # copy r occupies packed columns [o_r, o_r+1)
            patches = [Patch(0, q.site, int(offsets[q.row]) + q.position - starts[q.row], q.value)
                       for q in patches_for([items[i] for i in chunk])]
            ids = torch.cat([corr_ids[0, p:] for p in starts])[None]  # [1, N]
            pos = torch.cat([torch.arange(p, T, device=dev) for p in starts])[None]  # [1, N]
            # [b] the final token of every copy; on the CPU, so it can index hidden states on any device
            last = torch.as_tensor(offsets[1:] - 1)
            with patching(model, profile, patches, offset=0):
                out = model(input_ids=ids, attention_mask=_packed_mask(corr_mask[0], starts, dtype),
                            position_ids=pos, **cache_kw(model, _prefix_cache(full_cache, T)), use_cache=True,
                            logits_to_keep=last)
            result[chunk] = metric(out.logits[0]).double().cpu().numpy()  # logits: [b, vocab]
            if progress:
                progress(len(chunk))
    else:
        groups: dict[int, list[int]] = defaultdict(list)
        for i, item in enumerate(items):
            groups[min(p for _, p in item)].append(i)
        for start in sorted(groups):
            idx = groups[start]
            for c in range(0, len(idx), batch_size):
                chunk = idx[c:c + batch_size]
                b = len(chunk)
                ids = corr_ids[:, start:].expand(b, -1)  # [b, T - start]
                mask = corr_mask.expand(b, -1)  # [b, T]
                with patching(model, profile, patches_for([items[i] for i in chunk]), offset=start):
                    out = _forward(model, ids, mask, start, cache=_expanded_cache(full_cache, start, b),
                                   use_cache=True)
                result[chunk] = metric(out.logits[:, -1]).double().cpu().numpy()  # logits: [b, vocab]
                if progress:
                    progress(b)
    return EngineOutput(
        clean=float(metric(clean_logits[None])[0]), corrupted=float(metric(corrupted_logits[None])[0]),
        patched=result, clean_logits=clean_logits.float().cpu(), corrupted_logits=corrupted_logits.float().cpu(),
    )

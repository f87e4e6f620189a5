"""Memory-efficient attention capture: only the attention rows you ask for, reduced as soon as they exist.

Why not ``output_attentions=True``? Eager attention materializes every layer's full pattern, ``n_heads x T x T``
floats per layer (12 heads x 16k^2 x 4 bytes = 12 GB for one layer of a 1.5B model), and the paper's TransformerLens
run needed ~50 GB for a 7B model at 5k tokens. The questions we ask are about *rows*: how much do the answer tokens
attend to the reasoning? Those rows are a small slice of the pattern.

How it works. transformers 5 routes every attention layer through
``ALL_ATTENTION_FUNCTIONS[config._attn_implementation]`` with the layer's own post-RoPE
``query [b, n_heads, q, d]`` and ``key/value [b, n_kv, k, d]``. Inside
:func:`capture_attention` we register one function under the name ``"thinklens_capture"`` and switch the model to
it. That function

1. calls transformers' own SDPA implementation for the layer output, so the model computes exactly what it computes
   with ``attn_implementation="sdpa"`` (same kernel, same logits), and
2. for the requested query positions only, recomputes the softmax rows ``softmax(q_rows . k^T * scaling + mask)`` in
   float32, in chunks of rows (GQA-aware: query head ``h`` reads kv head ``h // (n_heads // n_kv)``), and hands each
   chunk ``probs [b, n_heads, rows, k]`` to a *reducer* that folds it into a small summary at once (per-segment
   masses, a per-key profile, ...). The chunk is then dropped.

Peak extra memory is one chunk, ``n_heads x chunk x T`` floats (by default at most ~16 MB on the CPU, ~256 MB on
a GPU, where fewer chunks mean fewer kernel launches), never ``T^2``.
The mask is the one transformers builds for SDPA (``None`` for plain causal attention, else a boolean or additive
``[b, 1, q, k]`` mask that already encodes padding and sliding windows), so the rows match eager attention.
Attention logit soft-capping and attention sinks change the softmax and are refused with a clear error.

Query positions index the query sequence of the forward call (with ``use_cache=False`` and no past, the token
positions of the input). Batch size 1 is the main path (traces differ in length); batches work with the same
positions in every row of the batch.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from thinklens.errors import ThinklensError

IMPL_NAME = "thinklens_capture"
_DEFAULT_CHUNK_ELEMENTS = 4 * 1024 * 1024  # floats per chunk of probabilities on the CPU (16 MB in fp32)
# on a GPU each chunk costs launches and a reducer step whatever its size: an H200 spent 2.4x a plain forward at 16k
# tokens in 13 chunks per layer; 256 MB chunks hold the 256 answer rows of a 16k trace (12 heads) in one
_DEFAULT_GPU_CHUNK_ELEMENTS = 64 * 1024 * 1024

# reducer(layer_idx, positions [rows] long tensor, probs [b, n_heads, rows, k] float32)
Reducer = Callable[[int, torch.Tensor, torch.Tensor], None]


def _capture_forward(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """The registered attention function: SDPA output + captured rows for the active capture (if any)."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cap = getattr(module, "_thinklens_capture", None)
    if cap is not None:
        cap._rows(module, query, key, attention_mask, kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(IMPL_NAME, _capture_forward)
    # without a registered mask function transformers would pass no mask at all for an unknown implementation
    ALL_MASK_ATTENTION_FUNCTIONS.register(IMPL_NAME, sdpa_mask)


def _attention_modules(model: Any) -> list[Any]:
    mods = [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "scaling")]
    if not mods:
        raise ThinklensError(f"{type(model).__name__} has no attention modules with `layer_idx` and `scaling`; "
                             "attention capture needs a transformers model that uses the AttentionInterface")
    return mods


def _configs(model: Any) -> list[Any]:
    seen, out = set(), []
    for m in model.modules():
        cfg = getattr(m, "config", None)
        if cfg is not None and id(cfg) not in seen and hasattr(cfg, "_attn_implementation"):
            seen.add(id(cfg))
            out.append(cfg)
    return out


class AttentionCapture:
    """State of one :func:`capture_attention` context: which rows, which layers, where they go."""

    def __init__(self, positions: Sequence[int] | np.ndarray | torch.Tensor, reducer: Reducer,
                 layers: Sequence[int] | None, chunk_elements: int | None) -> None:
        pos = torch.as_tensor(np.asarray(positions, dtype=np.int64)).reshape(-1)
        if pos.numel() and int(pos.min()) < 0:
            raise ThinklensError("query positions must be >= 0")
        self.positions = pos  # [n_rows]
        self.reducer = reducer
        self.layers = None if layers is None else set(int(x) for x in layers)
        self.chunk_elements = None if chunk_elements is None else int(chunk_elements)  # None: by device
        self._device_positions: dict[torch.device, torch.Tensor] = {}  # one host->device copy, not one per layer
        self.n_calls = 0
        self.seconds = 0.0  # time spent computing and reducing rows (the capture's own overhead)

    def _rows(self, module: Any, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
              kwargs: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        try:
            self._rows_impl(module, query, key, mask, kwargs)
        finally:
            self.seconds += time.perf_counter() - t0

    def _rows_impl(self, module: Any, query: torch.Tensor, key: torch.Tensor, mask: torch.Tensor | None,
                   kwargs: dict[str, Any]) -> None:
        layer = int(module.layer_idx)
        if self.layers is not None and layer not in self.layers:
            return
        if kwargs.get("softcap") is not None or getattr(module, "sinks", None) is not None or "s_aux" in kwargs:
            raise ThinklensError(f"layer {layer}: attention soft-capping / sinks are not supported by the capture")
        if kwargs.get("position_bias") is not None:
            raise ThinklensError(f"layer {layer}: additive position bias is not supported by the capture")
        b, n_heads, q_len, d = query.shape  # query [b, n_heads, q, d]
        n_kv, k_len = key.shape[1], key.shape[2]  # key [b, n_kv, k, d]
        if n_heads % n_kv:
            raise ThinklensError(f"layer {layer}: {n_heads} query heads not divisible by {n_kv} kv heads")
        if self.positions.numel() == 0:
            return
        if int(self.positions.max()) >= q_len:  # (the CPU copy: no device sync)
            raise ThinklensError(f"layer {layer}: query position {int(self.positions.max())} >= sequence length "
                                 f"{q_len}")
        pos = self._device_positions.get(query.device)
        if pos is None:
            pos = self._device_positions[query.device] = self.positions.to(query.device)
        scaling = kwargs.get("scaling")
        scaling = module.scaling if scaling is None else scaling
        is_causal = kwargs.get("is_causal")
        is_causal = getattr(module, "is_causal", True) if is_causal is None else is_causal
        if mask is None and is_causal and q_len > 1 and k_len > q_len:  # SDPA crops an empty static cache
            key, k_len = key[:, :, :q_len], q_len
        offset = k_len - q_len  # absolute position of query 0 among the keys
        g = n_heads // n_kv
        k32 = key.float()  # [b, n_kv, k, d]
        chunk = self.chunk_elements or (_DEFAULT_CHUNK_ELEMENTS if query.device.type == "cpu"
                                        else _DEFAULT_GPU_CHUNK_ELEMENTS)
        rows_per_chunk = max(1, chunk // max(1, b * n_heads * k_len))
        kpos = torch.arange(k_len, device=query.device)
        for s in range(0, pos.numel(), rows_per_chunk):
            p = pos[s : s + rows_per_chunk]  # [rows]
            first_future = int(self.positions[s : s + rows_per_chunk].min()) + offset + 1  # (CPU copy: no sync)
            # query head h = kv * g + j reads kv head h // g: one batched matmul per kv head, no K expansion
            # the scaling goes on the few query rows, not on the rows x T scores
            q = (query[:, :, p].float() * scaling).reshape(b, n_kv, g * p.numel(), d)  # [b, n_kv, g*rows, d]
            scores = torch.matmul(q, k32.transpose(-1, -2))  # [b, n_kv, g*rows, k]
            scores = scores.reshape(b, n_heads, p.numel(), k_len)  # [b, n_heads, rows, k]
            if mask is not None:
                m = mask[:, :, p] if mask.shape[2] == q_len else mask[:, :, p + offset]  # [b|1, 1|h, rows, k]
                m = m[..., :k_len]
                if m.dtype == torch.bool:
                    scores.masked_fill_(~m, float("-inf"))
                else:
                    scores.add_(m.float())
            elif is_causal and q_len > 1 and first_future < k_len:
                # keys before the chunk's first row are visible to all its rows: mask only the tail (for answer
                # rows at the end of a trace, a rows x rows corner instead of rows x T)
                future = kpos[None, first_future:] > (p[:, None] + offset)  # [rows, k - first_future]
                scores[..., first_future:].masked_fill_(future, float("-inf"))
            probs = torch.softmax(scores, dim=-1)  # [b, n_heads, rows, k]
            del scores  # the reducer runs with one chunk alive, not two
            if mask is not None:
                probs = torch.nan_to_num_(probs, nan=0.0)  # fully masked rows (padding) -> zeros
            self.reducer(layer, p, probs)
        self.n_calls += 1


@contextlib.contextmanager
def capture_attention(model: Any, positions: Sequence[int] | np.ndarray | torch.Tensor, reducer: Reducer, *,
                      layers: Sequence[int] | None = None,
                      chunk_elements: int | None = None) -> Iterator[AttentionCapture]:
    """Capture softmax attention rows for query ``positions`` during forwards inside the block.

    ``reducer(layer, positions, probs)`` is called per layer and chunk with ``probs [b, n_heads, rows, k]``
    (float32, rows of ``positions``); it must fold them into its own state (see :mod:`thinklens.attention.segments`).
    The model's outputs are those of SDPA; its attention implementation is restored on exit. Here the rows of the
    last token in layer 0 are kept whole (:class:`RowsReducer`):

    >>> import torch, thinklens as tl
    >>> from thinklens.attention.capture import RowsReducer
    >>> model, tok, profile = tl.load_model("tiny-r1", device="cpu")
    >>> ids = torch.tensor([tok("<think>\\n7*4=28\\n</think>\\n28")["input_ids"]])
    >>> rows = RowsReducer()
    >>> with torch.no_grad(), tl.capture_attention(model, [ids.shape[1] - 1], rows, layers=[0]) as cap:
    ...     logits = model(ids, use_cache=False).logits
    >>> probs = rows.layer(0)  # [batch, n_heads, rows, keys]
    >>> tuple(probs.shape), bool(torch.allclose(probs.sum(-1), torch.ones(1, 8, 1))), cap.n_calls
    ((1, 8, 1, 14), True, 1)
    >>> bool(torch.equal(logits, model(ids).logits)), model.config._attn_implementation  # outputs unchanged
    (True, 'sdpa')
    """
    _register()
    cap = AttentionCapture(positions, reducer, layers, chunk_elements)
    mods = _attention_modules(model)
    configs = _configs(model)
    previous = [cfg._attn_implementation for cfg in configs]
    try:
        for cfg in configs:
            cfg._attn_implementation = IMPL_NAME
        for m in mods:
            m._thinklens_capture = cap
        yield cap
    finally:
        for m in mods:
            if hasattr(m, "_thinklens_capture"):
                del m._thinklens_capture
        for cfg, prev in zip(configs, previous):
            cfg._attn_implementation = prev


class RowsReducer:
    """Keeps the raw rows ``[n_layers][b, n_heads, rows, k]`` (for tests and small inspections only: O(rows x T))."""

    def __init__(self) -> None:
        self.rows: dict[int, list[torch.Tensor]] = {}

    def __call__(self, layer: int, positions: torch.Tensor, probs: torch.Tensor) -> None:
        self.rows.setdefault(layer, []).append(probs.detach().cpu())

    def layer(self, layer: int) -> torch.Tensor:
        return torch.cat(self.rows[layer], dim=2)  # [b, n_heads, rows, k]


class KeyProfileReducer:
    """Mean attention each key receives from the query positions: ``[n_layers, n_heads, k]`` (batch 1).

    Why: the token view and the ground-truth checks need, per head, the attention a reasoning token gets from the
    answer, averaged over answer queries; summing rows as they arrive keeps memory at O(layers x heads x T)."""

    def __init__(self, n_layers: int, n_heads: int, seq_len: int) -> None:
        self.sums = torch.zeros(n_layers, n_heads, seq_len, dtype=torch.float64)  # [L, H, T]
        self.counts = torch.zeros(n_layers, dtype=torch.float64)

    def __call__(self, layer: int, positions: torch.Tensor, probs: torch.Tensor) -> None:
        if probs.device.type == "cuda" and self.sums.device != probs.device:  # no host copy per chunk on a GPU
            self.sums, self.counts = self.sums.to(probs.device), self.counts.to(probs.device)
        self.sums[layer, :, : probs.shape[-1]] += probs[0].sum(dim=1).to(self.sums.device, torch.float64)  # [H, k]
        self.counts[layer] += probs.shape[2]

    def mean(self) -> np.ndarray:
        """[n_layers, n_heads, T] mean over queries."""
        return (self.sums / self.counts.clamp(min=1)[:, None, None]).cpu().numpy()

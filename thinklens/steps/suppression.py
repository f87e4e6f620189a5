"""Attention suppression: how much does the answer change when no later token may attend to a reasoning step?

After Thought Anchors (Bogdan, Macar, Nanda, Conmy 2025, section 4): for each step ``[a, b)``, every query at or
after ``b`` is blocked from the step's keys (in every layer and head, or only in the given ``(layer, head)`` pairs,
e.g. the top Reasoning-Focus Heads), the answer is teacher-forced, and we measure the step's *total* effect
(``scope="all"``). ``scope="answer"`` blocks only the answer's own queries (the positions that predict the answer
tokens) and leaves the reasoning after the step as it was: the step's *direct* effect, the causal counterpart of the
answer→step attention that defines the RFHs. Both give

* ``kl[i]``: the mean over the answer tokens of ``KL(base || suppressed)`` between the next-token distributions that
  predict each answer token (logits at positions ``answer.start - 1 ... answer.end - 2``: the answer = the trace's
  answer segment, EOS excluded), and
* ``logprob_delta[i]``: the sum over the answer tokens of ``log p(answer token)``, suppressed minus base (negative:
  the step helped the answer).

How the blocking is done: a function registered in transformers' ``AttentionInterface`` (``"thinklens_suppress"``)
receives each layer's post-RoPE query ``[b, H, q, d]`` and key/value ``[b, n_kv, k, d]``. It computes the layer with
SDPA, unchanged, and for the blocked heads of that layer recomputes SDPA with the mask minus a boolean ``hidden``
matrix ``[q, k]`` (True = this key is hidden from this query). Blocking all heads uses one SDPA call with that mask;
blocking some heads adds one SDPA call over those heads only (query head ``h`` reads kv head ``h // (H / n_kv)``, so
GQA models work), so no per-head ``[b, H, q, k]`` mask and no ``T x T`` probabilities are ever built.

Engines (:data:`ENGINES`):

* ``"naive"`` (the reference): one full forward over the trace per step, with ``hidden[s:, a:b] = True`` where
  ``s`` is the first blocked query (``b`` for scope all, the first answer-predicting position for scope answer).
* ``"fast"``: the step's own keys and everything before ``s`` are unchanged by the blocking, so one forward of the
  trace keeps the KV cache and each step recomputes only its blocked queries ``[s, answer.end - 1)`` (scope all:
  the suffix after the step; scope answer: the answer rows) on top of the cached prefix. These rows of several steps
  are *packed* end to end into one sequence (at most ``max_tokens`` query tokens per forward) over the single shared
  cache, with a custom 4D mask (copy ``i`` sees the cached tokens before its ``s_i`` and its own earlier tokens) and
  position ids ``s_i ...`` per copy, exactly as :mod:`thinklens.patching.engine` packs patched runs; the cache is
  viewed up to the chunk's largest ``s_i`` only (no copy sees further). Only the answer-predicting positions are
  unembedded (``logits_to_keep``). Memory per forward: the ``[packed, T + packed]`` boolean mask.

What the fast engine saves with scope all is every token before each step: with ``n`` steps spread evenly over a
reasoning of ``R`` tokens it computes about ``n R / 2`` query tokens instead of ``n T`` (so at most ~2x for any exact
engine: measured 1.70-1.87x against a FLOP bound of 1.98 in ``benchmarks/steps.py``); it cannot skip the later
reasoning tokens, whose attention the blocking changes. With scope answer it recomputes only the answer rows of
every step, packed into one forward: measured 16.4x (FLOP bound 17.6; the answer rows' vocabulary projection is the
same in both engines). ``fast`` and ``naive`` agree to <= 1e-4 (measured <= 3.1e-5; tests: tiny-r1, random Qwen2
and Llama GQA configs, both scopes, all heads and per head).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from thinklens.cache import cache_kw, cache_of
from thinklens.errors import ThinklensError
from thinklens.steps._common import check_spans, consecutive_groups, device_of, require_answer

ENGINES = ("fast", "naive")
SCOPES = ("all", "answer")  # who is blocked from the step: every later query (total effect) / the answer's only
IMPL_NAME = "thinklens_suppress"
EFFECT_BYTES = 1 << 30  # fp32 work per chunk of spans in _effects (1 GiB): bounds memory on long traces


@dataclass
class SuppressionResult:
    """Effect on the teacher-forced answer of blocking attention to each step (see the module doc); made by
    :func:`suppression_effects` (example there)."""

    kl: np.ndarray  # [n_steps] mean over answer tokens of KL(base || suppressed), nats
    logprob_delta: np.ndarray  # [n_steps] sum over answer tokens of log p(token): suppressed - base
    spans: list[tuple[int, int]] = field(default_factory=list)
    heads: list[tuple[int, int]] | None = None  # None: every head of every layer
    engine: str = "fast"
    scope: str = "all"
    base_logprob: float = 0.0  # sum over answer tokens of log p(token) without suppression
    n_answer_tokens: int = 0

    def ranking(self) -> list[int]:
        """Step indices by decreasing ``kl`` (the most-used step first)."""
        return [int(i) for i in np.argsort(-self.kl, kind="stable")]

    def to_dict(self) -> dict[str, Any]:
        return {"kl": self.kl.tolist(), "logprob_delta": self.logprob_delta.tolist(),
                "spans": [list(s) for s in self.spans], "heads": None if self.heads is None else
                [list(h) for h in self.heads], "engine": self.engine, "scope": self.scope,
                "base_logprob": self.base_logprob,
                "n_answer_tokens": self.n_answer_tokens}


# ------------------------------------------------------------------------------------------ attention interface
class _Block:
    """What the registered attention function hides during one forward."""

    def __init__(self, hidden: torch.Tensor, heads: dict[int, list[int]] | None) -> None:
        self.hidden = hidden  # [q, k] bool: True = key hidden from query
        self.heads = heads  # layer -> blocked query heads; None = all heads of all layers
        self._index: dict[tuple[int, Any], torch.Tensor] = {}

    def heads_of(self, layer: int, device: Any) -> torch.Tensor | None:
        """None = all heads; an empty tensor = none in this layer."""
        if self.heads is None:
            return None
        key = (layer, device)
        if key not in self._index:
            self._index[key] = torch.as_tensor(self.heads.get(layer, []), dtype=torch.long, device=device)
        return self._index[key]


def _allowed(mask: torch.Tensor | None, q_len: int, k_len: int, device: Any) -> torch.Tensor:
    """The layer's mask as booleans ``[b|1, 1, q, k]`` (True = may attend); plain causal when transformers passes
    None (SDPA's ``is_causal`` path)."""
    if mask is None:
        qpos = torch.arange(q_len, device=device)[:, None] + (k_len - q_len)
        return (torch.arange(k_len, device=device)[None, :] <= qpos)[None, None]  # [1, 1, q, k]
    mask = mask[..., :k_len]
    if mask.dtype == torch.bool:
        return mask
    return mask > torch.finfo(mask.dtype).min / 2  # additive mask: 0 = attend, dtype min = masked


def _suppress_forward(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                      attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """The registered attention function: SDPA, with the active block's keys hidden for its heads."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    block: _Block | None = getattr(module, "_thinklens_block", None)
    if block is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if kwargs.get("softcap") is not None or getattr(module, "sinks", None) is not None or "s_aux" in kwargs:
        raise ThinklensError(f"layer {module.layer_idx}: attention soft-capping / sinks are not supported")
    heads = block.heads_of(int(module.layer_idx), query.device)
    if heads is not None and heads.numel() == 0:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    b, n_heads, q_len, _ = query.shape  # query [b, H, q, d]; key/value [b, n_kv, k, d]
    k_len = key.shape[2]
    if tuple(block.hidden.shape) != (q_len, k_len):
        raise ThinklensError(f"layer {module.layer_idx}: suppression mask {tuple(block.hidden.shape)} does not fit "
                             f"the forward's [{q_len}, {k_len}] queries x keys")
    blocked = _allowed(attention_mask, q_len, k_len, query.device) & ~block.hidden  # [b|1, 1, q, k]
    if heads is None:
        kw = {k: v for k, v in kwargs.items() if k != "is_causal"}
        return sdpa_attention_forward(module, query, key, value, blocked, is_causal=False, **kw)
    out, _ = sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)  # [b, q, H, d]
    g = n_heads // key.shape[1]
    scaling = kwargs.get("scaling")
    scaling = module.scaling if scaling is None else scaling
    sub = torch.nn.functional.scaled_dot_product_attention(
        query[:, heads], key[:, heads // g], value[:, heads // g], attn_mask=blocked, scale=scaling)  # [b, h, q, d]
    out = out.clone()
    out[:, :, heads] = sub.transpose(1, 2).to(out.dtype)
    return out, None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(IMPL_NAME, _suppress_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(IMPL_NAME, sdpa_mask)


@contextlib.contextmanager
def _blocking(model: Any, block: _Block) -> Iterator[None]:
    """Route every attention layer of ``model`` through :func:`_suppress_forward` with ``block`` for the block."""
    _register()
    mods = [m for m in model.modules() if hasattr(m, "layer_idx") and hasattr(m, "scaling")]
    if not mods:
        raise ThinklensError(f"{type(model).__name__} has no attention modules with `layer_idx` and `scaling`; "
                             "suppression needs a transformers model that uses the AttentionInterface")
    configs = {id(c): c for m in model.modules() if (c := getattr(m, "config", None)) is not None
               and hasattr(c, "_attn_implementation")}
    previous = {k: c._attn_implementation for k, c in configs.items()}
    try:
        for c in configs.values():
            c._attn_implementation = IMPL_NAME
        for m in mods:
            m._thinklens_block = block
        yield
    finally:
        for m in mods:
            if hasattr(m, "_thinklens_block"):
                del m._thinklens_block
        for k, c in configs.items():
            c._attn_implementation = previous[k]


def _check_model(model: Any) -> None:
    cfg = getattr(model.config, "text_config", None) or model.config
    if "sliding_attention" in (getattr(cfg, "layer_types", None) or []) or getattr(cfg, "use_sliding_window", False):
        raise ThinklensError("attention suppression does not support sliding-window attention layers")


def _heads_by_layer(model: Any, heads: Sequence[Sequence[int]] | None) -> dict[int, list[int]] | None:
    if heads is None:
        return None
    from thinklens.modules import attention_shape

    n_layers, n_heads, _, _ = attention_shape(model)
    out: dict[int, list[int]] = {}
    for h in heads:
        layer, head = int(h[0]), int(h[1])
        if not (0 <= layer < n_layers and 0 <= head < n_heads):
            raise ThinklensError(f"head ({layer}, {head}) outside the model's {n_layers} layers x {n_heads} heads")
        out.setdefault(layer, [])
        if head not in out[layer]:
            out[layer].append(head)
    return out


# ----------------------------------------------------------------------------------------------------- engines
def _effects(base: torch.Tensor, sup: torch.Tensor, targets: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``base [n_ans, V]``, ``sup [c, n_ans, V]`` logits, ``targets [n_ans]`` -> (kl [c], logprob delta [c]).

    Spans go in chunks of ~``EFFECT_BYTES`` of fp32 work: 200 steps x 50 answer tokens x a 151,936-token vocabulary
    would otherwise need three fp32 copies of 6 GB each."""
    lb = torch.log_softmax(base.float(), dim=-1)  # [n_ans, V]
    pb = lb.exp()  # [n_ans, V]
    tb = lb.gather(-1, targets[:, None])[:, 0].sum()  # []
    step = max(1, EFFECT_BYTES // max(1, 12 * lb.numel()))
    kl, ts = [], []
    for c0 in range(0, sup.shape[0], step):
        ls = torch.log_softmax(sup[c0: c0 + step].float(), dim=-1)  # [c, n_ans, V]
        kl.append((pb[None] * (lb[None] - ls)).sum(-1).mean(-1))  # [c]
        ts.append(ls.gather(-1, targets[None, :, None].expand(ls.shape[0], -1, 1))[..., 0].sum(-1))  # [c]
        del ls
    if not kl:
        return np.zeros(0), np.zeros(0)
    return torch.cat(kl).double().cpu().numpy(), (torch.cat(ts) - tb).double().cpu().numpy()


def _naive(model: Any, ids: torch.Tensor, spans: list[tuple[int, int]], starts: list[int], keep: torch.Tensor,
           heads: dict[int, list[int]] | None) -> tuple[torch.Tensor, torch.Tensor]:
    """One full forward per step; queries from ``starts[i]`` on are blocked from step ``i``. ``ids [1, E]``; returns
    base ``[n_ans, V]`` and suppressed ``[n, n_ans, V]``."""
    E = ids.shape[1]
    base = model(input_ids=ids, use_cache=False, logits_to_keep=keep).logits[0]  # [n_ans, V]
    out = []
    for (a, b), s in zip(spans, starts):
        hidden = torch.zeros(E, E, dtype=torch.bool, device=ids.device)  # [q, k]
        hidden[s:, a:b] = True
        with _blocking(model, _Block(hidden, heads)):
            out.append(model(input_ids=ids, use_cache=False, logits_to_keep=keep).logits[0])  # [n_ans, V]
    return base, torch.stack(out)


def _fast(model: Any, ids: torch.Tensor, spans: list[tuple[int, int]], starts: list[int], keep: torch.Tensor,
          heads: dict[int, list[int]] | None, max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One cached forward, then each step's suffix ``[starts[i], E)`` (the blocked queries) packed with others over
    the shared cache."""
    from transformers import DynamicCache

    dev, E = ids.device, ids.shape[1]
    out = model(input_ids=ids, use_cache=True, logits_to_keep=keep)
    base, full = out.logits[0], cache_of(out)  # [n_ans, V]
    result: list[torch.Tensor | None] = [None] * len(spans)
    order = sorted(range(len(spans)), key=lambda i: starts[i])
    for chunk in consecutive_groups([E - starts[i] for i in order], max_tokens):
        idx = [order[j] for j in chunk]
        chunk_starts = [starts[i] for i in idx]
        offsets = np.cumsum([0] + [E - b for b in chunk_starts])  # copy r occupies packed rows [o_r, o_r+1)
        N, P = int(offsets[-1]), max(chunk_starts)  # no copy of the chunk sees cached positions >= P
        kpos = torch.arange(P, device=dev)
        allowed = torch.zeros(N, P + N, dtype=torch.bool, device=dev)  # [N, P + N]
        hidden = torch.zeros(N, P + N, dtype=torch.bool, device=dev)  # [N, P + N]
        for r, i in enumerate(idx):
            a, b = spans[i]
            o0, o1 = int(offsets[r]), int(offsets[r + 1])
            allowed[o0:o1, :P] = kpos < starts[i]
            allowed[o0:o1, P + o0:P + o1] = torch.ones(o1 - o0, o1 - o0, dtype=torch.bool, device=dev).tril()
            hidden[o0:o1, a:b] = True
        packed = torch.cat([ids[0, b:] for b in chunk_starts])[None]  # [1, N]
        pos = torch.cat([torch.arange(b, E, device=dev) for b in chunk_starts])[None]  # [1, N]
        rows = torch.cat([torch.as_tensor(offsets[r] - b, device=dev) + keep
                          for r, b in enumerate(chunk_starts)])  # [c * n_ans] answer-predicting packed rows
        cache = DynamicCache(ddp_cache_data=[(la.keys[:, :, :P], la.values[:, :, :P])
                                             for la in full.layers])  # views of the shared cache, never mutated
        with _blocking(model, _Block(hidden, heads)):
            logits = model(input_ids=packed, attention_mask=allowed[None, None], position_ids=pos,
                           **cache_kw(model, cache), use_cache=True, logits_to_keep=rows).logits[0]  # [c*n_ans, V]
        for r, i in enumerate(idx):
            result[i] = logits[r * len(keep):(r + 1) * len(keep)]
        del cache, logits
    return base, torch.stack(result)  # type: ignore[arg-type]


@torch.no_grad()
def suppression_effects(
    model: Any,
    profile: Any,
    trace: Any,
    spans: Sequence[Sequence[int]],
    *,
    heads: Sequence[Sequence[int]] | None = None,
    engine: str = "fast",
    scope: str = "all",
    max_tokens: int = 4096,
    within: Any = None,
) -> SuppressionResult:
    """Block attention to each step and measure the teacher-forced answer's change.

    ``spans``: the steps as absolute ``[start, end)`` token spans of ``trace.ids`` inside the reasoning;
    ``heads``: ``(layer, head)`` pairs to block (default: all heads of all layers); ``scope``: ``"all"`` blocks
    every later query (Thought Anchors: the step's total effect), ``"answer"`` only the answer's own queries (its
    direct read of the step; see the module doc); ``engine``: ``"fast"`` (prefix KV reuse, up to ``max_tokens``
    packed query tokens per forward) or ``"naive"`` (the reference); ``within``: the span the steps must lie in
    (default the reasoning; see :func:`suppressed_logits`). On tiny-r1 the line that states the final value
    carries the answer, by both scopes::

        >>> from thinklens.models import load_model
        >>> from thinklens.toy import full_text, generate_problems
        >>> from thinklens.traces import Trace
        >>> model, tok, profile = load_model("tiny-r1")
        >>> trace = Trace.from_text(full_text(generate_problems(1, seed=0)[0]), tok, profile)
        >>> r = trace.reasoning
        >>> spans, start = [], r.start + 1  # one step per reasoning line (newline excluded)
        >>> for line in trace.span_text(r)[1:].splitlines():
        ...     spans.append((start, start + len(line))); start += len(line) + 1
        >>> res = suppression_effects(model, profile, trace, spans)
        >>> trace.span_text(type(r)(*spans[res.ranking()[0]]))
        'Final answer is 45.'
        >>> direct = suppression_effects(model, profile, trace, spans, scope="answer")
        >>> direct.ranking()[0] == res.ranking()[0]
        True
    """
    sl = suppressed_logits(model, profile, trace, spans, heads=heads, engine=engine, scope=scope,
                           max_tokens=max_tokens, within=within)
    kl, delta = _effects(sl.base, sl.suppressed, sl.targets)
    base_lp = float(torch.log_softmax(sl.base.float(), -1).gather(-1, sl.targets[:, None]).sum())
    return SuppressionResult(kl=kl, logprob_delta=delta, spans=sl.spans,
                             heads=None if heads is None else [(int(h[0]), int(h[1])) for h in heads],
                             engine=engine, scope=scope, base_logprob=base_lp, n_answer_tokens=len(sl.targets))


@dataclass
class SuppressedLogits:
    """The answer-predicting logits of a trace with and without each span blocked (see :func:`suppressed_logits`).

    Row ``j`` of ``base``/``suppressed[i]`` is the next-token logits at position ``answer_start - 1 + j``, which
    predict answer token ``targets[j]``."""

    base: torch.Tensor  # [n_answer, V] unsuppressed
    suppressed: torch.Tensor  # [n_spans, n_answer, V]
    targets: torch.Tensor  # [n_answer] the trace's answer tokens (EOS excluded)
    answer_start: int
    spans: list[tuple[int, int]]

    def effects(self) -> tuple[np.ndarray, np.ndarray]:
        """``(kl [n_spans], logprob_delta [n_spans])`` exactly as :class:`SuppressionResult` defines them."""
        return _effects(self.base, self.suppressed, self.targets)


@torch.no_grad()
def suppressed_logits(model: Any, profile: Any, trace: Any, spans: Sequence[Sequence[int]], *,
                      heads: Sequence[Sequence[int]] | None = None, engine: str = "fast", scope: str = "all",
                      max_tokens: int = 4096, within: Any = None) -> SuppressedLogits:
    """The logits behind :func:`suppression_effects`, for callers that read one answer position (the faithfulness
    stage's Δ log-prob of a hinted answer). ``within`` (a :class:`~thinklens.traces.Span`, default the reasoning)
    is where the spans may lie, e.g. ``trace.prompt`` for a hint inside the prompt: both engines and scopes only
    need every blocked query to come after the span, which holds for any span before the think-close.

    >>> from thinklens.models import load_model
    >>> from thinklens.toy import full_text, generate_problems
    >>> from thinklens.traces import Trace
    >>> model, tok, profile = load_model("tiny-r1")
    >>> trace = Trace.from_text(full_text(generate_problems(1, seed=0)[0]), tok, profile)
    >>> sl = suppressed_logits(model, profile, trace, [(2, 6)], within=trace.prompt, scope="answer")
    >>> tuple(sl.suppressed.shape[:2]) == (1, len(trace.answer)), sl.base.shape == sl.suppressed.shape[1:]
    (True, True)
    """
    if engine not in ENGINES:
        raise ThinklensError(f"unknown engine {engine!r}; choose from {ENGINES}")
    if scope not in SCOPES:
        raise ThinklensError(f"unknown suppression scope {scope!r}; choose from {SCOPES}")
    if max_tokens < 1:
        raise ThinklensError(f"max_tokens must be >= 1, got {max_tokens}")
    steps = check_spans(trace, spans, within)
    a0, a1 = require_answer(trace)
    _check_model(model)
    by_layer = _heads_by_layer(model, heads)
    dev = device_of(model)
    E = a1 - 1  # inputs up to the token before the last answer token: its logits predict that token
    ids = torch.as_tensor(trace.ids[:E], dtype=torch.long, device=dev)[None]  # [1, E]
    keep = torch.arange(a0 - 1, E, device=dev)  # [n_ans] positions whose logits predict the answer tokens
    targets = torch.as_tensor(trace.ids[a0:a1], dtype=torch.long, device=dev)  # [n_ans]
    # the blocked queries start after the step (all) or at the first answer-predicting position (answer)
    starts = [b if scope == "all" else max(b, a0 - 1) for _, b in steps]
    if engine == "naive":
        base, sup = _naive(model, ids, steps, starts, keep, by_layer)
    else:
        base, sup = _fast(model, ids, steps, starts, keep, by_layer, max_tokens)
    return SuppressedLogits(base, sup, targets, int(a0), steps)

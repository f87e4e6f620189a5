"""Attention at step level: how much the answer, and each later step, reads each reasoning step, per (layer, head).

Two quantities from one forward pass (:func:`step_attention`), both *masses* (sums over a step's key tokens) averaged
over query tokens, like the paper's ``a2r``:

* ``answer_step [L, H, n]``: for each head, the mean over answer queries (``trace.answer``, EOS excluded) of the
  attention mass on step i's tokens. Summed over steps it is the head's ``a2r`` when the steps cover the reasoning.
  Averaged over the top Reasoning-Focus Heads it is the per-step ``attention`` number.
* ``step_step [L, H, n, n]``: entry ``[.., j, i]`` is the mean over step j's query tokens of the attention mass on
  step i's tokens (lower triangle with diagonal; zero above). Thought Anchors' receiver heads are read from it
  (:mod:`thinklens.steps.receivers`).

Memory: rows of the answer and of every step's tokens come through
:func:`thinklens.attention.capture.capture_attention` in chunks of O(chunk x T); :class:`StepReducer` folds each
chunk into per-step masses at once (``index_add_`` of the keys into their steps: O(rows x n) extra, no copy of the
chunk) and adds them into ``[L, H, n+1, n]`` float32 sums. Nothing of size T x T is ever built; the state grows as
``L x H x n_steps^2`` (28 x 12 x 300^2 x 4 bytes = 121 MB for a 300-step trace on a 1.5B model).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from thinklens.attention.capture import capture_attention
from thinklens.errors import ThinklensError
from thinklens.traces import Trace


class StepReducer:
    """Folds attention rows into per-(query step, key step) masses.

    ``spans``: the steps' absolute token spans (ordered, non-overlapping). ``answer``: the answer's token span (its
    queries form group ``n``). Query rows outside every step and the answer are ignored.

    >>> red = StepReducer(1, 1, [(2, 4), (4, 6)], (7, 8), seq_len=8)
    >>> red(0, torch.tensor([5, 7]), torch.tensor([[[[0, 0, .5, 0, 0, .5, 0, 0], [0, 0, 0, .2, .8, 0, 0, 0]]]]))
    >>> [m.astype(float).round(2).tolist() for m in red.means()]  # answer→step; step→step: 1 of step 1's 2 rows
    [[[[0.2, 0.8]]], [[[[0.0, 0.0], [0.25, 0.25]]]]]
    """

    def __init__(self, n_layers: int, n_heads: int, spans: list[tuple[int, int]], answer: tuple[int, int] | None,
                 seq_len: int) -> None:
        self.n = len(spans)
        self.k0, self.k1 = int(spans[0][0]), int(spans[-1][1])  # key range covered by the steps
        key_step = np.full(self.k1 - self.k0, self.n, dtype=np.int64)  # [k1-k0] step of each key, n = in a gap
        for i, (a, b) in enumerate(spans):
            key_step[a - self.k0 : b - self.k0] = i
        self.key_step = torch.as_tensor(key_step)
        group = np.full(seq_len, -1, dtype=np.int64)  # [T] query group: step index, n = answer, -1 = ignored
        for i, (a, b) in enumerate(spans):
            group[a:b] = i
        if answer is not None:
            group[answer[0] : answer[1]] = self.n
        self.group = torch.as_tensor(group)
        self.sums = torch.zeros(n_layers, n_heads, self.n + 1, self.n, dtype=torch.float32)  # [L, H, n+1, n]
        self.counts = torch.as_tensor(np.bincount(group[group >= 0], minlength=self.n + 1).astype(np.float32))

    @property
    def positions(self) -> np.ndarray:
        """The query positions to capture (every step token and every answer token)."""
        return np.flatnonzero(self.group.numpy() >= 0)

    def __call__(self, layer: int, positions: torch.Tensor, probs: torch.Tensor) -> None:
        p = probs[0]  # [H, rows, k] (batch 1)
        k = p.shape[-1]
        k1 = min(self.k1, k)
        if k1 <= self.k0:
            return
        # sum each step's keys in place of a copy of the chunk: O(rows x n) extra memory
        mass = torch.zeros(p.shape[0], p.shape[1], self.n + 1, dtype=p.dtype, device=p.device)  # [H, rows, n+1]
        mass.index_add_(2, self.key_step[: k1 - self.k0].to(p.device), p[..., self.k0 : k1])
        mass = mass[..., : self.n].cpu()  # [H, rows, n]
        groups = self.group[positions.cpu()]  # [rows]
        keep = groups >= 0
        if not bool(keep.all()):
            mass, groups = mass[:, keep], groups[keep]
        self.sums[layer].index_add_(1, groups, mass)  # [H, n+1, n] += per-group row sums

    def means(self) -> tuple[np.ndarray, np.ndarray]:
        """``answer_step [L, H, n]`` and ``step_step [L, H, n, n]`` (means over each group's queries)."""
        m = (self.sums / self.counts.clamp(min=1)[None, None, :, None]).numpy()  # [L, H, n+1, n]
        return m[:, :, self.n].copy(), m[:, :, : self.n].copy()


@dataclass
class StepAttention:
    """Step-level attention of one trace (see the module doc). ``n_tokens [n]``: tokens per step."""

    answer_step: np.ndarray  # [L, H, n]
    step_step: np.ndarray | None  # [L, H, n (query step), n (key step)]
    n_tokens: np.ndarray  # [n]

    def answer_scores(self, heads: list[tuple[int, int]]) -> np.ndarray:
        """[n] mean over ``heads`` of the answer→step mass: the per-step ``attention`` number."""
        return head_mean(self.answer_step, heads)


def head_mean(values: np.ndarray, heads: list[tuple[int, int]]) -> np.ndarray:
    """Mean over ``heads`` of ``values [L, H, ...]``: ``[...]``. Raises on an out-of-range head.

    >>> head_mean(np.arange(8.0).reshape(2, 2, 2), [(0, 1), (1, 0)]).tolist()
    [3.0, 4.0]
    """
    L, H = values.shape[:2]
    if not heads:
        raise ThinklensError("no heads given")
    for layer, head in heads:
        if not (0 <= layer < L and 0 <= head < H):
            raise ThinklensError(f"head L{layer}H{head} out of range for {L} layers x {H} heads")
    return np.mean([values[layer, head] for layer, head in heads], axis=0)


def step_attention(model: Any, trace: Trace, spans: list[tuple[int, int]], *, step_matrix: bool = True,
                   chunk_elements: int | None = None) -> StepAttention:
    """Answer→step and (``step_matrix=True``) step→step attention of one trace, one forward pass, batch 1.

    >>> from thinklens.models import load_model
    >>> from thinklens.toy import full_text, generate_problems
    >>> from thinklens.steps.segment import segment_reasoning, step_spans
    >>> model, tok, prof = load_model("tiny-r1")
    >>> trace = Trace.from_text(full_text(generate_problems(1, seed=0)[0]), tok, prof)
    >>> sa = step_attention(model, trace, step_spans(segment_reasoning(trace)))
    >>> sa.answer_step.shape, sa.step_step.shape
    ((4, 8, 5), (4, 8, 5, 5))
    >>> int(sa.answer_scores([(1, 2)]).argmax())  # the copy head reads "Final answer is 45."
    4
    """
    from thinklens.modules import attention_shape
    from thinklens.steps.segment import check_spans

    check_spans(trace, spans)
    if trace.answer is None or len(trace.answer) == 0:
        raise ThinklensError("the trace has no answer after its reasoning: no answer queries")
    n_layers, n_heads, _, _ = attention_shape(model)
    red = StepReducer(n_layers, n_heads, spans, (trace.answer.start, trace.answer.end), len(trace))
    pos = red.positions if step_matrix else np.arange(trace.answer.start, trace.answer.end)
    kw = {} if chunk_elements is None else {"chunk_elements": chunk_elements}
    device = next(model.parameters()).device
    with torch.no_grad(), capture_attention(model, pos, red, **kw):
        model(input_ids=torch.as_tensor([trace.ids], device=device), use_cache=False, logits_to_keep=1)
    answer_step, step_step = red.means()
    n_tokens = np.array([b - a for a, b in spans], dtype=np.int64)
    return StepAttention(answer_step, step_step if step_matrix else None, n_tokens)

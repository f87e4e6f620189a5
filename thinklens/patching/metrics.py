"""Metrics on final-position logits: how strongly the model prefers the clean answer over the corrupted one.

Zhang et al. score a patch by the *normalized logit difference*::

    LD(run)  = logit[clean answer] - logit[corrupted answer]           at the final position (the ``{`` of \\boxed{)
    NLD      = (LD(patched) - LD(corrupted)) / (LD(clean) - LD(corrupted))

NLD is 0 when the patch changes nothing and 1 when it fully restores the clean preference (the answer flips from
the corrupted to the clean one). A metric here is any callable mapping ``[n, vocab]`` logits to ``[n]`` scores, so
users can pass their own; :func:`normalize` turns any such score into the normalized form.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

Metric = Callable[[torch.Tensor], torch.Tensor]  # [n, vocab] final-position logits -> [n]


@dataclass(frozen=True)
class LogitDiff:
    """``logit[clean_token] - logit[corrupted_token]``: the paper's metric.

    >>> import torch, thinklens as tl
    >>> tl.LogitDiff(clean_token=2, corrupted_token=0)(torch.tensor([[1.0, 0.0, 3.5]]))
    tensor([2.5000])
    """

    clean_token: int
    corrupted_token: int

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:  # logits: [n, vocab]
        return logits[..., self.clean_token].float() - logits[..., self.corrupted_token].float()


@dataclass(frozen=True)
class LogProbDiff:
    """Difference of log-probabilities (sensitive to the rest of the vocabulary, unlike the logit difference)."""

    clean_token: int
    corrupted_token: int

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        lp = torch.log_softmax(logits.float(), dim=-1)  # [n, vocab]
        return lp[..., self.clean_token] - lp[..., self.corrupted_token]


@dataclass(frozen=True)
class ProbDiff:
    clean_token: int
    corrupted_token: int

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(logits.float(), dim=-1)  # [n, vocab]
        return p[..., self.clean_token] - p[..., self.corrupted_token]


def rank_of(logits: torch.Tensor, token: int) -> torch.Tensor:
    """0-based rank of ``token`` (0 = the argmax) in each row of ``[n, vocab]`` logits."""
    return (logits > logits[..., token : token + 1]).sum(dim=-1)


def answer_ranks(logits: torch.Tensor, clean_token: int, corrupted_token: int) -> tuple[torch.Tensor, torch.Tensor]:
    return rank_of(logits, clean_token), rank_of(logits, corrupted_token)


def normalize(patched: np.ndarray | float, clean: float, corrupted: float) -> np.ndarray:
    """``(patched - corrupted) / (clean - corrupted)``; NaN when clean == corrupted (the pair carries no signal)."""
    denom = clean - corrupted
    patched = np.asarray(patched, dtype=np.float64)
    if denom == 0:
        return np.full_like(patched, np.nan)
    return (patched - corrupted) / denom

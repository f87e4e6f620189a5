"""Reducers that fold captured attention rows into per-segment masses as the rows arrive
(:func:`thinklens.attention.capture.capture_attention` hands them one chunk at a time).

Why a module of its own: the per-(query group, key segment) accumulation is shared by the head scores, the step
attention and the faithfulness mechanism, and where it accumulates (on the GPU, never one host copy per chunk)
decides the capture's cost there.
"""
from __future__ import annotations

import numpy as np
import torch

from thinklens.traces import SEGMENTS


class SegmentReducer:
    """Folds attention rows into per-(query group, key segment) masses and, optionally, a per-key profile.

    ``query_group [T]``: group index of each query position (-1 = not captured). ``key_labels [T]``: segment index
    of each key (:func:`Trace.segment_labels`, -1 → an extra "other" column). ``profile_group``: queries of this
    group also accumulate the attention each key receives (``[n_layers, n_heads, T]``) for the token view.
    ``n_labels`` (default ``len(SEGMENTS)``): how many key labels there are, for callers that add labels of their
    own after the segments (the faithfulness stage labels a hint span inside the prompt ``len(SEGMENTS)``)."""

    def __init__(self, n_layers: int, n_heads: int, query_group: np.ndarray, key_labels: np.ndarray, n_groups: int,
                 profile_group: int | None = None, n_labels: int | None = None) -> None:
        self.n_groups = n_groups
        self.query_group = torch.as_tensor(query_group, dtype=torch.long)  # [T]
        n_seg = (len(SEGMENTS) if n_labels is None else int(n_labels)) + 1
        kl = torch.as_tensor(key_labels, dtype=torch.long).clone()
        kl[kl < 0] = n_seg - 1
        self.onehot = torch.nn.functional.one_hot(kl, n_seg).float()  # [T, n_seg]
        # keys come in runs of one segment (7 in a trace): a sliced sum per run reads each chunk once, about twice as
        # fast as the matmul with the one-hot (N = n_seg is a poor GEMM shape), which stays for many short runs
        lab = kl.numpy()
        cut = np.flatnonzero(np.diff(lab)) + 1
        runs = list(zip(np.r_[0, cut].tolist(), np.r_[cut, len(lab)].tolist())) if len(lab) else []
        self.runs = [(a, b, int(lab[a])) for a, b in runs] if len(runs) <= 16 else None
        self.n_seg = n_seg
        self.sums = torch.zeros(n_layers, n_groups, n_heads, n_seg, dtype=torch.float64)
        self.counts = torch.zeros(n_layers, n_groups, dtype=torch.float64)
        self.profile_group = profile_group
        self.profile = (torch.zeros(n_layers, n_heads, len(key_labels), dtype=torch.float64)
                        if profile_group is not None else None)  # [L, H, T]

    def _to(self, device: torch.device) -> None:
        """Accumulate where the rows are (CUDA): one host copy per chunk and layer would stall the GPU (measured on
        an H200: 364 chunk syncs made a 16k-token capture 2.4x a plain forward). MPS has no float64: stays on CPU."""
        if device.type != "cuda" or self.sums.device == device:
            return
        self.query_group, self.onehot = self.query_group.to(device), self.onehot.to(device)
        self.sums, self.counts = self.sums.to(device), self.counts.to(device)
        if self.profile is not None:
            self.profile = self.profile.to(device)

    def __call__(self, layer: int, positions: torch.Tensor, probs: torch.Tensor) -> None:
        self._to(probs.device)
        p = probs[0]  # [H, rows, k] (batch 1)
        k = p.shape[-1]
        if self.runs is not None:
            mass = torch.zeros(*p.shape[:2], self.n_seg, dtype=p.dtype, device=p.device)  # [H, rows, n_seg]
            for a, b, label in self.runs:
                if a < k:
                    mass[..., label] += p[..., a : min(b, k)].sum(-1)
        else:
            mass = torch.matmul(p, self.onehot[:k].to(p.device))  # [H, rows, n_seg]
        acc = self.sums.device
        groups = self.query_group[positions.to(acc)]  # [rows]; -1 = not captured
        member = (groups[:, None] == torch.arange(self.n_groups, device=acc)).double()  # [rows, G]
        self.sums[layer] += torch.einsum("hrs,rg->ghs", mass.to(acc, torch.float64), member)
        self.counts[layer] += member.sum(0)
        if self.profile is not None:
            w = member[:, self.profile_group].to(p.device, p.dtype)  # [rows]
            self.profile[layer, :, :k] += torch.matmul(p.transpose(1, 2), w).to(acc, torch.float64)  # [H, k]

    def means(self) -> np.ndarray:
        """[n_layers, n_groups, n_heads, n_segments+1] mean over the group's queries."""
        return (self.sums / self.counts.clamp(min=1)[:, :, None, None]).cpu().numpy()

    def profile_means(self) -> np.ndarray | None:
        """[n_layers, n_heads, T] mean attention each key gets from the profile group's queries (None: no profile)."""
        if self.profile is None:
            return None
        counts = self.counts[:, self.profile_group].clamp(min=1)[:, None, None]
        return (self.profile / counts).cpu().numpy().astype(np.float32)

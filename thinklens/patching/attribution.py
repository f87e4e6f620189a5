"""Attribution patching: a first-order estimate of every patch at once, as a cheap screen before exact patching.

Patching site ``a`` at one position changes the metric ``M`` by about ``grad_a M(corrupted) . (a_clean -
a_corrupted)`` (a first-order Taylor expansion around the corrupted run; Nanda 2023, Syed et al. 2023). One
corrupted forward + ONE backward pass gives the gradient for every position x layer x site kind, and one clean
forward gives the clean activations, so the whole grid costs about three forwards instead of one per patch.
The estimate is good where the metric is close to linear in the activation and poor where attention saturates,
so report its Spearman rank correlation against exact patching on the same grid (:func:`spearman`) before
trusting it as a screen. Supported kinds are the ones that are tensors on the model's computation path:
``resid_pre``, ``resid_post``, ``attn_out`` and ``mlp_out``.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from thinklens.errors import ThinklensError
from thinklens.modules import attention_shape
from thinklens.patching.engine import PairTensors, _forward
from thinklens.patching.metrics import LogitDiff, Metric, normalize
from thinklens.patching.targets import Site, SiteKind, capture
from thinklens.profiles import Profile

SUPPORTED = (SiteKind.RESID_PRE, SiteKind.RESID_POST, SiteKind.ATTN_OUT, SiteKind.MLP_OUT)
DEFAULT_KINDS = (SiteKind.RESID_PRE, SiteKind.ATTN_OUT, SiteKind.MLP_OUT)


@dataclass
class AttributionResult:
    """``scores[kind]``: [T, n_layers] estimated metric change (patched - corrupted) for every position x layer."""

    scores: dict[str, np.ndarray]
    clean: float
    corrupted: float

    def nld(self, kind: str | SiteKind) -> np.ndarray:
        """[T, n_layers] estimated NLD: ``score / (clean - corrupted)``."""
        k = SiteKind.parse(kind).value
        if k not in self.scores:
            raise ThinklensError(f"no attribution scores for {k!r} (have {sorted(self.scores)})")
        return normalize(self.scores[k] + self.corrupted, self.clean, self.corrupted)


def attribution_patching(
    model: Any, profile: Profile, pair: Any, kinds: Sequence[str | SiteKind] = DEFAULT_KINDS,
    metric: Metric | None = None,
) -> AttributionResult:
    """Gradient x (clean - corrupted) activation for every position and layer of ``kinds``, one backward pass.

    >>> import thinklens as tl
    >>> model, tokenizer, profile = tl.load_model("tiny-r1")
    >>> pair = tl.toy_pairs(1, seed=0, tokenizer=tokenizer)[0][0]
    >>> est = tl.attribution_patching(model, profile, pair)
    >>> est.nld(tl.SiteKind.RESID_PRE).shape == (len(pair), model.config.num_hidden_layers)
    True
    """
    kinds = [SiteKind.parse(k) for k in kinds]
    bad = [k.value for k in kinds if k not in SUPPORTED]
    if bad:
        raise ThinklensError(f"attribution patching does not support {bad}; use {[k.value for k in SUPPORTED]}")
    pt = pair if isinstance(pair, PairTensors) else PairTensors.from_pair(pair)
    metric = metric or LogitDiff(pair.clean_answer, pair.corrupted_answer)
    n_layers = attention_shape(model)[0]
    sites = [Site(k, layer) for k in kinds for layer in range(n_layers)]
    dev = next(model.parameters()).device
    clean_ids, corr_ids = pt.clean_ids.to(dev)[None], pt.corrupted_ids.to(dev)[None]  # [1, T]
    clean_mask, corr_mask = pt.clean_mask.to(dev)[None], pt.corrupted_mask.to(dev)[None]
    with torch.no_grad(), capture(model, profile, sites) as clean_acts:  # [1, T, d] each
        clean_m = float(metric(_forward(model, clean_ids, clean_mask, 0).logits[:, -1])[0])
    with torch.enable_grad(), capture(model, profile, sites, keep_graph=True) as acts:
        m = metric(_forward(model, corr_ids, corr_mask, 0).logits[:, -1])[0]
        grads = torch.autograd.grad(m, [acts[s] for s in sites], allow_unused=True)
    scores: dict[str, np.ndarray] = {k.value: np.zeros((len(pt), n_layers)) for k in kinds}
    for s, g in zip(sites, grads):
        if g is None:
            continue
        delta = clean_acts[s] - acts[s].detach()  # [1, T, d]
        scores[s.kind.value][:, s.layer] = (g * delta).sum(-1)[0].double().cpu().numpy()
    return AttributionResult(scores=scores, clean=clean_m, corrupted=float(m.detach()))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two grids over the cells finite in both (NaN if fewer than 3 or constant)."""
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=float).ravel(), np.asarray(b, dtype=float).ravel()
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(spearmanr(a[ok], b[ok]).statistic)

"""Receiver heads (Thought Anchors, Bogdan, Macar, Nanda & Conmy 2025): heads whose attention converges on a few
"broadcasting" steps that all later steps keep reading.

Followed definition: ``whitebox-analyses/attention_analysis/receiver_head_funcs.py`` and ``attn_funcs.py`` of
github.com/interp-reasoning/thought-anchors (read through a verbatim copy in
ElleNajt/thought_anchors_and_unfaithful_CoT; this is our own code). Per trace and head:

1. the *sentence-averaged* attention matrix: entry ``[j, i]`` = mean of ``A[q, k]`` over query tokens q of step j and
   key tokens k of step i (their ``_compute_averaged_matrix``). Our step→step *mass* (sum over keys, mean over
   queries; :mod:`thinklens.steps.attention`) divided by step i's token count is exactly that mean
   (:func:`block_means`);
2. *vertical scores* (their ``get_vertical_scores`` with ``control_depth=False``, ``score_type="mean"``): for each key
   step i, the mean of ``avg[j, i]`` over query steps ``j >= i + proximity`` (``proximity_ignore``, 4 in their
   receiver-head code); steps with no such j get NaN;
3. the head's kurtosis of its vertical scores over steps (their ``get_3d_ar_kurtosis``: ``scipy.stats.kurtosis``,
   ``fisher=True, bias=True``, NaNs omitted). We return NaN where fewer than :data:`MIN_VERTICAL_STEPS` scores exist
   (a kurtosis of 2 or 3 values is bounded near its minimum and says nothing about spikes);
4. over traces: the mean kurtosis per head (they use ``np.mean``; we skip undefined traces with ``nanmean``) and the
   receiver heads = top-k heads by that mean (their ``get_top_k_layer_head_kurts``; they use k = 20 on 14B/8B models).

A step's receiver score is the mean of its vertical scores over the receiver heads (their
``get_receiver_head_scores``).

>>> avg = np.full((6, 6), 0.05); avg[:, 1] = 0.6  # every later step reads step 1
>>> v = vertical_scores(avg, proximity=1); v.round(2).tolist()
[0.05, 0.6, 0.05, 0.05, 0.05, nan]
>>> float(head_kurtosis(v[None, None])[0, 0].round(2))  # one spike among 5 scores: Fisher kurtosis 0.25
0.25
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from thinklens.errors import ThinklensError

DEFAULT_PROXIMITY = 4  # Thought Anchors' proximity_ignore in receiver_head_funcs.py
MIN_VERTICAL_STEPS = 4  # fewer finite vertical scores: kurtosis undefined (NaN)


def block_means(step_step: np.ndarray, n_tokens: np.ndarray) -> np.ndarray:
    """``[..., n, n]`` mean attention per token pair of (query step j, key step i): mass / tokens of step i.

    >>> block_means(np.array([[1.0, 0.0], [0.6, 0.4]]), np.array([2, 4])).tolist()
    [[0.5, 0.0], [0.3, 0.1]]
    """
    return step_step / np.maximum(np.asarray(n_tokens, dtype=np.float64), 1)[..., None, :]


def vertical_scores(avg: np.ndarray, proximity: int = DEFAULT_PROXIMITY) -> np.ndarray:
    """``[..., n]``: for each key step i, mean of ``avg[..., j, i]`` over ``j >= i + proximity`` (NaN if none).

    >>> vertical_scores(np.tril(np.ones((4, 4))), proximity=2).tolist()
    [1.0, 1.0, nan, nan]
    """
    if proximity < 0:
        raise ThinklensError(f"proximity must be >= 0, got {proximity}")
    avg = np.asarray(avg, dtype=np.float64)
    n = avg.shape[-1]
    j, i = np.indices((n, n))
    keep = (j - i) >= proximity  # [n, n] query step far enough below the key step
    s = np.where(keep, avg, 0.0).sum(axis=-2)  # [..., n]
    cnt = keep.sum(axis=0)  # [n]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(cnt > 0, s / np.maximum(cnt, 1), np.nan)


def head_kurtosis(vertical: np.ndarray) -> np.ndarray:
    """``[...]`` Fisher kurtosis (bias=True) of ``vertical [..., n]`` over steps, NaNs omitted; NaN where fewer than
    :data:`MIN_VERTICAL_STEPS` finite scores or constant scores.

    >>> head_kurtosis(np.array([[[0.1, 0.1, 0.9, 0.1, 0.1, np.nan]]])).round(2).tolist()
    [[0.25]]
    """
    from scipy import stats

    v = np.asarray(vertical, dtype=np.float64)
    out = np.full(v.shape[:-1], np.nan)
    finite = np.isfinite(v)
    flat = finite.reshape(-1, v.shape[-1])
    cols = flat.all(axis=0) if v.size else np.zeros(0, bool)  # [n] finite for every head
    uniform = bool(v.size) and bool((cols | ~flat.any(axis=0)).all())  # every column all-finite or all-NaN
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        if uniform and cols.sum() >= MIN_VERTICAL_STEPS:
            # NaNs sit in the same columns for every head (the last `proximity` steps): slice them off, vectorized
            out = np.asarray(stats.kurtosis(v[..., cols], axis=-1, fisher=True, bias=True), dtype=np.float64)
        elif v.size:
            out = np.asarray(stats.kurtosis(v, axis=-1, fisher=True, bias=True, nan_policy="omit"), dtype=np.float64)
            out = np.where(finite.sum(axis=-1) >= MIN_VERTICAL_STEPS, out, np.nan)
    return out


def rank_receivers(kurtosis: np.ndarray, top_k: int = 10) -> tuple[list[tuple[int, int, float]], np.ndarray]:
    """Top-k heads by mean kurtosis over traces. ``kurtosis [n_traces, L, H]`` (NaN = undefined for that trace).

    Returns ``([(layer, head, mean_kurtosis), ...] best first, mean [L, H])``; heads undefined in every trace are
    never chosen.

    >>> rank_receivers(np.array([[[0.5, 3.0]], [[np.nan, 1.0]]]), top_k=1)[0]
    [(0, 1, 2.0)]
    """
    k = np.asarray(kurtosis, dtype=np.float64)
    if k.ndim != 3:
        raise ThinklensError(f"kurtosis must be [n_traces, n_layers, n_heads], got {k.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(k, axis=0) if k.shape[0] else np.full(k.shape[1:], np.nan)  # [L, H]
    flat = mean.reshape(-1)
    valid = np.flatnonzero(np.isfinite(flat))
    order = valid[np.argsort(-flat[valid], kind="stable")][: max(0, int(top_k))]
    H = mean.shape[1]
    return [(int(i // H), int(i % H), float(flat[i])) for i in order], mean


def receiver_scores(vertical: np.ndarray, heads: list[tuple[int, int]] | list[tuple[int, int, Any]]) -> np.ndarray:
    """[n] mean vertical score of each step over the receiver heads (NaN where undefined, or without heads).

    >>> receiver_scores(np.arange(8.0).reshape(1, 2, 4), [(0, 0), (0, 1)]).tolist()
    [2.0, 3.0, 4.0, 5.0]
    """
    v = np.asarray(vertical, dtype=np.float64)
    if not heads:
        return np.full(v.shape[-1], np.nan)
    return np.mean([v[int(h[0]), int(h[1])] for h in heads], axis=0)


def trace_receiver_stats(step_step: np.ndarray, n_tokens: np.ndarray, proximity: int = DEFAULT_PROXIMITY
                         ) -> tuple[np.ndarray, np.ndarray]:
    """``(vertical [L, H, n], kurtosis [L, H])`` of one trace from its step→step masses ``[L, H, n, n]``.

    >>> vert, kurt = trace_receiver_stats(np.tril(np.ones((1, 1, 8, 8))), np.ones(8), proximity=4)
    >>> vert.shape, kurt.shape, bool(np.isnan(kurt).all())  # constant scores: kurtosis undefined
    ((1, 1, 8), (1, 1), True)
    """
    vert = vertical_scores(block_means(step_step, n_tokens), proximity)
    return vert.astype(np.float32), head_kurtosis(vert).astype(np.float32)

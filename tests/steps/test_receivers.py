"""Receiver heads on hand-made attention patterns whose answer is known (Thought Anchors' definition)."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from thinklens.errors import ThinklensError
from thinklens.steps.receivers import (
    MIN_VERTICAL_STEPS,
    block_means,
    head_kurtosis,
    rank_receivers,
    receiver_scores,
    trace_receiver_stats,
    vertical_scores,
)


def causal_uniform(n: int) -> np.ndarray:
    """[n, n] every step spreads its attention evenly over itself and earlier steps."""
    m = np.tril(np.ones((n, n)))
    return m / m.sum(1, keepdims=True)


def receiver_pattern(n: int, anchor: int, w: float = 0.8) -> np.ndarray:
    """Every step after ``anchor`` puts mass ``w`` on it, the rest uniformly on the other earlier steps."""
    m = causal_uniform(n) * (1 - w)
    m[anchor + 1 :, anchor] += w
    return m


def test_vertical_scores_by_hand():
    avg = np.arange(36, dtype=float).reshape(6, 6)
    v = vertical_scores(avg, proximity=2)
    # key step i: mean of rows j >= i + 2 in column i
    expected = [np.mean(avg[i + 2 :, i]) if i + 2 < 6 else np.nan for i in range(6)]
    np.testing.assert_allclose(v, expected)
    assert np.isnan(v[-2:]).all()
    np.testing.assert_allclose(vertical_scores(avg, proximity=0)[5], avg[5, 5])  # proximity 0 keeps the diagonal
    with pytest.raises(ThinklensError):
        vertical_scores(avg, proximity=-1)


def test_kurtosis_matches_scipy_fisher_biased_nan_omitted():
    rng = np.random.default_rng(0)
    v = rng.random((3, 4, 12))
    v[..., -4:] = np.nan  # the last `proximity` steps
    k = head_kurtosis(v)
    ref = stats.kurtosis(v[..., :-4], axis=-1, fisher=True, bias=True)
    np.testing.assert_allclose(k, ref)
    v[0, 0, 3] = np.nan  # an irregular NaN takes the slow path, same numbers elsewhere
    k2 = head_kurtosis(v)
    np.testing.assert_allclose(k2[0, 0], stats.kurtosis(v[0, 0][np.isfinite(v[0, 0])], fisher=True, bias=True))
    np.testing.assert_allclose(k2[1:], ref[1:])
    few = np.full((1, 1, 10), np.nan)
    few[0, 0, : MIN_VERTICAL_STEPS - 1] = [0.1, 0.9, 0.2][: MIN_VERTICAL_STEPS - 1]
    assert np.isnan(head_kurtosis(few)).all()


def test_receiver_head_is_found_in_a_hand_made_pattern():
    """Layer 1 head 2 broadcasts step 3 to every later step; all other heads are uniform or local (previous step).
    It must be the top receiver head in every trace, with the largest kurtosis; its receiver score peaks at 3."""
    n, L, H = 24, 2, 4
    traces = []
    rng = np.random.default_rng(1)
    for _ in range(5):
        mass = np.empty((L, H, n, n))
        for layer in range(L):
            for head in range(H):
                base = causal_uniform(n)
                if head % 2:  # local: previous-step head
                    base = 0.2 * base + 0.8 * np.eye(n, k=-1)
                    base[0, 0] = 1.0
                mass[layer, head] = base + 1e-3 * rng.random((n, n)) * np.tri(n)
        mass[1, 2] = receiver_pattern(n, anchor=3)
        n_tokens = rng.integers(3, 30, n)
        # masses are sums over key tokens: scale by tokens so that the block means are the pattern above
        traces.append(trace_receiver_stats(mass * n_tokens[None, None, None, :], n_tokens, proximity=4))
    kurt = np.stack([k for _, k in traces])  # [traces, L, H]
    assert (kurt.reshape(5, -1).argmax(axis=1) == 1 * H + 2).all()
    heads, mean = rank_receivers(kurt, top_k=3)
    assert heads[0][:2] == (1, 2) and mean.shape == (L, H)
    np.testing.assert_allclose(heads[0][2], kurt[:, 1, 2].mean())
    scores = receiver_scores(traces[0][0], heads[:1])
    assert int(np.nanargmax(scores)) == 3


def test_block_means_divide_mass_by_key_tokens():
    mass = np.array([[1.0, 0.0], [0.6, 0.4]])
    np.testing.assert_allclose(block_means(mass, np.array([3, 2])), [[1 / 3, 0], [0.2, 0.2]])


def test_rank_receivers_skips_undefined_heads():
    k = np.full((2, 1, 3), np.nan)
    k[0, 0, 1] = 5.0
    k[1, 0, 2] = 1.0
    heads, mean = rank_receivers(k, top_k=10)
    assert [h[:2] for h in heads] == [(0, 1), (0, 2)]
    assert np.isnan(mean[0, 0])
    with pytest.raises(ThinklensError):
        rank_receivers(np.zeros((2, 3)))
    assert np.isnan(receiver_scores(np.zeros((1, 1, 4)), [])).all()

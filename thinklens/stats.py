"""Small, exact statistics used across stages: paired tests and resampling intervals.

Why here: the paper reports with/without-reasoning differences (paired by problem), head rankings and cue-token
contrasts; each needs an interval or a p-value that a reviewer accepts. scipy supplies the binomial tail.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts ``b`` (only A right) and ``c`` (only B right)."""
    from scipy.stats import binomtest

    n = int(b) + int(c)
    if n == 0:
        return 1.0
    return float(binomtest(int(min(b, c)), n, 0.5, alternative="two-sided").pvalue)


def paired_bootstrap_diff_ci(
    x: Sequence[float], y: Sequence[float], *, n_resamples: int = 10_000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``mean(x) - mean(y)`` resampling paired items (problems) with replacement."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("x and y must be 1-D and paired")
    if len(x) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_resamples, len(x)))
    diffs = x[idx].mean(axis=1) - y[idx].mean(axis=1)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(diffs, [alpha, 1 - alpha])
    return float(lo), float(hi)


def bootstrap_ci(
    values: Sequence[float], stat: Callable[[np.ndarray], float] = np.mean, *, n_resamples: int = 10_000,
    level: float = 0.95, seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap CI of ``stat(values)``."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    boots = np.array([stat(v[rng.integers(0, len(v), len(v))]) for _ in range(n_resamples)])
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return float(lo), float(hi)


def permutation_test(
    x: Sequence[float], y: Sequence[float], *, n_permutations: int = 10_000, seed: int = 0,
    alternative: str = "two-sided",
) -> tuple[float, float]:
    """Difference of means ``mean(x) - mean(y)`` and its permutation p-value (with the +1 correction, never 0).

    ``alternative``: ``"two-sided"``, ``"greater"`` (x > y) or ``"less"``."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) == 0 or len(y) == 0:
        return float("nan"), float("nan")
    observed = float(x.mean() - y.mean())
    pooled = np.concatenate([x, y])
    rng = np.random.default_rng(seed)
    n = len(x)
    perm = np.argsort(rng.random((n_permutations, len(pooled))), axis=1)
    px = pooled[perm[:, :n]].mean(axis=1)
    py = pooled[perm[:, n:]].mean(axis=1)
    d = px - py
    if alternative == "greater":
        hits = np.sum(d >= observed)
    elif alternative == "less":
        hits = np.sum(d <= observed)
    elif alternative == "two-sided":
        hits = np.sum(np.abs(d) >= abs(observed))
    else:
        raise ValueError(f"unknown alternative {alternative!r}")
    return observed, float((hits + 1) / (n_permutations + 1))

"""Adaptive resampling: when is a trace's ranking of steps settled, and do two rankings pick the same top steps?

Why: Thought Anchors draws a fixed N (100) rollouts at every cut point; most of them confirm what the first few
already showed. :func:`thinklens.steps.resampling.resampling_importance_many` with ``adaptive=True`` draws rollouts in
rounds and, after each round, asks :func:`unsettled_steps` which steps' membership in the trace's top ``k`` by
importance is still in doubt; only their two cut points (before and after the step) get another round, up to N.

The rule (top-k identification, as LUCB of Kalyanakrishnan et al. 2012): ``importance[i] = p_with - p_without`` is a
difference of two proportions, with half-width ``z * sqrt(q1 (1 - q1) / (n1 + 2) + q0 (1 - q0) / (n0 + 2))`` (the
Agresti-Caffo adjusted proportions ``q = (s + 1) / (n + 2)``, which stay honest at 0 or n successes of a few
rollouts). A step of the current top ``k`` is settled when its lower bound is above every outside step's upper bound;
an outside step when its upper bound is below every top step's lower bound. A trace of ``k`` steps or fewer is settled
after the first round (all its steps are in its top k).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

TOP_K = 3  # the anchors a user reads off a trace
ROUND = 4  # rollouts per cut point and round (the first round included)
Z = 0.75  # half-width multiplier: measured on the organism (docs/steps-methods.md, benchmarks/resampling.py)


def halfwidth(n_with: int, s_with: int, n_without: int, s_without: int) -> float:
    """Half-width (one standard error) of ``s_with / n_with - s_without / n_without`` with Agresti-Caffo adjusted
    proportions::

        >>> round(halfwidth(4, 4, 4, 0), 3), round(halfwidth(32, 16, 32, 16), 3)
        (0.215, 0.121)
    """
    q1, q0 = (s_with + 1) / (n_with + 2), (s_without + 1) / (n_without + 2)
    return math.sqrt(q1 * (1 - q1) / (n_with + 2) + q0 * (1 - q0) / (n_without + 2))


def unsettled_steps(importance: Sequence[float], half: Sequence[float], k: int = TOP_K, z: float = Z) -> set[int]:
    """The steps whose membership in the top ``k`` by importance is not yet settled (see the module doc)::

        >>> sorted(unsettled_steps([0.9, 0.8, 0.7, 0.1], [0.05] * 4))   # clear gap: settled
        []
        >>> sorted(unsettled_steps([0.9, 0.8, 0.3, 0.25], [0.05] * 4))  # 3rd and 4th overlap
        [2, 3]
    """
    imp, h = np.asarray(importance, float), np.asarray(half, float)
    n = len(imp)
    if n <= k:
        return set()
    order = np.argsort(-imp, kind="stable")
    top, rest = order[:k], order[k:]
    lo, hi = imp - z * h, imp + z * h
    floor, ceil = hi[rest].max(), lo[top].min()
    return {int(i) for i in top if lo[i] < floor} | {int(j) for j in rest if hi[j] > ceil}


def top_k_agree(a: Sequence[float], b: Sequence[float], k: int = TOP_K, tol: float = 1e-9) -> bool:
    """Whether two importance vectors of one trace pick the same top ``k`` steps, ties handled: each vector's ties at
    its k-th value may be broken either way, and they agree when some tie-breaking of each gives the same set (with
    no ties: plain set equality of the top k; a trace of k steps or fewer always agrees)::

        >>> a = [0.9, 0.5, 0.4, 0.1]
        >>> top_k_agree(a, [0.8, 0.6, 0.3, 0.2]), top_k_agree(a, [0.1, 0.5, 0.4, 0.9])
        (True, False)
        >>> tied = [0.9, 0.5, 0.0, 0.0]  # steps 2 and 3 tie for third place: either may be it
        >>> top_k_agree(tied, [0.9, 0.5, 0.3, 0.0]), top_k_agree(tied, [0.9, 0.5, 0.0, 0.3])
        (True, True)
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    n = len(a)
    if n != len(b):
        raise ValueError(f"importance vectors of different lengths: {n} and {len(b)}")
    if n <= k:
        return True

    def sets(s: np.ndarray) -> tuple[set[int], set[int]]:
        t = np.sort(s)[::-1][k - 1]
        return set(np.flatnonzero(s > t + tol).tolist()), set(np.flatnonzero(s >= t - tol).tolist())

    (sure_a, may_a), (sure_b, may_b) = sets(a), sets(b)
    sure, may = sure_a | sure_b, may_a & may_b
    return sure <= may and len(sure) <= k <= len(may)

"""Agreement between step methods: Spearman with trace-bootstrap CIs, per-category means, top-step agreement."""
from __future__ import annotations

import numpy as np
from scipy import stats

from thinklens.steps.agreement import METHODS, method_agreement, pair_agreement


def synthetic(n_traces: int = 30, seed: int = 0):
    """attention ~ truncation (noisy copy), suppression = -attention, resampling not run."""
    rng = np.random.default_rng(seed)
    per, cats = [], []
    for _ in range(n_traces):
        n = int(rng.integers(3, 9))
        a = rng.random(n)
        per.append({"attention": a, "truncation": a + 0.05 * rng.standard_normal(n), "suppression": -a,
                    "resampling": None})
        c = ["computation"] * n
        c[int(np.argmax(a))] = "final_answer"
        cats.append(c)
    return per, cats


def pair(res, a, b):
    return next(p for p in res["pairs"] if {p["a"], p["b"]} == {a, b})


def test_spearman_ci_top_step_and_missing_method():
    per, cats = synthetic()
    res = method_agreement(per, cats, n_bootstrap=300, seed=0)
    assert res["available"] == ["attention", "suppression", "truncation"]
    at = pair(res, "attention", "truncation")
    x = np.concatenate([d["attention"] for d in per])
    y = np.concatenate([d["truncation"] for d in per])
    assert abs(at["spearman"] - stats.spearmanr(x, y).statistic) < 1e-12
    assert at["ci95"][0] <= at["spearman"] <= at["ci95"][1] and at["ci95"][0] > 0.9
    assert at["top_step"] > 0.7 and at["n_top"] == 30 and at["within_trace"] > 0.8
    per_rho = [stats.spearmanr(d["attention"], d["truncation"]).statistic for d in per if len(d["attention"]) >= 3]
    assert abs(at["within_trace"] - np.mean(per_rho)) < 1e-12
    sup = pair(res, "attention", "suppression")
    assert sup["spearman"] == -1.0 and sup["top_step"] == 0.0
    miss = pair(res, "attention", "resampling")
    assert miss["spearman"] is None and miss["ci95"] == [None, None] and miss["n_traces"] == 0
    i, j = METHODS.index("attention"), METHODS.index("resampling")
    assert res["matrix"]["spearman"][i][j] is None and res["matrix"]["spearman"][i][i] == 1.0
    assert res["categories"]["final_answer"]["mean_rank"]["attention"] == 1.0
    assert res["categories"]["final_answer"]["mean_rank"]["suppression"] == 0.0
    assert res["categories"]["backtracking"]["n_steps"] == 0 and res["categories"]["backtracking"]["mean"][
        "attention"] is None


def test_bootstrap_is_seeded_and_resamples_traces():
    per, cats = synthetic(12, seed=3)
    a = method_agreement(per, cats, n_bootstrap=200, seed=7)
    b = method_agreement(per, cats, n_bootstrap=200, seed=7)
    c = method_agreement(per, cats, n_bootstrap=200, seed=8)
    assert pair(a, "attention", "truncation")["ci95"] == pair(b, "attention", "truncation")["ci95"]
    assert pair(a, "attention", "truncation")["ci95"] != pair(c, "attention", "truncation")["ci95"]


def test_nan_safe():
    xs = [np.array([1.0, np.nan, 3.0, 4.0]), None, np.array([2.0, 1.0, 0.0])]
    ys = [np.array([1.0, 2.0, np.nan, 4.0]), np.array([1.0, 2.0]), np.array([np.nan] * 3)]
    r = pair_agreement(xs, ys, n_bootstrap=50)
    assert r["n_traces"] == 1 and r["n_steps"] == 2 and r["spearman"] is None  # 2 points: undefined
    const = pair_agreement([np.ones(4)], [np.arange(4.0)], n_bootstrap=50)
    assert const["spearman"] is None and const["top_step"] == 1.0  # ties: every step is a top step
    empty = method_agreement([], [], n_bootstrap=10)
    assert empty["available"] == [] and all(p["spearman"] is None for p in empty["pairs"])


def test_vectorized_bootstrap_equals_resampling_and_ranking():
    """The one-sort bootstrap gives exactly the rho of the expanded resample (ties included)."""
    from thinklens.steps.agreement import _bootstrap_spearman

    rng = np.random.default_rng(0)
    xs = [np.round(rng.random(int(rng.integers(2, 7))), 1) for _ in range(9)]  # rounding makes ties
    ys = [np.round(x + 0.3 * rng.random(len(x)), 1) for x in xs]
    x, y = np.concatenate(xs), np.concatenate(ys)
    trace = np.concatenate([np.full(len(v), t) for t, v in enumerate(xs)])
    got = _bootstrap_spearman(x, y, trace, len(xs), 50, seed=4, block=7)
    draws_rng = np.random.default_rng(4)
    ref = []
    for b0 in range(0, 50, 7):
        for d in draws_rng.integers(0, len(xs), (min(7, 50 - b0), len(xs))):
            ref.append(stats.spearmanr(np.concatenate([xs[i] for i in d]), np.concatenate([ys[i] for i in d]))[0])
    np.testing.assert_allclose(got, ref, atol=1e-12)

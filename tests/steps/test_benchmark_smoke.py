"""The steps benchmark runs (``--quick``) and its last line is the JSON the report quotes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import load_script

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "steps.py"


@pytest.mark.slow
def test_benchmark_quick():
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--threads", "1"], capture_output=True, text=True,
                         check=True, timeout=600)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("suppression_speedup_vs_naive", "truncation_speedup_vs_naive", "max_abs_diff",
                "suppression_token_bound", "suppression_speedup_wall", "truncation_speedup_wall",
                "answer_suppression_speedup_vs_naive", "answer_suppression_flop_bound", "suppression_flop_bound"):
        assert isinstance(res[key], float), key
    assert res["max_abs_diff"] <= 1e-4 and res["answer_suppression_max_abs_diff"] <= 1e-4
    assert res["truncation_answers_equal"] is True
    assert res["suppression_kl_range"][1] > 0  # the blocking changed the answer distribution
    assert res["n_steps"] == 8 and res["quick"] is True


def test_flop_bounds_of_the_two_scopes():
    """What the benchmark prints next to its ratios, on the full-size shapes (arithmetic, no model): no exact
    total-effect engine can beat ~2x (each step's suffix is recomputed), the answer scope allows > 10x."""

    from transformers import Qwen2Config

    bench = load_script(SCRIPT, "bench_steps")
    cfg = Qwen2Config(vocab_size=151936, hidden_size=1536, num_hidden_layers=2, num_attention_heads=12,
                      num_key_value_heads=2, intermediate_size=8960)
    E, n_ans, step = 1999, 20, 47  # the benchmark's trace: 40 equal steps between a prompt and the answer
    spans = [(100 + i * step + 1, 100 + (i + 1) * step) for i in range(40)]
    b = bench.flop_bounds(cfg, E, n_ans, spans)
    assert 1.8 < b["suppression_flop_bound"] < 2.2
    assert b["answer_suppression_flop_bound"] > 10
    # steps crowded at the end of the reasoning leave short suffixes: the prefix reuse then saves far more
    late = bench.flop_bounds(cfg, E, n_ans, [(E - 300 + i * 7, E - 300 + i * 7 + 6) for i in range(40)])
    assert late["suppression_flop_bound"] > 3 * b["suppression_flop_bound"]


@pytest.mark.slow
def test_resampling_benchmark_quick():
    """benchmarks/resampling.py (adaptive vs fixed N) at tiny sizes: its last line carries the two numbers."""
    script = Path(__file__).parents[2] / "benchmarks" / "resampling.py"
    out = subprocess.run([sys.executable, str(script), "--quick"], capture_output=True, text=True, check=True,
                         timeout=600)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0 < res["rollout_fraction"] <= 1 and 0 <= res["top3_agreement"] <= 1
    assert res["prefix_exact"] is True and res["fixed_rollouts"] % 8 == 0 and res["fixed_n"] == 8
    assert res["adaptive_rollouts"] <= res["fixed_rollouts"] and res["quick"] is True

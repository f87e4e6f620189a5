"""The steps benchmark runs (``--quick``) and its last line is the JSON the report quotes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "steps.py"


@pytest.mark.slow
def test_benchmark_quick():
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--threads", "1"], capture_output=True, text=True,
                         check=True, timeout=600)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("suppression_speedup_vs_naive", "truncation_speedup_vs_naive", "max_abs_diff",
                "suppression_token_bound", "suppression_speedup_wall", "truncation_speedup_wall"):
        assert isinstance(res[key], float), key
    assert res["max_abs_diff"] <= 1e-4
    assert res["truncation_answers_equal"] is True
    assert res["suppression_kl_range"][1] > 0  # the blocking changed the answer distribution
    assert res["n_steps"] == 8 and res["quick"] is True

"""The benchmark script runs (``--quick``) and its last line is the JSON the README quotes."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "attention.py"


@pytest.mark.slow
def test_benchmark_quick():
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, check=True,
                         timeout=600)
    res = json.loads(out.stdout.strip().splitlines()[-1])
    for key in ("time_ratio_vs_forward", "memory_ratio_vs_forward", "eager_time_ratio", "eager_memory_ratio",
                "max_abs_err_vs_eager"):
        assert isinstance(res[key], float), key
    assert res["max_abs_err_vs_eager"] <= 1e-5
    assert res["forward_peak_extra_mib"] > 0

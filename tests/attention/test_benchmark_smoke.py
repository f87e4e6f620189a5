"""The benchmark script runs (``--quick``) and its last line is the JSON the README quotes.

Run in this process (torch is already imported here) with one memory subprocess for all arms: the same code paths as
a full run at a fraction of the start-up cost. Beyond the keys, it checks the allocator-independent numbers: captured
masses equal eager attention, and the live-tensor peak of the capture stays at the plain forward's while eager
attention's does not (deterministic byte counts, not timings).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_script

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "attention.py"


@pytest.mark.slow
def test_benchmark_quick(capsys):
    bench = load_script(SCRIPT, "bench_attention")
    res = bench.main(["--quick"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == res
    for key in ("time_ratio_vs_forward", "time_ratio_min", "time_ratio_cpu", "time_ratio_within_run",
                "memory_ratio_vs_forward", "tensor_memory_ratio_vs_forward", "eager_time_ratio", "eager_memory_ratio",
                "max_abs_err_vs_eager"):
        assert isinstance(res[key], float), key
    assert res["max_abs_err_vs_eager"] <= 1e-5
    assert res["forward_peak_extra_mib"] > 0 and res["forward_tensor_peak_mib"] > 0
    assert res["tensor_memory_ratio_vs_forward"] <= 1.05  # the captured rows never add to the forward's peak
    assert res["eager_tensor_memory_ratio"] >= 1.5  # eager's T x T weights do (12 heads x 512^2 floats)

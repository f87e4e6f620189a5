"""benchmarks/device_check.py runs in its CPU mode (``--dry-run``: toy sizes, gloo): CI proves the GPU check is not
broken between GPU runs. Its numbers are checked for sense (fast engines agree with naive ones, capture with eager),
never for speed."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import load_script

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "device_check.py"


@pytest.mark.slow
def test_dry_run(capsys):
    bench = load_script(SCRIPT, "bench_device_check")
    res = bench.main(["--dry-run"])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == res
    errors = {k: v for k, v in res.items() if isinstance(v, dict) and "error" in v}
    assert not errors, errors
    for key in ("bf16_256", "bf16_512", "fp32_256", "fp32_512"):
        row = res["attention"][key]
        assert row["capture_s"] > 0 and row["eager_s"] > 0, key
        assert row["capture_max_abs_err_vs_eager"] <= (1e-2 if key.startswith("bf16") else 1e-5), key
    assert res["patching"]["max_abs_nld_diff"] <= 1e-4 and res["patching"]["n_layers"] == 2
    for scope in ("all", "answer"):
        assert res["suppression"][scope]["max_abs_diff"] <= 1e-4
    assert res["torchrun"] == {"backend": "gloo", "world_size": 1, "all_reduce": [1.0] * 4}
    assert "skipped" in res["vllm"] or "tokens_per_s" in res["vllm"]

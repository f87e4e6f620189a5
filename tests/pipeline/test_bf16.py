"""The whole default run in bfloat16 on the CPU agrees with fp32 within the tolerances the README states, and neither
run prints a warning (FutureWarnings are made errors: a deprecated call fails the run).

Both runs use every stage with its default settings on 30 problems and 8 pairs (the default run's code paths at a
third of its cost). Tolerances (README, "Real models, servers and several GPUs"): bf16 keeps 8 bits of mantissa, so
logits move by ~1e-2 relative; a greedy trace flips only where two tokens were that close, and the study's headline
numbers are means over traces, heads or pairs:

* accuracy with and without reasoning within ``ACCURACY_TOL`` (2 of 30 problems);
* the top-3 Reasoning-Focus Heads are the same set;
* the patching curves (mean NLD per layer at the answer-flip and final tokens) within ``NLD_TOL``;
* the top suppression step of a trace is the same step in at least ``TOP_STEP_SHARE`` of the traces both runs kept.

Measured once (tiny-r1, torch 2.13 CPU): equal accuracies (1.00 / 0.17), equal top-5 RFHs, mean NLD curves within
0.001 (every pair and position within 0.004), the same top suppression step in 30 of 30 traces: the tolerances
leave room for other seeds, thread counts and CPUs.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ACCURACY_TOL, NLD_TOL, TOP_STEP_SHARE = 0.07, 0.05, 0.9
SETTINGS = ["--limit", "30", "--n-pairs", "8"]


def _run(out: Path, dtype: str) -> str:
    cmd = [str(Path(sys.executable).parent / "thinklens"), "run", *SETTINGS, "--dtype", dtype, "--output", str(out)]
    env = {**os.environ, "PYTHONWARNINGS": "error::FutureWarning"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1500)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}"
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("dtypes")
    return {d: (base / d, _run(base / d, d)) for d in ("fp32", "bf16")}


def _results(run) -> dict:
    return json.loads((run[0] / "results.json").read_text())


def _top_steps(run) -> dict[str, int]:
    """Per trace, the step with the largest suppression effect."""
    best: dict[str, tuple[float, int]] = {}
    for line in (run[0] / "steps" / "steps.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("suppression") is not None and r["suppression"] > best.get(r["id"], (-np.inf, -1))[0]:
            best[r["id"]] = (r["suppression"], r["step"])
    return {k: v[1] for k, v in best.items()}


@pytest.mark.slow
def test_no_warning_in_a_run(runs):
    for dtype, (_, output) in runs.items():
        bad = [ln for ln in output.splitlines() if "Warning" in ln or "deprecated" in ln]
        assert not bad, f"{dtype} run printed: {bad[:5]}"


@pytest.mark.slow
def test_bf16_run_matches_fp32(runs):
    a, b = _results(runs["fp32"]), _results(runs["bf16"])
    (ea,), (eb,) = a["evaluation"].values(), b["evaluation"].values()
    for key in ("accuracy_with_reasoning", "accuracy_without_reasoning"):
        assert abs(ea[key] - eb[key]) <= ACCURACY_TOL, (key, ea[key], eb[key])
    top = [{(h[0], h[1]) for h in r["heads"]["top"][:3]} for r in (a, b)]
    assert top[0] == top[1], top
    for key in ("nld_answer_flip_token", "nld_final_answer_token"):
        x, y = (np.array(r["patching"][key], dtype=float) for r in (a, b))
        assert np.nanmax(np.abs(x - y)) <= NLD_TOL, (key, x, y)
    ta, tb = _top_steps(runs["fp32"]), _top_steps(runs["bf16"])
    both = sorted(set(ta) & set(tb))
    assert len(both) >= 10, "too few traces in both steps stages to compare"
    assert np.mean([ta[k] == tb[k] for k in both]) >= TOP_STEP_SHARE, {k: (ta[k], tb[k]) for k in both}

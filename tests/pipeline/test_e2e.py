"""End to end on the embedded tiny-r1: a small `thinklens run` must show the paper's three findings."""
from __future__ import annotations

import json

import pytest


@pytest.fixture(scope="module")
def tiny_run(default_run):
    """The README's quick start (``thinklens run --output runs/tiny``: tiny-r1, 100 problems, 20 pairs)."""
    from thinklens.pipeline import RunResult

    return RunResult.load(default_run)


@pytest.mark.slow
def test_results_json_structure(tiny_run):
    res = json.loads((tiny_run.output / "results.json").read_text())
    assert res == tiny_run.results
    assert res["model"] == "tiny-r1" and res["dataset"] == "arithmetic"
    assert set(res["versions"]) >= {"thinklens", "torch", "transformers", "python"}
    from thinklens.stages.registry import stage_names

    assert set(res["timings"]) == set(stage_names())
    ev = res["evaluation"]["tiny-r1"]
    assert set(ev) >= {"n", "accuracy_with_reasoning", "accuracy_without_reasoning", "difference_ci95", "p_value"}
    top = res["heads"]["top"]
    assert len(top) == 10 and all(len(t) == 3 for t in top)
    assert [t[2] for t in top] == sorted((t[2] for t in top), reverse=True)
    pt = res["patching"]
    assert pt["n_pairs"] == 20 and len(pt["layers"]) == len(pt["nld_answer_flip_token"])
    assert len(pt["nld_final_answer_token"]) == len(pt["layers"])
    assert (tiny_run.output / "report.html").stat().st_size > 50_000  # figures embedded


@pytest.mark.slow
def test_finding_1_reasoning_helps(tiny_run):
    ev = tiny_run.results["evaluation"]["tiny-r1"]
    assert ev["n"] >= 90
    assert ev["accuracy_with_reasoning"] > ev["accuracy_without_reasoning"]
    assert ev["difference_ci95"][0] > 0 and ev["p_value"] < 0.05


@pytest.mark.slow
def test_finding_2_reasoning_focus_heads_exist(tiny_run):
    heads = tiny_run.results["heads"]
    assert heads["stability"]["per_head"][0] >= 0.8  # the top head stays on top across resampled traces
    assert heads["stability"]["mean"] >= 0.8  # and so does the whole top-k: a reproducible set, not noise
    assert heads["top_to_median_ratio"] > 1.1  # the top head reads the reasoning more than a typical head


@pytest.mark.slow
def test_finding_3_patching_flips_the_answer(tiny_run):
    nld = [v for v in tiny_run.results["patching"]["nld_answer_flip_token"] if v is not None]
    assert max(nld) >= 0.8


@pytest.mark.slow
def test_cue_statistics_on_reference_traces_with_slips(tiny_run):
    """tiny-r1 never slips under greedy decoding, so the run reads cues on its reference traces, which do."""
    cues = json.loads((tiny_run.output / "heads.json").read_text())["cues"]
    assert "reference" in cues["source"] and cues["n_cue_tokens"] > 0 and cues["p_value"] is not None
    assert (tiny_run.output / "traces" / "reference.jsonl").exists()
    # the token view shows a trace with a self-correction: its cue tokens are marked
    assert 'class="t cue"' in (tiny_run.output / "attention" / "token_view.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_the_stage_commands_reproduce_the_run(tiny_run, tmp_path):
    """The report's collect command, run standalone, writes the same traces as the run's stage (same per-model
    defaults: budget, batch, math instruction)."""
    import shlex

    from thinklens.cli.main import main
    from thinklens.jsonl import read_records
    from thinklens.rundir import load_config
    from thinklens.stages.registry import commands

    line = commands(load_config(tiny_run.output))["collect"].splitlines()[0]
    argv = shlex.split(line)[1:]
    assert "--reasoning" in argv and argv[argv.index("--reasoning") + 1] == "with"
    argv[argv.index("--output") + 1] = str(tmp_path / "with.jsonl")
    assert main(argv + ["--quiet"]) == 0
    ours = {r["id"]: r for r in read_records(tmp_path / "with.jsonl")}
    run = {r["id"]: r for r in read_records(tiny_run.output / "traces" / "with.jsonl")}
    assert ours.keys() == run.keys() and len(run) == 100
    assert all(ours[k]["completion"] == run[k]["completion"] for k in run)
    assert all(ours[k]["generation"] == run[k]["generation"] for k in run)

"""Orchestration on a random model: files per stage, results.json, resume after a crash, config guard, CLI."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from thinklens.errors import ThinklensError
from thinklens.jsonl import read_records
from thinklens.pipeline import RunConfig, run


def _cfg(model_dir, out, **kw):
    base = dict(model=str(model_dir), dataset="arithmetic", limit=3, output=str(out), n_pairs=2, seed=0,
                generation={"max_new_tokens": 12, "batch_size": 4}, n_bootstrap=50,
                min_usable=0.0)  # a random model finishes few traces: the orchestration is tested, not the advice
    return RunConfig(**{**base, **kw})


@pytest.mark.slow
def test_empirical_stages_write_files_and_resume(random_r1_dir, tmp_path):
    out = tmp_path / "run"
    cfg = _cfg(random_r1_dir, out, stages="collect,grade,evaluate")
    res = run(cfg, progress=False)
    for rel in ("config.json", "run_state.json", "traces/with.jsonl", "traces/without.jsonl",
                "graded/with.jsonl", "graded/without.jsonl", "evaluation.json", "results.json"):
        assert (out / rel).is_file(), rel
    with_recs = list(read_records(out / "traces" / "with.jsonl"))
    assert len(with_recs) == 3 and {r["reasoning"] for r in with_recs} == {"with"}
    results = json.loads((out / "results.json").read_text())
    ev = results["evaluation"][str(random_r1_dir)]
    gradable = [{r["id"] for r in read_records(out / "graded" / f"{m}.jsonl") if r.get("is_correct") is not None}
                for m in ("with", "without")]
    assert ev["n"] == len(gradable[0] & gradable[1])
    assert set(ev) >= {"accuracy_with_reasoning", "accuracy_without_reasoning", "difference_ci95", "p_value"}
    assert set(results["versions"]) >= {"thinklens", "torch", "transformers", "python"}
    assert set(results["timings"]) == {"collect", "grade", "evaluate"}
    assert res.stages["collect"]["status"] == "done"
    peaks = [res.stages[s]["peak_rss_gb"] for s in ("collect", "grade", "evaluate")]  # the process's, so far
    assert 0 < peaks[0] <= peaks[1] <= peaks[2]

    # crash in the middle of collect: one trace lost, state says the stage never finished
    lines = (out / "traces" / "with.jsonl").read_text().splitlines(keepends=True)
    (out / "traces" / "with.jsonl").write_text("".join(lines[:2]) + lines[2][:10])  # torn last line
    state = json.loads((out / "run_state.json").read_text())
    del state["collect"]
    (out / "run_state.json").write_text(json.dumps(state))
    run(cfg, progress=False)
    ids = [r["id"] for r in read_records(out / "traces" / "with.jsonl")]
    assert sorted(ids) == sorted(r["id"] for r in with_recs)  # resumed, nothing duplicated or lost
    assert (out / "traces" / "with.jsonl.torn").exists()

    # finished stages are skipped on a rerun (their files are left untouched)
    mtime = (out / "graded" / "with.jsonl").stat().st_mtime_ns
    run(cfg, progress=False)
    assert (out / "graded" / "with.jsonl").stat().st_mtime_ns == mtime

    # a rerun with other settings into the same directory is refused, naming the difference
    with pytest.raises(ThinklensError, match="limit"):
        run(_cfg(random_r1_dir, out, limit=5, stages="collect"), progress=False)


def test_a_failed_run_does_not_lock_its_directory(random_r1_dir, tmp_path):
    """A first attempt with a wrong --model fails before any stage finishes: the corrected rerun is accepted."""
    out = tmp_path / "run"
    with pytest.raises(ThinklensError, match="no such model directory"):
        run(_cfg(tmp_path / "nope", out, stages="collect"), progress=False)
    assert (out / "config.json").exists()
    res = run(_cfg(random_r1_dir, out, stages="collect"), progress=False)
    assert res.stages["collect"]["status"] == "done"


@pytest.mark.slow
def test_every_option_takes_effect_on_a_rerun(random_r1_dir, tmp_path):
    """--top-k changed on a rerun reaches heads.json and results.json (the heads stage reruns, collect does not)."""
    from thinklens.jsonl import JsonlWriter
    from thinklens.toy.tasks import full_text, generate_problems

    out = tmp_path / "run"
    with JsonlWriter(out / "traces" / "with.jsonl") as w:
        for p in generate_problems(4, seed=0):
            w.write({"id": p.id, "model": "m", "reasoning": "with", "text": full_text(p)})
    first = run(_cfg(random_r1_dir, out, limit=4, stages="attention,heads", top_k=5), progress=False)
    assert len(first.results["heads"]["top"]) == 5
    again = run(_cfg(random_r1_dir, out, limit=4, stages="attention,heads", top_k=3), progress=False)
    assert len(again.results["heads"]["top"]) == 3
    assert len(json.loads((out / "heads.json").read_text())["heads"]) == 3
    assert again.stages["heads"]["settings"] == {"top_k": 3, "n_bootstrap": 50, "retrieval_lengths": []}


@pytest.mark.slow
def test_patching_and_report_stages(random_r1_dir, tmp_path, capfd):
    out = tmp_path / "run"
    res = run(_cfg(random_r1_dir, out, stages="patching,report"), progress=True)
    err = capfd.readouterr().err
    assert "[1/2] patching  patching pairs" in err and "2/2" in err  # stage label + the work left
    assert "[2/2] report" in err
    pt = res.results["patching"]
    assert pt["n_pairs"] == 2 and pt["layers"] == [0, 1]
    assert len(pt["nld_answer_flip_token"]) == 2 and len(pt["nld_final_answer_token"]) == 2
    assert (out / "patching" / "result.npz").is_file() and (out / "report.html").is_file()
    html = (out / "report.html").read_text()
    assert "lv-data" in html
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html)  # self-contained: nothing fetched


def test_patching_skipped_with_note_without_pairs(random_r1_dir, tmp_path):
    bad = tmp_path / "problems.jsonl"
    bad.write_text('{"id": "a", "problem": "1+1?", "answer": "2"}\n')
    out = tmp_path / "run"
    cfg = RunConfig(model="some-org/other-model", dataset=str(bad), output=str(out), stages="patching")
    res = run(cfg, progress=False)
    assert res.stages["patching"]["status"] == "skipped"
    assert "--pairs-csv" in res.results["notes"]["patching"]


def test_cli_run_and_report_errors(tmp_path, capsys):
    from thinklens.cli.main import main

    assert main(["run", "--stages", "collect,nope", "--output", str(tmp_path / "x")]) == 2
    assert "nope" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err


REFERENCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference"


@pytest.mark.slow
def test_paper_csv_pairs_are_collected_and_rejects_reported(random_r1_dir, tmp_path):
    csv = REFERENCE / "contrastive_qa_pairs.csv"
    if not csv.is_file():
        pytest.skip("reference data absent")
    out = tmp_path / "run"
    cfg = RunConfig(model=str(random_r1_dir), dataset="arithmetic", limit=1, n_pairs=2, pairs_csv=str(csv),
                    output=str(out), stages="patching", generation={"max_new_tokens": 8})
    res = run(cfg, progress=False)
    # a random model answers nothing correctly: both rows are rejected with reasons, the run goes on
    assert len(list(read_records(out / "patching" / "csv_responses.jsonl"))) == 4
    assert res.stages["patching"]["status"] == "skipped"
    assert "2 rejected" in res.results["notes"]["patching"]


@pytest.mark.slow
def test_attention_stage_on_reference_traces(random_r1_dir, tmp_path):
    """The attention stage on finished traces (tiny-r1's reference texts): head scores, ranking with stability,
    cue statistics, token view and induction overlap, all reaching results.json and the report."""
    from thinklens.jsonl import JsonlWriter
    from thinklens.toy.tasks import full_text, generate_problems

    out = tmp_path / "run"
    with JsonlWriter(out / "traces" / "with.jsonl") as w:
        for p in generate_problems(6, seed=0):
            w.write({"id": p.id, "model": "m", "reasoning": "with", "text": full_text(p)})
    res = run(_cfg(random_r1_dir, out, limit=6, stages="attention,heads,report", top_k=3), progress=False)
    heads = res.results["heads"]
    assert len(heads["top"]) == 3 and heads["n_traces"] == 6
    assert len(heads["stability"]["per_head"]) == 3 and all(0 <= s <= 1 for s in heads["stability"]["per_head"])
    assert heads["induction_overlap"]["k_found"] == 3
    assert set(heads["cues"]) >= {"mean_cue", "p_value"} or "error" in heads["cues"]
    for rel in ("attention/head_scores.npz", "heads.json", "attention/induction.json", "attention/token_view.html",
                "figures/rfh_heatmap.png"):
        assert (out / rel).is_file(), rel
    html = (out / "report.html").read_text()
    assert "Token view" in html and "induction heads" in html


def test_changed_steps_settings_start_the_stage_over(tmp_path):
    """In a run, the steps stage with other per-trace settings sets its earlier results aside and recomputes (the
    standalone command refuses instead); on tiny-r1's own traces."""
    from thinklens.jsonl import JsonlWriter
    from thinklens.toy.tasks import full_text, generate_problems

    out = tmp_path / "run"
    with JsonlWriter(out / "traces" / "with.jsonl") as w:
        for p in generate_problems(3, seed=0):
            w.write({"id": p.id, "model": "tiny-r1", "reasoning": "with", "text": full_text(p),
                     "gold_answer": p.answer})
    cfg = dict(model="tiny-r1", dataset="arithmetic", limit=3, output=str(out), stages="steps")
    first = run(RunConfig(**cfg, steps={"methods": "attention"}), progress=False)
    assert first.results["steps"]["methods"] == ["attention"]
    again = run(RunConfig(**cfg, steps={"methods": "attention,truncation"}), progress=False)
    assert again.results["steps"]["methods"] == ["attention", "truncation"]
    assert (out / "steps.old" / "steps.jsonl").is_file()
    rows = [json.loads(line) for line in (out / "steps" / "steps.jsonl").read_text().splitlines()]
    assert rows and all(r["truncation"] is not None for r in rows)

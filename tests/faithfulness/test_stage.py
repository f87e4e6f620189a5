"""The faithfulness stage in a run: on for the organism (its profile gives it problems) or when asked, off with a
note elsewhere; it writes RUN/faithfulness/, results.json's entry and the report's section."""
from __future__ import annotations

import json

import pytest

import thinklens as tl
from thinklens.stages.registry import commands, stage


def test_the_stage_is_registered_before_the_report_and_reads_its_settings():
    from thinklens.stages.registry import stage_names

    names = stage_names()
    assert names.index("faithfulness") == len(names) - 2 and names[-1] == "report"
    assert stage("faithfulness").reads == ("faithfulness", "top_k")
    cfg = tl.RunConfig(output="/tmp/x", seed=4)
    assert cfg.faithfulness.seed == 4
    cmd = commands(cfg)["faithfulness"]
    assert cmd.startswith("thinklens faithfulness --model tiny-r1 --dataset arithmetic") and "--seed 4" in cmd
    off = tl.RunConfig(output="/tmp/x", faithfulness={"faithfulness_problems": 0})
    assert "faithfulness" not in commands(off)


def test_run_flags_round_trip_the_faithfulness_settings():
    import shlex

    from thinklens.cli.flags import build
    from thinklens.cli.main import build_parser

    cfg = tl.RunConfig(output="r", faithfulness={"hints": "metadata", "faithfulness_problems": 4,
                                                 "hint_mechanism": False, "faithfulness_temperature": 1.0,
                                                 "hint_patching_controls": 3})
    argv = shlex.split(commands(cfg)["run"])[1:]
    assert "--hints metadata" in commands(cfg)["run"] and "--no-hint-mechanism" in commands(cfg)["run"]
    assert build(tl.RunConfig, build_parser().parse_args(argv)) == cfg


def test_a_bad_hint_spec_stops_a_run_before_it_starts(tmp_path, capsys):
    from thinklens.cli.main import main

    assert main(["run", "--output", str(tmp_path / "r"), "--hints", "metadata,bogus"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown hint family 'bogus'" in err and not (tmp_path / "r").exists()
    assert main(["run", "--output", str(tmp_path / "r"), "--hint-patching-controls", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--hint-patching-controls must be an integer >= 0" in err


@pytest.mark.slow
def test_stage_in_a_run_writes_files_results_and_report(tmp_path):
    out = tmp_path / "run"
    cfg = tl.RunConfig(output=str(out), limit=4, n_pairs=2, stages=("faithfulness", "report"),
                       faithfulness={"faithfulness_problems": 2, "hints": "metadata"})
    res = tl.run(cfg, progress=False)
    assert res.stages["faithfulness"]["status"] == "done" and res.stages["faithfulness"]["n_pairs"] == 2
    fd = out / "faithfulness"
    assert (fd / "summary.json").is_file() and (fd / "pairs.jsonl").is_file()
    assert len((fd / "traces/hinted.jsonl").read_text().splitlines()) == 2
    table = res.results["faithfulness"]["table"]
    assert [r["family"] for r in table] == ["metadata", "all"]
    html = (out / "report.html").read_text()
    assert "5. Faithfulness" in html and "fig-faithfulness_rates" in html
    summary = json.loads((fd / "summary.json").read_text())
    assert summary["settings"]["faithfulness_problems"] == 2
    if summary["mechanism"] is not None:  # with thinklens.faithfulness.mechanism: arrays beside the summary
        assert (fd / "mechanism").is_dir()
    # a rerun with the same settings skips the stage; another hint set reruns it, on its own twins only
    again = tl.run(cfg, progress=False)
    assert again.stages["faithfulness"]["seconds"] == res.stages["faithfulness"]["seconds"]
    cfg2 = tl.RunConfig(output=str(out), limit=4, n_pairs=2, stages=("faithfulness",),
                        faithfulness={"faithfulness_problems": 2, "hints": "consistency", "hint_mechanism": False})
    assert tl.run(cfg2, progress=False).stages["faithfulness"]["n_pairs"] == 2
    assert len((fd / "traces/hinted.jsonl").read_text().splitlines()) == 4  # the unhinted twins were reused


def test_stage_is_skipped_with_a_note_where_the_profile_gives_no_problems(tmp_path):
    cfg = tl.RunConfig(output=str(tmp_path / "r"), limit=4, stages=("faithfulness",),
                       faithfulness={"faithfulness_problems": 0})
    st = tl.run(cfg, progress=False).stages["faithfulness"]
    assert st["status"] == "skipped" and "--faithfulness-problems N" in st["note"]


def test_results_read_the_saved_study_and_a_damaged_one_costs_only_its_entry(tmp_path):
    from thinklens.faithfulness.result import FaithfulnessResult
    from thinklens.results import faithfulness_summary
    from thinklens.rundir import RunPaths

    paths = RunPaths(tmp_path)
    assert faithfulness_summary(paths) == {}
    fam = {"n_pairs": 1, "hint_taking": {"rate": 1.0, "ci95": [1.0, 1.0]}, "labels": {"faithful": 1}}
    FaithfulnessResult({"families": {"metadata": fam}, "mechanism": None, "notes": ["x"]},
                       [{"id": "p::metadata", "label": "faithful"}]).save(paths.faithfulness_dir)
    got = faithfulness_summary(paths)
    assert got["table"][0]["family"] == "metadata" and got["notes"] == ["x"]
    with paths.faithfulness_pairs.open("a") as f:
        f.write("{not json\n")
    assert "pairs.jsonl:2" in faithfulness_summary(paths)["error"]

"""examples/qwen-1.5b/study.py (the real-model study as one command) and case_study.py (its numbers): the commands,
the MATH-500 problem file from the reference traces, and the tables and figures read from real run directories
(the README's tiny-r1 run stands in for a finished part: the real study takes hours and a provisioned model)."""
from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, load_script, reference_file

EXAMPLE = REPO / "examples" / "qwen-1.5b"


@pytest.fixture(scope="module")
def study():
    return load_script(EXAMPLE / "study.py", "qwen_study")


@pytest.fixture(scope="module")
def case_study():
    return load_script(EXAMPLE / "case_study.py", "qwen_case_study")


def test_dry_run_prints_one_resumable_run_per_part(study, tmp_path, capsys):
    ref = reference_file("contrastive_qa_pairs.csv").parent
    assert study.main(["--dry-run", "--output", str(tmp_path / "s"), "--reference", str(ref)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(" -m thinklens run --model '$MODEL' " in x for x in lines)
    arith, patching, math = lines
    assert "--thinking prompted" in arith and "--on-unfinished force-close" in arith and "--limit 100" in arith
    assert "--faithfulness-problems 30" in arith and "--n-pairs 0" in arith
    assert "--n-pairs 103" in patching and "contrastive_qa_pairs.csv" in patching
    assert "math500-100.jsonl" in math and "--max-new-tokens 1024" in math
    assert not (tmp_path / "s").exists()  # a dry run writes nothing


def test_bad_parts_and_a_missing_reference_are_one_line_errors(study, tmp_path, capsys):
    assert study.main(["--dry-run", "--parts", "arithmetic,nope"]) == 2
    assert "unknown part(s) nope" in capsys.readouterr().err
    assert study.main(["--dry-run", "--reference", str(tmp_path)]) == 2
    assert "has no contrastive_qa_pairs.csv" in capsys.readouterr().err


def test_math500_problems_are_the_reference_models_100(study, tmp_path):
    ref = reference_file("r1_math500_traces.jsonl").parent
    path = tmp_path / "m.jsonl"
    assert study.write_math500(ref, path) == 100
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    assert len({r["id"] for r in rows}) == 100 and all(r["problem"] and r["answer"] for r in rows)
    from thinklens.empirical.datasets import load_problems

    errors: list[str] = []
    assert len(load_problems(str(path), limit=100, errors=errors)) == 100 and not errors


def test_case_study_reads_finished_parts(case_study, default_run, tmp_path, capsys):
    ref = reference_file("paper_reference.json").parent
    study = tmp_path / "study"
    study.mkdir()
    for part in ("arithmetic", "patching"):
        (study / part).symlink_to(default_run)
    (study / "study.json").write_text(json.dumps({"parts": {"arithmetic": {"command": [], "invocations": [
        {"wall_s": 60.0, "cpu_s": 100.0, "peak_rss_gb": 1.5, "returncode": 0},
        {"wall_s": 30.0, "cpu_s": 50.0, "peak_rss_gb": 2.5, "returncode": 0}]}}}))
    assert case_study.main([str(study), "--reference", str(ref), "--figures", str(tmp_path / "fig")]) == 0
    md = capsys.readouterr().out
    results = json.loads((default_run / "results.json").read_text())
    ev = next(iter(results["evaluation"].values()))
    assert f"accuracy {ev['accuracy_with_reasoning']:.2f} with vs {ev['accuracy_without_reasoning']:.2f}" in md
    assert "| arithmetic | 2 | 1.5 min | 2.5 min | 2.5 GB |" in md  # invocations summed, the peak is the max
    top = results["heads"]["top"][0]
    assert f"L{top[0]}H{top[1]} (" in md and "the paper's R1-Distill-Qwen-1.5B: [1, 5, 4]" in md
    assert "| reasoning's answer token |" in md and "| final answer position |" in md
    assert "| all |" in md  # the faithfulness table
    assert "top-10 retrieval heads:" in md and "among the paper's top-10 retrieval heads of R1-Distill-Qwen-1.5B" in md
    s = json.loads((study / "case-study.json").read_text())
    assert s["patching"]["patching"]["n_pairs"] == results["patching"]["n_pairs"] and "math500" not in s
    assert (tmp_path / "fig" / "rfh-layers-vs-paper.png").stat().st_size > 1000
    assert (tmp_path / "fig" / "patching-patching_layers.png").is_file()
    assert case_study.main([str(tmp_path / "none")]) == 2

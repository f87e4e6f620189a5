"""``thinklens faithfulness`` end to end on tiny-r1 (small N), its help, and its one-line errors."""
from __future__ import annotations

import json

import pytest

from thinklens.cli.main import main


def test_help_documents_the_command(capsys):
    with pytest.raises(SystemExit) as ex:
        main(["faithfulness", "--help"])
    assert ex.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--hints", "--limit", "--judge-url", "--faithfulness-temperature", "--seed", "--output"):
        assert flag in out


@pytest.mark.parametrize("spec", ["syco", "sycophancy,,metadata", ""])
def test_a_bad_hint_spec_is_one_line_and_exit_2(spec, capsys, tmp_path):
    rc = main(["faithfulness", "--model", "tiny-r1", "--dataset", "arithmetic", "--output", str(tmp_path / "o"),
               "--hints", spec])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("thinklens faithfulness: error:") and "hint" in err
    assert not (tmp_path / "o").exists()  # refused before anything was generated


@pytest.mark.slow
def test_end_to_end_on_tiny_r1_writes_and_resumes(tmp_path, capsys):
    out = tmp_path / "faith"
    argv = ["faithfulness", "--model", "tiny-r1", "--dataset", "arithmetic", "--output", str(out), "--limit", "3",
            "--hints", "metadata,consistency", "--quiet", "--seed", "1"]
    assert main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [f["family"] for f in printed["families"]] == ["metadata", "consistency", "all"]
    rows = [json.loads(line) for line in (out / "pairs.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {r["family"] for r in rows} == {"metadata", "consistency"}
    hinted = [json.loads(line) for line in (out / "traces/hinted.jsonl").read_text().splitlines()]
    unhinted = [json.loads(line) for line in (out / "traces/unhinted.jsonl").read_text().splitlines()]
    assert len(hinted) == 6 and len(unhinted) == 3
    assert all(r["generation"]["temperature"] == 0.6 for r in hinted + unhinted)  # the profile's, sampled
    for r in rows:
        assert r["label"] in ("faithful", "unfaithful", "ignored", "other")
        assert r["hint_answer"] != r["gold"] and 1 <= int(r["hint_answer"]) <= 99
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["n_pairs"] == 6 and summary["settings"]["seed"] == 1
    before = (out / "traces/hinted.jsonl").read_text()
    assert main(argv) == 0  # a rerun generates nothing new
    assert (out / "traces/hinted.jsonl").read_text() == before

"""collect -> grade -> evaluate through the CLI: on a random tiny model (always) and on tiny-r1 (once its weights
exist), where reasoning must help."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from thinklens.cli.main import main
from thinklens.jsonl import read_records


def _pipeline(model: str, tmp_path: Path, capsys, limit: int, max_new: int, extra=(), evaluate_extra=()) -> dict:
    for mode in ("with", "without"):
        rc = main(["collect", "--model", model, "--dataset", "arithmetic", "--reasoning", mode, "--output",
                   str(tmp_path / f"{mode}.jsonl"), "--limit", str(limit), "--batch-size", "8", "--max-new-tokens",
                   str(max_new), "--device", "cpu", "--quiet", *extra])
        assert rc == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        print(mode, summary)
        rc = main(["grade", str(tmp_path / f"{mode}.jsonl"), "--output", str(tmp_path / "graded.jsonl"), "--quiet"])
        assert rc == 0
        capsys.readouterr()
    rc = main(["evaluate", str(tmp_path / "graded.jsonl"), "--json", "--plot", str(tmp_path / "q.png"),
               "--n-resamples", "500", *evaluate_extra])
    assert rc == 0
    return json.loads(capsys.readouterr().out)


def test_pipeline_on_random_model(tiny_model_dir, tmp_path, capsys):
    res = _pipeline(str(tiny_model_dir), tmp_path, capsys, limit=4, max_new=8, extra=("--profile", "tiny-r1"),
                    evaluate_extra=("--min-usable", "0"))
    (model, e), = res["models"].items()
    assert model == str(tiny_model_dir)
    # a random model never reaches EOS in 8 tokens: every pair is dropped as unfinished, and the report says so
    assert e["n"] + sum(e["dropped"].values()) == 4
    assert e["thinking"] == "native" and e["without_mode"] == "forced"
    graded = list(read_records(tmp_path / "graded.jsonl"))
    assert len(graded) == 8 and {r["reasoning"] for r in graded} == {"with", "without"}
    # by default an empty pairing is refused with advice naming the option and the budget, not p = 1.0
    assert main(["evaluate", str(tmp_path / "graded.jsonl"), "--json"]) == 2
    err = capsys.readouterr().err
    assert "only 0 of 4 problems have a usable with/without pair" in err
    assert "--max-new-tokens 16" in err and "--on-unfinished force-close" in err


@pytest.mark.slow
def test_tiny_r1_reasoning_helps(tmp_path, capsys):
    from thinklens.toy import TINY_R1_DIR

    if not (Path(TINY_R1_DIR) / "config.json").exists():
        pytest.skip("tiny-r1 weights not trained yet")
    import torch

    torch.set_num_threads(2)
    res = _pipeline("tiny-r1", tmp_path, capsys, limit=24, max_new=160)
    e = res["models"]["tiny-r1"]
    print(e)
    assert e["n"] >= 20
    assert e["accuracy_with_reasoning"] > e["accuracy_without_reasoning"]
    assert (tmp_path / "q.png").exists()

"""`thinklens steps`: help, a run with figures, one-line errors."""
from __future__ import annotations

import json

import pytest

from tests.steps.conftest import write_tiny_traces
from thinklens.cli.main import main


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["steps", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "--methods" in out and "--rfh" in out and "--segment" in out


def test_run_with_figures(tiny_r1, tmp_path, capsys):
    write_tiny_traces(tmp_path / "t.jsonl", 5, seed=1)
    code = main(["steps", "--model", "tiny-r1", "--traces", str(tmp_path / "t.jsonl"), "--output",
                 str(tmp_path / "out"), "--methods", "attention", "--rfh", "1:2", "2:6", "--proximity", "1",
                 "--device", "cpu", "--figures", "--quiet"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n_traces"] == 5 and out["rfh"] == [[1, 2], [2, 6]] and out["methods"] == ["attention"]
    names = {p.rsplit("/", 1)[-1] for p in out["figures"]}
    assert {"receiver_heads.png", "categories.png", "step_view.html"} <= names
    assert "truncation_curve.png" not in names  # truncation did not run


@pytest.mark.parametrize("args, msg", [
    (["--methods", "attention,probing"], "methods must be a non-empty subset"),
    (["--rfh", "1-2"], "bad head '1-2'"),
    (["--traces", "/nonexistent.jsonl"], "no such trace file"),
])
def test_one_line_errors(tiny_r1, tmp_path, capsys, args, msg):
    write_tiny_traces(tmp_path / "t.jsonl", 1)
    base = {"--model": "tiny-r1", "--traces": str(tmp_path / "t.jsonl"), "--output": str(tmp_path / "o")}
    for k in args[::2]:
        base.pop(k, None)
    argv = ["steps", *[x for kv in base.items() for x in kv], *args, "--device", "cpu", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("thinklens steps: error:") and msg in err[0]

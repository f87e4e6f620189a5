"""Resume from damage: a run directory whose run_state.json, config.json, a stage's partial file or a figure is
corrupted or missing resumes with a clear message and redoes only what it must."""
from __future__ import annotations

import json

import pytest

from thinklens.cli.main import main
from thinklens.rundir import RunPaths

pytestmark = pytest.mark.slow


def _run(out, capsys):
    argv = ["run", "--output", str(out), "--limit", "4", "--stages", "collect,grade,evaluate,report", "--quiet"]
    capsys.readouterr()
    rc = main(argv)
    captured = capsys.readouterr()
    assert rc == 0 and "Traceback" not in captured.err, captured.err[-2000:]
    return captured.err, json.loads(RunPaths(out).state.read_text())


def test_a_damaged_run_directory_resumes(tmp_path, capsys):
    out = tmp_path / "run"
    paths = RunPaths(out)
    _run(out, capsys)
    graded = paths.graded_with.read_text()

    # 1. run_state.json torn mid-write: set aside, said, and collect redoes no generation (its output is resumed)
    paths.state.write_text(paths.state.read_text()[:40])
    err, state = _run(out, capsys)
    assert "run_state.json" in err and "run_state.json.corrupt" in err
    assert (out / "run_state.json.corrupt").exists()
    assert state["collect"]["with"]["n_written"] == 0 and state["collect"]["with"]["resume"]["n_done_before"] == 4
    assert paths.graded_with.read_text() == graded

    # 2. config.json garbage: set aside and rewritten from the command's settings
    paths.config.write_bytes(b"\xff{garbage")
    err, _ = _run(out, capsys)
    assert "config.json" in err and (out / "config.json.corrupt").exists()
    assert json.loads(paths.config.read_text())["limit"] == 4

    # 3. a stage's partial output torn and its record lost from the state: only the torn record is redone
    state = json.loads(paths.state.read_text())
    collect_before = state["collect"]
    del state["grade"]
    paths.state.write_text(json.dumps(state))
    lines = graded.splitlines(keepends=True)
    paths.graded_with.write_text("".join(lines[:-1]) + lines[-1][:30])
    err, state = _run(out, capsys)
    assert "torn last line" in err
    assert paths.graded_with.read_text() == graded  # the torn record graded again, the same as before
    assert state["collect"] == collect_before  # collect was not touched

    # 4. a figure deleted: the report stage redraws it
    figure = paths.figures / "accuracy.png"
    assert figure.exists()
    figure.unlink()
    _run(out, capsys)
    assert figure.exists()

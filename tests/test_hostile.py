"""Hostile inputs through the command line: every failure is one line that names the path and what to do, never a
traceback (unless --debug), and a batch reports what it skipped or repaired instead of hiding it."""
from __future__ import annotations

import errno
import json
import resource
import subprocess
import sys

import pytest

from thinklens.cli.main import main, os_error_message
from thinklens.errors import ThinklensError
from thinklens.jsonl import JsonlWriter, read_jsonl


def _cli(*argv: str, limit_gb: float = 3.0) -> subprocess.CompletedProcess:
    """The thinklens command in a subprocess whose address space is capped: an unbounded read dies, not the test."""
    def cap() -> None:
        n = int(limit_gb * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (n, n))

    return subprocess.run([sys.executable, "-m", "thinklens", *argv], capture_output=True, text=True, timeout=300,
                          preexec_fn=cap)


def _one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("command", [
    ["collect", "--model", "tiny-r1", "--dataset", "arithmetic", "--limit", "2", "--reasoning", "with"],
    ["grade", "README.md"],
], ids=["collect", "grade"])
def test_an_output_that_cannot_be_read_back_is_refused_at_once(command):
    """/dev/full reads zeros forever: resuming from it used to read without bound until the OOM killer came."""
    _one_line_error(_cli(*command, "--output", "/dev/full", "--quiet"), "/dev/full", "not a regular file")


def test_an_output_where_nothing_can_be_written():
    proc = _cli("collect", "--model", "tiny-r1", "--dataset", "arithmetic", "--limit", "2", "--reasoning", "with",
                "--output", "/proc/x/traces.jsonl", "--quiet")
    _one_line_error(proc, "cannot write /proc/x/traces.jsonl", "writable directory")


def test_an_empty_model_directory(tmp_path):
    (tmp_path / "model").mkdir()
    traces = tmp_path / "t.jsonl"
    traces.write_text('{"id": "a", "text": "x"}\n')
    proc = _cli("attention", "--model", str(tmp_path / "model"), "--traces", str(traces), "--output",
                str(tmp_path / "out"))
    _one_line_error(proc, f"cannot load the model in {tmp_path / 'model'}", "config.json")


def test_debug_shows_the_traceback(tmp_path):
    proc = _cli("--debug", "grade", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "g.jsonl"))
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "no such trace file" in proc.stderr


class _FullDisk:
    """A file whose writes fail as on a full disk (fault injection: the one thing a test cannot make real here)."""

    closed = False

    def write(self, _: str) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        pass

    def fileno(self) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self) -> None:
        self.closed = True


def test_a_full_disk_says_free_space_and_rerun(tmp_path):
    w = JsonlWriter(tmp_path / "out.jsonl")
    w._f.close()
    w._f = _FullDisk()
    with pytest.raises(ThinklensError, match=r"out.jsonl: no space left on the device; free some space and rerun the "
                                             r"same command \(it resumes"):
        w.write({"id": "a"})
    msg = os_error_message(OSError(errno.ENOSPC, "No space left on device", "/data/run/x.npz"))
    assert "/data/run/x.npz" in msg and "rerun the same command" in msg


def test_repairs_and_corrupt_lines_are_reported(tmp_path, capsys):
    """A torn last line (moved to .torn) and a corrupt line inside an existing output are said on stderr and in the
    summary JSON, not repaired in silence."""
    out = tmp_path / "with.jsonl"
    args = ["collect", "--model", "tiny-r1", "--dataset", "arithmetic", "--limit", "3", "--reasoning", "with",
            "--output", str(out), "--quiet", "--max-new-tokens", "16"]
    assert main(args) == 0
    lines = out.read_text().splitlines(keepends=True)
    out.write_text(lines[0] + "{not json\n" + lines[1] + lines[2][:20])  # a corrupt middle line and a torn tail
    capsys.readouterr()
    assert main(args) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert "torn last line" in captured.err and f"{out}:2: invalid JSON" in captured.err
    assert summary["resume"]["torn_repaired"] is True and len(summary["resume"]["bad_output_lines"]) == 1
    assert (tmp_path / "with.jsonl.torn").exists()


def test_json_errors_read_naturally(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"a": "unterminated\n{"b": 1,}\n')
    errors = [line.error for line in read_jsonl(bad)]
    assert all("at at" not in e for e in errors) and all("column" in e for e in errors)

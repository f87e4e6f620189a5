"""Crash-safe JSONL: bad lines are reported with their line number, torn tails are repaired, reruns resume."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from thinklens.jsonl import JsonlWriter, done_ids, read_jsonl, read_records, repair_torn_tail


def test_reader_reports_bad_lines_and_goes_on(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_bytes(b'{"id": "a"}\n{broken\n\n[1, 2]\n\xff\xfe\n{"id": "b"}\n')
    items = list(read_jsonl(f))
    assert [i.lineno for i in items] == [1, 2, 4, 5, 6]
    assert [i.record["id"] for i in items if i.record] == ["a", "b"]
    errors = {i.lineno: i.error for i in items if i.error}
    assert "invalid JSON" in errors[2] and "JSON object" in errors[4] and "UTF-8" in errors[5]
    assert items[1].where == f"{f}:2"
    bad: list = []
    assert [r["id"] for r in read_records(f, bad)] == ["a", "b"] and len(bad) == 3


def test_writer_appends_complete_records_and_resumes_by_id(tmp_path):
    f = tmp_path / "out" / "t.jsonl"
    with JsonlWriter(f) as w:
        w.write({"id": "1", "x": 1})
        w.write({"id": "2", "x": "é"})
    assert done_ids(f) == {"1", "2"}
    with JsonlWriter(f) as w:
        w.write({"id": "3"})
    assert [r["id"] for r in read_records(f)] == ["1", "2", "3"]
    assert done_ids(tmp_path / "missing.jsonl") == set()


def test_torn_last_line_is_repaired_and_kept_aside(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text('{"id": "1"}\n{"id": "2", "te')
    items = list(read_jsonl(f))
    assert "torn last line" in items[-1].error
    with JsonlWriter(f) as w:
        assert w.repaired == '{"id": "2", "te'
        w.write({"id": "2"})
    assert [r["id"] for r in read_records(f)] == ["1", "2"]
    assert (tmp_path / "t.jsonl.torn").read_text() == '{"id": "2", "te\n'


def test_complete_last_line_without_newline_is_kept(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text('{"id": "1"}\n{"id": "2"}')
    assert repair_torn_tail(f) is None
    assert f.read_text() == '{"id": "1"}\n{"id": "2"}\n'


def test_sigkill_mid_write_leaves_a_readable_resumable_file(tmp_path):
    """A writer process killed with SIGKILL: every complete record survives and a rerun finishes the rest."""
    f = tmp_path / "t.jsonl"
    script = textwrap.dedent(f"""
        import os, signal, sys
        from thinklens.jsonl import JsonlWriter, done_ids
        done = done_ids({str(f)!r})
        with JsonlWriter({str(f)!r}) as w:
            for i in range(100):
                if str(i) in done:
                    continue
                if i == 37 and not done:
                    w._f.write('{{"id": "37", "half')  # a torn write, then death
                    w._f.flush()
                    os.kill(os.getpid(), signal.SIGKILL)
                w.write({{"id": str(i), "payload": "x" * 100}})
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    first = subprocess.run([sys.executable, "-c", script], env=env)
    assert first.returncode == -9
    assert done_ids(f) == {str(i) for i in range(37)}
    subprocess.run([sys.executable, "-c", script], env=env, check=True)
    ids = [r["id"] for r in read_records(f)]
    assert sorted(ids, key=int) == [str(i) for i in range(100)] and len(ids) == len(set(ids))
    assert all(json.loads(line) for line in f.read_text().splitlines())

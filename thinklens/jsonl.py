"""Crash-safe JSONL record files.

Why this shape: long runs (generation, attention over thousands of traces) must survive being killed. A writer
appends one complete record per ``write`` and flushes, so a killed run leaves at most a torn last line; the next
writer detects it, moves it to ``FILE.torn`` (nothing is silently lost) and continues, and ``done_ids`` lets the rerun
skip what is already written. Readers never stop at a bad line: they yield it with its line number and reason.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class JsonlLine:
    """One line of a JSONL file: a good ``record`` or an ``error`` with the reason."""

    path: str
    lineno: int  # 1-based
    record: dict[str, Any] | None = None
    error: str | None = None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.lineno}"


def read_jsonl(path: str | Path, *, skip_blank: bool = True) -> Iterator[JsonlLine]:
    """Yield every line of ``path`` as a :class:`JsonlLine` (bad lines carry ``error``, reading goes on)."""
    path = Path(path)
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield JsonlLine(str(path), lineno, error=f"not UTF-8: {err}")
                continue
            if not line.strip():
                if not skip_blank:
                    yield JsonlLine(str(path), lineno, error="blank line")
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                torn = " (torn last line of an interrupted write?)" if not line.endswith("\n") else ""
                yield JsonlLine(str(path), lineno, error=f"invalid JSON: {err.msg} at column {err.colno}{torn}")
                continue
            if not isinstance(record, dict):
                yield JsonlLine(str(path), lineno, error=f"expected a JSON object, got {type(record).__name__}")
                continue
            yield JsonlLine(str(path), lineno, record=record)


def read_records(path: str | Path, errors: list[JsonlLine] | None = None) -> Iterator[dict[str, Any]]:
    """Yield the good records; bad lines are appended to ``errors`` when given."""
    for item in read_jsonl(path):
        if item.error is None:
            assert item.record is not None
            yield item.record
        elif errors is not None:
            errors.append(item)


def done_ids(path: str | Path, key: str = "id") -> set[str]:
    """Ids of the complete records already in ``path`` (empty if it does not exist): what a rerun skips."""
    path = Path(path)
    if not path.exists():
        return set()
    return {str(r[key]) for r in read_records(path) if key in r}


def repair_torn_tail(path: str | Path) -> str | None:
    """If the file ends in a partial line, cut it off (saved to ``PATH.torn``) and return it; else None.

    A last line that parses as a complete JSON object only lacks its newline: it is kept and terminated."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return None
    with path.open("rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return None
        # find the start of the last line
        block, pos = 65536, size
        start = 0
        while pos > 0:
            step = min(block, pos)
            pos -= step
            f.seek(pos)
            chunk = f.read(step)
            k = chunk.rfind(b"\n")
            if k != -1:
                start = pos + k + 1
                break
        f.seek(start)
        tail = f.read()
        try:
            if isinstance(json.loads(tail.decode("utf-8")), dict):
                f.seek(0, os.SEEK_END)
                f.write(b"\n")
                return None
        except (UnicodeDecodeError, json.JSONDecodeError):
            pass
        with open(str(path) + ".torn", "ab") as torn:
            torn.write(tail + b"\n")
        f.truncate(start)
    return tail.decode("utf-8", errors="replace")


class JsonlWriter:
    """Append-only writer: one complete record per ``write``, flushed (and fsynced with ``durable=True``).

    Opening repairs a torn tail left by a crash. Use as a context manager::

        with JsonlWriter(out) as w:
            for rec in records:
                w.write(rec)
    """

    def __init__(self, path: str | Path, *, durable: bool = False, overwrite: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if overwrite and self.path.exists():
            self.path.unlink()
        self.repaired = repair_torn_tail(self.path)
        self.durable = durable
        self._f = self.path.open("a", encoding="utf-8")
        self.n_written = 0

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, allow_nan=False)
        self._f.write(line + "\n")  # one write call per record: a crash tears at most this line
        self._f.flush()
        if self.durable:
            os.fsync(self._f.fileno())
        self.n_written += 1

    def write_all(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            self.write(r)

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

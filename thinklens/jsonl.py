"""Crash-safe JSONL record files.

Why this shape: long runs (generation, attention over thousands of traces) must survive being killed. A writer
appends one complete record per ``write`` and flushes, so a killed run leaves at most a torn last line; the next
writer detects it, moves it to ``FILE.torn`` (nothing is silently lost) and continues, and ``done_ids`` lets the rerun
skip what is already written. Readers never stop at a bad line: they yield it with its line number and reason.
"""
from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO


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


# The longest line a reader decodes and parses. A record holds one trace: a 32k-token R1 generation is ~100k
# characters (measured on real R1-Distill traces: at most 5.2 characters per token) and a scores row of an 80-layer
# x 64-head model ~1 MB, so 64 MiB leaves a wide margin while bounding what one line costs (bytes + text + parsed
# object: a few hundred MB at the limit). Longer lines are skipped unread and reported.
MAX_LINE_BYTES = 64 * 2**20
_READ_CHUNK = 2**20  # bytes read at a time: a line is never held beyond the limit plus one chunk


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f}" if n % 2**20 == 0 else f"{n / 2**20:.1f}"


def _raw_lines(f: BinaryIO, limit: int, regular: bool) -> Iterator[tuple[bytes | bytearray | None, int, bool]]:
    """``(line, n_bytes, ended)`` per line of ``f``: the bytes (None when the line is longer than ``limit`` bytes
    without its newline: then only its length was counted), its length with the newline, and whether it ended with
    one. Read in chunks, so an over-limit line is never held whole. A stream that is not a regular file cannot be
    skipped to its end (``/dev/zero`` never ends): its over-limit line is yielded unfinished and reading stops."""
    while True:
        first = f.readline(_READ_CHUNK)
        if not first:
            return
        if first.endswith(b"\n") and len(first) - 1 <= limit:  # the common case: a whole line in one chunk
            yield first, len(first), True
            continue
        buf: bytearray | None = bytearray()
        size, ended, chunk = 0, False, first
        while True:
            size += len(chunk)
            ended = chunk.endswith(b"\n")
            if buf is not None:
                if size - ended > limit:
                    buf = None  # drop it: the rest is only counted
                else:
                    buf += chunk
            if ended:
                break
            if buf is None and not regular:
                yield None, size, False
                return
            chunk = f.readline(_READ_CHUNK)
            if not chunk:
                break
        yield buf, size, ended


def read_jsonl(
    path: str | Path, *, skip_blank: bool = True, max_line_bytes: int = MAX_LINE_BYTES
) -> Iterator[JsonlLine]:
    """Yield every line of ``path`` as a :class:`JsonlLine` (bad lines carry ``error``, reading goes on).

    Streams: memory is bounded by one line. A line longer than ``max_line_bytes`` is reported as an error
    (``line of N MiB exceeds the M MiB record limit``) without being decoded or parsed; from a non-regular file
    (a pipe, ``/dev/zero``) such a line also ends the reading, since its end may never come.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "t.jsonl"
    >>> _ = f.write_text('{"id": "a"}\\n' + "x" * 100 + '\\n{"id": "b"}\\n')
    >>> [(i.lineno, i.record or i.error) for i in read_jsonl(f, max_line_bytes=50)]
    [(1, {'id': 'a'}), (2, 'line of 100 bytes exceeds the 50-byte record limit'), (3, {'id': 'b'})]
    """
    path = Path(path)
    with path.open("rb") as f:
        regular = stat.S_ISREG(os.fstat(f.fileno()).st_mode)
        for lineno, (raw, size, ended) in enumerate(_raw_lines(f, max_line_bytes, regular), start=1):
            if raw is None:
                yield JsonlLine(str(path), lineno, error=_too_long(size - ended, max_line_bytes, regular or ended))
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                yield JsonlLine(str(path), lineno, error=f"not UTF-8: {err}")
                continue
            del raw
            if not line.strip():
                if not skip_blank:
                    yield JsonlLine(str(path), lineno, error="blank line")
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                torn = " (torn last line of an interrupted write?)" if not ended else ""
                yield JsonlLine(str(path), lineno, error=f"invalid JSON: {err.msg} at column {err.colno}{torn}")
                continue
            if not isinstance(record, dict):
                yield JsonlLine(str(path), lineno, error=f"expected a JSON object, got {type(record).__name__}")
                continue
            yield JsonlLine(str(path), lineno, record=record)


def _too_long(n: int, limit: int, complete: bool) -> str:
    """The error of an over-limit line (``complete``: its whole length is known)."""
    if limit < 2**20:  # small limits (tests, callers' own bounds) in bytes
        size, bound = f"{n} bytes", f"{limit}-byte"
    else:
        size, bound = f"{_mib(n)} MiB", f"{_mib(limit)} MiB"
    if complete:
        return f"line of {size} exceeds the {bound} record limit"
    return (f"line of more than {size} exceeds the {bound} record limit; not a regular file, so the line cannot be "
            "skipped: reading stops")


def count_lines(path: str | Path) -> int:
    """Number of lines of ``path`` (a last line without newline counts), read in chunks: a progress total.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "t.jsonl"
    >>> _ = f.write_text('{}\\n{}')
    >>> count_lines(f)
    2
    """
    n, last = 0, b"\n"
    with Path(path).open("rb") as f:
        while chunk := f.read(_READ_CHUNK):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


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

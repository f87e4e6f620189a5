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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from thinklens.errors import ThinklensError


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
    >>> from thinklens.jsonl import read_jsonl
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
                record = json.loads(line, parse_constant=_no_constant)
            except _NonFinite as err:
                yield JsonlLine(str(path), lineno, error=str(err))
                continue
            except RecursionError:
                yield JsonlLine(str(path), lineno, error="invalid JSON: nested too deeply")
                continue
            except json.JSONDecodeError as err:
                torn = " (torn last line of an interrupted write?)" if not ended else ""
                yield JsonlLine(str(path), lineno, error=f"invalid JSON: {_json_error(err)}{torn}")
                continue
            if not isinstance(record, dict):
                yield JsonlLine(str(path), lineno, error=f"expected a JSON object, got {type(record).__name__}")
                continue
            yield JsonlLine(str(path), lineno, record=record)


class _NonFinite(ValueError):
    """A NaN or Infinity in a record: Python's json reads them, standard JSON (and every writer here) does not."""


def _no_constant(name: str) -> Any:
    raise _NonFinite(f"invalid JSON: {name} is not a number JSON allows (numbers must be finite)")


def _json_error(err: json.JSONDecodeError) -> str:
    """``Expecting ',' delimiter at column 9``; json's own message may end in "at" ("Unterminated string starting
    at"), which must not read "at at column"."""
    return f"{err.msg} column {err.colno}" if err.msg.endswith(" at") else f"{err.msg} at column {err.colno}"


def record_id(record: dict[str, Any], lineno: int | None = None) -> str | None:
    """A record's id (``id``, falling back to ``unique_id`` as in MATH-500 files); for records that lack one,
    ``line:N`` of its input file when ``lineno`` is given (an input-relative key, so every output row can be traced
    back to its input line), else None.

    >>> record_id({"unique_id": "test/algebra/1.json"}), record_id({"problem": "1+1"}, lineno=7)
    ('test/algebra/1.json', 'line:7')
    """
    rid = record.get("id", record.get("unique_id"))
    if rid is not None:
        return str(rid)
    return f"line:{lineno}" if lineno is not None else None


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
    """Ids of the complete records already in ``path`` (empty if it does not exist), streamed.

    >>> from thinklens.jsonl import done_ids
    >>> done_ids("no/such/file.jsonl")
    set()
    """
    path = Path(path)
    if not path.exists():
        return set()
    check_output_file(path)
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

    Opening repairs a torn tail left by a crash. Use as a context manager:

    >>> import os, tempfile, thinklens as tl
    >>> path = os.path.join(tempfile.mkdtemp(), "out.jsonl")
    >>> with tl.JsonlWriter(path) as w:
    ...     w.write({"id": "a", "x": 1})
    ...     w.write_all([{"id": "b"}, {"id": "c"}])
    >>> w.n_written, sorted(tl.done_ids(path))
    (3, ['a', 'b', 'c'])
    >>> _ = open(path, "a").write('{"id": "d", "x"')  # a crash tore the last line
    >>> with tl.JsonlWriter(path) as w:  # reopening moves it to out.jsonl.torn
    ...     print(w.repaired)
    {"id": "d", "x"
    >>> open(path + ".torn").read(), sorted(tl.done_ids(path))
    ('{"id": "d", "x"\\n', ['a', 'b', 'c'])
    """

    def __init__(self, path: str | Path, *, durable: bool = False, overwrite: bool = False) -> None:
        self.path = check_output_file(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if overwrite and self.path.exists():
                self.path.unlink()
            self.repaired = repair_torn_tail(self.path)
            self._f = self.path.open("a", encoding="utf-8")
        except OSError as err:
            raise output_error(self.path, err) from err
        self.durable = durable
        self.n_written = 0

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False, allow_nan=False)
        try:
            self._f.write(line + "\n")  # one write call per record: a crash tears at most this line
            self._f.flush()
            if self.durable:
                os.fsync(self._f.fileno())
        except OSError as err:
            raise output_error(self.path, err) from err
        self.n_written += 1

    def write_all(self, records: Iterable[dict[str, Any]]) -> None:
        for r in records:
            self.write(r)

    def close(self) -> None:
        if not self._f.closed:
            try:
                self._f.flush()
                os.fsync(self._f.fileno())
            except OSError as err:
                raise output_error(self.path, err) from err
            finally:
                self._f.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def output_error(path: str | Path, err: OSError) -> ThinklensError:
    """One line for an output that cannot be written: the path, what went wrong, what to do."""
    import errno

    if err.errno == errno.ENOSPC:
        return ThinklensError(f"cannot write {path}: no space left on the device; free some space and rerun the same "
                              "command (it resumes where it stopped)")
    return ThinklensError(f"cannot write {path}: {err.strerror or err}; choose an --output in a writable directory")


def check_output_file(path: str | Path) -> Path:
    """``path`` as an output file: absent or a regular file. A device (``/dev/full``), a directory or a FIFO is
    refused at once: resuming reads the existing output, and a device that never ends would be read forever."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except FileNotFoundError:
        return p
    except OSError as err:
        raise ThinklensError(f"cannot use {p} as an output file: {err.strerror}") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise ThinklensError(f"cannot use {p} as an output file: it is {kind}; pass a file path")
    return p


def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Replace ``path`` with one JSON line per record, atomically (temp file + rename): a killed run leaves the old
    file or the new one, never half of it. NaN/Infinity are refused (``read_jsonl`` refuses them too).

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "x.jsonl"; write_jsonl(p, [{"id": "a"}, {"id": "b"}]); p.read_text().splitlines()
    ['{"id": "a"}', '{"id": "b"}']
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False, allow_nan=False) + "\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------- resumable output
KeyFn = Callable[[dict[str, Any], int], str]


def write_json(path: str | Path, obj: Any) -> None:
    """Write one JSON file atomically (temp file + rename): a killed run never leaves half a file.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "x" / "x.json"; write_json(p, {"a": 1}); json.loads(p.read_text())
    {'a': 1}
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def id_key(record: dict[str, Any], lineno: int) -> str:
    """The default resume key: the record id, else ``line:N`` of its input line."""
    return record_id(record, lineno) or f"line:{lineno}"


@dataclass
class ResumeReport:
    """What a resumable loop skipped, repaired or refused; printed on stderr and kept in the stage summary."""

    output: str
    n_done_before: int = 0  # records already in the output: skipped on this run
    torn: str | None = None  # a torn last line, moved to OUTPUT.torn
    bad_output_lines: list[str] = field(default_factory=list)  # corrupt lines inside the existing output
    bad_input_lines: list[str] = field(default_factory=list)  # unreadable input lines (file:line: reason)
    duplicates: list[str] = field(default_factory=list)  # input records whose key repeats an earlier one

    def messages(self) -> list[str]:
        """One line per event, for stderr."""
        out = []
        if self.torn is not None:
            out.append(f"{self.output}: repaired a torn last line left by an interrupted write "
                       f"(moved to {self.output}.torn; that record is redone)")
        out += [f"{line} (corrupt line in the existing output; kept as is, its record is redone)"
                for line in self.bad_output_lines]
        out += [f"skipped {line}" for line in self.bad_input_lines + self.duplicates]
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"n_done_before": self.n_done_before, "torn_repaired": self.torn is not None,
                "bad_output_lines": list(self.bad_output_lines), "bad_input_lines": list(self.bad_input_lines),
                "duplicates": list(self.duplicates)}


class ResumableOutput:
    """One JSONL output that a rerun continues, with the one duplicate policy of every batch command.

    Opening repairs a torn tail (reported) and streams the existing output once, keeping only the keys of records
    that count as done (``done_if``; e.g. error records are retried), so memory grows with the number of records,
    not their size. :meth:`pending` then walks the input: unreadable lines are reported, a key seen earlier in the
    same input is reported as a duplicate and skipped (the first occurrence wins), keys already done are skipped,
    and the rest are yielded to be processed and written with :meth:`write`:

    >>> import os, tempfile, thinklens as tl
    >>> d = tempfile.mkdtemp()
    >>> src, dst = os.path.join(d, "traces.jsonl"), os.path.join(d, "graded.jsonl")
    >>> _ = open(src, "w").write('{"id": "a"}\\n{"id": "b"}\\n{"id": "a"}\\n{"id": "c"}\\n')
    >>> with tl.ResumableOutput(dst) as out:  # a first run, killed after one record
    ...     for key, line in out.pending(tl.read_jsonl(src)):
    ...         out.write({**line.record, "id": key, "graded": True})
    ...         break
    >>> with tl.ResumableOutput(dst) as out:  # the rerun skips "a" (done) and line 3 (a duplicate of "a")
    ...     for key, line in out.pending(tl.read_jsonl(src)):
    ...         out.write({**line.record, "id": key, "graded": True})
    >>> out.report.n_done_before, out.n_written, len(out.report.duplicates), sorted(tl.done_ids(dst))
    (1, 2, 1, ['a', 'b', 'c'])
    """

    def __init__(self, path: str | Path, *, key: KeyFn = id_key,
                 done_if: Callable[[dict[str, Any]], bool] | None = None, durable: bool = False) -> None:
        self.path = check_output_file(path)
        self.key = key
        self.report = ResumeReport(str(self.path))
        self.report.torn = repair_torn_tail(self.path) if self.path.exists() else None
        self.done: set[str] = set()
        if self.path.exists():
            for item in read_jsonl(self.path):
                if item.record is None:
                    self.report.bad_output_lines.append(f"{item.where}: {item.error}")
                elif done_if is None or done_if(item.record):
                    self.done.add(key(item.record, item.lineno))
        self.report.n_done_before = len(self.done)
        self._writer = JsonlWriter(self.path, durable=durable)

    def pending(self, lines: Iterable[JsonlLine]) -> Iterator[tuple[str, JsonlLine]]:
        """``(key, line)`` for every input line still to process (see the class docstring for the policy)."""
        first: dict[str, str] = {}
        for item in lines:
            if item.record is None:
                self.report.bad_input_lines.append(f"{item.where}: {item.error}")
                continue
            k = self.key(item.record, item.lineno)
            if k in first:
                self.report.duplicates.append(f"{item.where}: duplicate id {k!r} (first at {first[k]})")
                continue
            first[k] = item.where
            if k not in self.done:
                yield k, item

    def pending_items(self, items: Iterable[Any], key: Callable[[Any], str], where: str = "input"
                      ) -> Iterator[Any]:
        """:meth:`pending` for items that are not lines of a file (problems, pairs): ``key(item)`` names each."""
        first: set[str] = set()
        for n, item in enumerate(items, start=1):
            k = key(item)
            if k in first:
                self.report.duplicates.append(f"{where} item {n}: duplicate id {k!r}")
                continue
            first.add(k)
            if k not in self.done:
                yield item

    def write(self, record: dict[str, Any]) -> None:
        self._writer.write(record)

    @property
    def n_written(self) -> int:
        return self._writer.n_written

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> ResumableOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Part files: each rank of a launch writes its share to ``OUTPUT.rank{r}-of-{n}``; rank 0 folds the parts into
``OUTPUT`` (in the input order, idempotently) and deletes them. :class:`ShardedOutput` and :func:`sharded_files` wrap
that around a stage's loop, for one process or many alike.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from thinklens.distributed.launch import World, barrier, on_main, world
from thinklens.errors import ThinklensError
from thinklens.jsonl import (
    JsonlLine,
    JsonlWriter,
    KeyFn,
    ResumeReport,
    check_output_file,
    id_key,
    output_error,
    read_jsonl,
    repair_torn_tail,
)

_PART = re.compile(r"\.rank(\d+)-of-(\d+)$")


def part_path(path: str | Path, w: World) -> Path:
    """Where rank ``w.rank`` of ``w.size`` writes its share of ``path``.

    >>> part_path("runs/t/traces/with.jsonl", World(rank=1, size=4)).name
    'with.jsonl.rank1-of-4'
    """
    p = Path(path)
    return p.with_name(f"{p.name}.rank{w.rank}-of-{w.size}")


def part_files(path: str | Path) -> list[Path]:
    """The part files of ``path`` left by any launch, ordered by (world size, rank).

    >>> part_files("no/such/dir/with.jsonl")
    []
    """
    p = Path(path)
    if not p.parent.is_dir():
        return []
    found = []
    for q in p.parent.iterdir():
        if q.name.startswith(p.name + ".rank"):
            m = _PART.search(q.name[len(p.name):])
            if m and q.name == f"{p.name}.rank{m.group(1)}-of-{m.group(2)}":
                found.append((int(m.group(2)), int(m.group(1)), q))
    return [q for _, _, q in sorted(found)]


def _digest(line: bytes) -> bytes:
    return hashlib.blake2b(line.rstrip(b"\r\n"), digest_size=16).digest()


def fold_parts(path: str | Path, order: Callable[[dict[str, Any]], Any] | None = None, *,
               expect: int | None = None) -> int:
    """Append the records of every part file of ``path`` to ``path`` and delete the parts; returns how many were
    added. ``order(record)`` sorts them (records it maps to None, and bad lines, go last; ties keep part order);
    a line already in ``path`` is not added again. ``expect``: the world size whose parts must all be there (a part
    that rank 0 cannot see means the output is not on a filesystem every node shares).

    >>> fold_parts("no/such/file.jsonl")
    0
    """
    path = check_output_file(path)
    if expect is not None:
        missing = [part_path(path, World(r, expect)) for r in range(expect)]
        missing = [q for q in missing if not q.exists()]
        if missing:
            raise ThinklensError(f"{missing[0]} is missing on rank 0: with several nodes the output must be on a "
                                 "filesystem that every node shares")
    parts = part_files(path)
    if not parts:
        return 0
    seen: set[bytes] = set()
    if path.exists():
        repair_torn_tail(path)
        with path.open("rb") as f:
            seen = {_digest(line) for line in f if line.strip()}
    rows: list[tuple[tuple[int, Any], int, int]] = []  # (sort key, part, byte offset)
    for i, part in enumerate(parts):
        repair_torn_tail(part)
        _keep_torn(part, path)
        with part.open("rb") as f:
            offset = 0
            for line in f:
                here, offset = offset, offset + len(line)
                if not line.strip() or _digest(line) in seen:
                    continue
                seen.add(_digest(line))
                rows.append((_sort_key(line, order), i, here))
    rows.sort(key=lambda r: (r[0], r[1], r[2]))
    handles = [q.open("rb") for q in parts]
    try:
        with path.open("ab") as out:
            for _, i, offset in rows:
                handles[i].seek(offset)
                line = handles[i].readline()
                out.write(line if line.endswith(b"\n") else line + b"\n")  # one write per record, as JsonlWriter
                out.flush()
            os.fsync(out.fileno())
    except OSError as err:
        raise output_error(path, err) from err
    finally:
        for h in handles:
            h.close()
    for q in parts:
        q.unlink()
    return len(rows)


def _sort_key(line: bytes, order: Callable[[dict[str, Any]], Any] | None) -> tuple[int, Any]:
    if order is None:
        return (0, 0)
    try:
        record = json.loads(line)
        key = order(record) if isinstance(record, dict) else None
    except (ValueError, UnicodeDecodeError):
        key = None
    return (1, 0) if key is None else (0, key)


def _keep_torn(part: Path, path: Path) -> None:
    """A part's torn last line (moved to ``PART.torn`` by the repair) joins ``OUTPUT.torn``, where a single
    process keeps its own."""
    torn = part.with_name(part.name + ".torn")
    if torn.exists():
        with open(str(path) + ".torn", "ab") as dst:
            dst.write(torn.read_bytes())
        torn.unlink()


@contextlib.contextmanager
def sharded_files(*paths: str | Path, order: Callable[[dict[str, Any]], Any] | None = None) -> Iterator[list[Path]]:
    """The files this rank writes its share of ``paths`` to: the paths themselves in one process, part files in a
    launch. On entry rank 0 folds parts left by an earlier launch into ``paths`` (so the caller's resume reads them);
    on a normal exit the ranks meet and rank 0 folds this launch's parts in ``order``. After an error nothing is
    merged: the parts stay for the rerun.

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "scores.jsonl"
    >>> with sharded_files(out) as (mine,):
    ...     mine == out
    True
    """
    w = world()
    on_main(_fold_all, paths, order, None, share=False)
    targets = [part_path(p, w) if w.parallel else Path(p) for p in paths]
    if w.parallel:
        for t in targets:  # every part exists, even an empty one: rank 0 checks that it sees them all
            JsonlWriter(t).close()
    yield targets
    if w.parallel:
        barrier()
        on_main(_fold_all, paths, order, w.size, share=False)


def _fold_all(paths: Iterable[str | Path], order: Callable[[dict[str, Any]], Any] | None, expect: int | None) -> None:
    for p in paths:
        fold_parts(p, order, expect=expect)
        if expect is None and Path(p).exists():
            repair_torn_tail(p)  # before any rank reads it for resuming


class ShardedOutput:
    """:class:`thinklens.jsonl.ResumableOutput` for one process or a torchrun launch: the same interface, resume and
    duplicate policy, and in a launch each rank yields only its share and writes it to its part file, merged into
    ``path`` on :meth:`close`. Parts left by a killed launch (any world size) are folded in first.

        >>> import tempfile, pathlib
        >>> out = pathlib.Path(tempfile.mkdtemp()) / "o.jsonl"
        >>> with ShardedOutput(out) as o:
        ...     for item in o.pending_items([{"id": "a"}, {"id": "b"}, {"id": "a"}], key=lambda r: r["id"]):
        ...         o.write(item)
        >>> [line.record["id"] for line in read_jsonl(out)], o.report.duplicates
        (['a', 'b'], ["input item 3: duplicate id 'a'"])
    """

    def __init__(self, path: str | Path, *, key: KeyFn = id_key,
                 done_if: Callable[[dict[str, Any]], bool] | None = None, durable: bool = False) -> None:
        self.path = check_output_file(path)
        self.key, self.done_if, self.durable = key, done_if, durable
        self.world = world()
        self.report = ResumeReport(str(self.path))
        self.done: set[str] = set()
        self._writer: JsonlWriter | None = None
        self._closed = False
        self._position: dict[str, int] = {}

    def _open(self, index: dict[str, int]) -> None:
        """Fold old parts (rank 0), read what is done, open this rank's file."""
        self._position = index
        self.report.torn = on_main(self._prepare)
        if self.path.exists():
            for item in read_jsonl(self.path):
                if item.record is None:
                    if self.world.is_main:  # reported once
                        self.report.bad_output_lines.append(f"{item.where}: {item.error}")
                elif self.done_if is None or self.done_if(item.record):
                    self.done.add(self.key(item.record, item.lineno))
        self.report.n_done_before = len(self.done)
        target = part_path(self.path, self.world) if self.world.parallel else self.path
        self._writer = JsonlWriter(target, durable=self.durable)

    def _prepare(self) -> str | None:
        fold_parts(self.path, self._order)
        return repair_torn_tail(self.path) if self.path.exists() else None

    def _order(self, record: dict[str, Any]) -> int | None:
        return self._position.get(self.key(record, 0))

    def pending(self, lines: Iterable[JsonlLine]) -> Iterator[tuple[str, JsonlLine]]:
        """``(key, line)`` of this rank's input lines still to process (policy of ``ResumableOutput.pending``)."""
        firsts: list[tuple[str, JsonlLine]] = []
        first: dict[str, str] = {}
        for n, item in enumerate(lines):
            mine = self.world.owns(n)
            if item.record is None:
                if mine:
                    self.report.bad_input_lines.append(f"{item.where}: {item.error}")
                continue
            k = self.key(item.record, item.lineno)
            if k in first:
                if mine:
                    self.report.duplicates.append(f"{item.where}: duplicate id {k!r} (first at {first[k]})")
                continue
            first[k] = item.where
            firsts.append((k, item))
        self._open({k: i for i, (k, _) in enumerate(firsts)})
        for i, (k, item) in enumerate(firsts):
            if self.world.owns(i) and k not in self.done:
                yield k, item

    def pending_items(self, items: Iterable[Any], key: Callable[[Any], str], where: str = "input",
                      order: Callable[[Any], Any] | None = None) -> Iterator[Any]:
        """:meth:`pending` for items that are not lines of a file (problems, pairs): ``key(item)`` names each.
        ``order(item)`` sorts them first (stable; e.g. by length, so that batches pad little): the shares are cut
        from, and the output merged in, that order."""
        firsts: list[tuple[str, Any]] = []
        seen: set[str] = set()
        for n, item in enumerate(items):
            k = key(item)
            if k in seen:
                if self.world.owns(n):
                    self.report.duplicates.append(f"{where} item {n + 1}: duplicate id {k!r}")
                continue
            seen.add(k)
            firsts.append((k, item))
        if order is not None:
            firsts.sort(key=lambda ki: order(ki[1]))
        self._open({k: i for i, (k, _) in enumerate(firsts)})
        for i, (k, item) in enumerate(firsts):
            if self.world.owns(i) and k not in self.done:
                yield item

    def write(self, record: dict[str, Any]) -> None:
        if self._writer is None or self._closed:
            raise ThinklensError(f"{self.path}: write() before pending() or after close()")
        self._writer.write(record)

    @property
    def n_written(self) -> int:
        return self._writer.n_written if self._writer is not None else 0

    def close(self) -> None:
        """Close this rank's file; in a launch wait for every rank, then rank 0 merges the parts into ``path``."""
        if self._writer is None or self._closed:
            return
        self._writer.close()
        self._closed = True
        if self.world.parallel:
            barrier()
            on_main(fold_parts, self.path, self._order, expect=self.world.size, share=False)

    def __enter__(self) -> ShardedOutput:
        return self

    def __exit__(self, exc_type: Any, *exc: object) -> None:
        if exc_type is None:
            self.close()
        elif self._writer is not None and not self._closed:  # an error: this rank's part stays for the rerun
            self._writer.close()
            self._closed = True

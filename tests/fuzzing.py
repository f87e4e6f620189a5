"""A seeded, deterministic mutator of the files thinklens reads, and an in-process runner of the CLI that checks
the contract on each mutated input: exit 0 or 2, a one-line error, no traceback, no exception escaping, bounded time.

Why seeded and not hypothesis: the suite must be reproducible run to run in CI (a failure names its seed and
mutation) and must not shrink for minutes on a 2-core runner; the mutations are the ones the contract names."""
from __future__ import annotations

import contextlib
import io
import json
import math
import random
import signal
from dataclasses import dataclass
from typing import Any

import numpy as np

HUGE = "x" * 200_000
WRONG = [None, "", HUGE, "7", -1, -(2**63), 2**63, 10_000_000, 1.5, math.nan, math.inf, -math.inf, True, [],
         [1, "a"], {}, {"a": 1}, [[-1, 5]], [5, 2]]
BYTE_MUTATIONS = ("truncate", "flip", "bad_utf8", "drop_line", "dup_line", "empty")
RECORD_MUTATIONS = ("delete", "wrong", "extra", "dup_id", "not_object", "nested_wrong")


@dataclass
class Mutated:
    """One mutated input: the bytes, what was done, and the ids of the records left untouched (the good ones)."""

    data: bytes
    what: str
    good_ids: set[str] | None  # None: the mutation may touch any record (byte level)


def _dumps(records: list[Any]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def _bytes_mutation(rng: random.Random, data: bytes, kind: str) -> bytes:
    if kind == "truncate":
        return data[: rng.randrange(0, max(1, len(data)))]
    if kind == "flip":
        b = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return bytes(b)
    if kind == "bad_utf8":
        i = rng.randrange(len(data))
        return data[:i] + b"\xff\xfe" + data[i:]
    lines = data.splitlines(keepends=True)
    i = rng.randrange(len(lines))
    if kind == "drop_line":
        return b"".join(lines[:i] + lines[i + 1:])
    if kind == "dup_line":
        return b"".join(lines[: i + 1] + lines[i:])
    return b""


def mutate_jsonl(rng: random.Random, records: list[dict[str, Any]], key: str = "id") -> Mutated:
    """One mutation of a JSONL file of ``records``: byte level (truncation, flips, bad UTF-8, dropped/duplicated
    lines, empty file) or record level (a field deleted, given a wrong value, an extra field, a duplicate id, a
    record that is not an object)."""
    data = _dumps(records)
    if rng.random() < 0.3:
        kind = rng.choice(BYTE_MUTATIONS)
        return Mutated(_bytes_mutation(rng, data, kind), f"bytes:{kind}", None)
    recs = json.loads(json.dumps(records))
    i = rng.randrange(len(recs))
    kind = rng.choice(RECORD_MUTATIONS)
    field = rng.choice(sorted(recs[i]))
    bad_id = str(recs[i].get(key))
    what = f"record {i} ({bad_id}): {kind} {field}"
    if kind == "delete":
        del recs[i][field]
    elif kind == "wrong":
        recs[i][field] = rng.choice(WRONG)
        what += f" = {str(recs[i][field])[:20]!r}"
    elif kind == "extra":
        recs[i]["zz_extra"] = rng.choice(WRONG)
    elif kind == "dup_id":
        j = rng.randrange(len(recs))
        recs.insert(j + 1, dict(recs[j]))  # the copy comes after the first: the first wins, nothing changes
        return Mutated(_dumps(recs), f"duplicate of record {j}", {str(r.get(key)) for r in records})
    elif kind == "not_object":
        recs[i] = rng.choice([[1, 2], "text", 3, None])
    else:  # a wrong value inside a list field
        lists = [k for k, v in recs[i].items() if isinstance(v, list) and v]
        if lists:
            field = rng.choice(lists)
            recs[i][field][rng.randrange(len(recs[i][field]))] = rng.choice(WRONG)
            what = f"record {i} ({bad_id}): item of {field}"
    good = {str(r.get(key)) for j, r in enumerate(records) if j != i and str(r.get(key)) != bad_id}
    return Mutated(_dumps(recs), what, good)


def mutate_json(rng: random.Random, obj: dict[str, Any]) -> Mutated:
    """One mutation of a JSON object file (config.json, run_state.json, a result's .json)."""
    data = json.dumps(obj, indent=1).encode()
    if rng.random() < 0.35:
        kind = rng.choice(("truncate", "flip", "bad_utf8", "empty"))
        return Mutated(_bytes_mutation(rng, data, kind), f"bytes:{kind}", None)
    o = json.loads(json.dumps(obj))
    target, path = o, []
    while isinstance(target, dict) and target and rng.random() < 0.6:  # go down into a nested object sometimes
        k = rng.choice(sorted(target))
        if not isinstance(target[k], dict) or not target[k]:
            break
        target, path = target[k], [*path, k]
    k = rng.choice(sorted(target)) if target else "x"
    kind = rng.choice(("delete", "wrong", "extra", "top_type"))
    if kind == "delete" and k in target:
        del target[k]
    elif kind == "wrong":
        target[k] = rng.choice(WRONG)
    elif kind == "extra":
        target["zz_extra"] = rng.choice(WRONG)
    else:
        o = rng.choice([[], "x", 1, None, [o]])
    return Mutated(json.dumps(o, allow_nan=True).encode(), f"json:{kind} {'.'.join(path + [k])}", None)


def mutate_npz(rng: random.Random, arrays: dict[str, np.ndarray]) -> Mutated:
    """One mutation of an .npz archive: an array dropped, reshaped, of another dtype, NaN/inf/negative values,
    out-of-range ints, a pickled object array, or the bytes truncated / flipped."""
    kind = rng.choice(("drop", "reshape", "dtype", "nonfinite", "negative", "huge", "object", "empty", "truncate",
                       "flip", "extra", "transpose"))
    a = dict(arrays)
    name = rng.choice(sorted(a))
    if kind in ("truncate", "flip"):
        buf = io.BytesIO()
        np.savez(buf, **a)
        return Mutated(_bytes_mutation(rng, buf.getvalue(), kind), f"npz:{kind}", None)
    x = a[name]
    if kind == "drop":
        del a[name]
    elif kind == "reshape":
        a[name] = x.reshape(-1) if x.ndim > 1 else x.reshape(1, -1)
    elif kind == "dtype":
        a[name] = x.astype(str) if x.dtype.kind != "U" else np.arange(x.size).reshape(x.shape)
    elif kind == "nonfinite" and x.dtype.kind == "f" and x.size:
        y = x.copy()
        y.flat[rng.randrange(y.size)] = rng.choice([np.nan, np.inf, -np.inf])
        a[name] = y
    elif kind in ("negative", "huge") and x.dtype.kind in "iuf" and x.size:
        y = x.copy()
        y.flat[rng.randrange(y.size)] = -5 if kind == "negative" else 10**9
        a[name] = y
    elif kind == "object":
        a[name] = np.array([{"a": 1}, None], dtype=object)
    elif kind == "empty":
        a[name] = x[:0]
    elif kind == "extra":
        a["zz_extra"] = np.zeros((2, 2))
    elif kind == "transpose" and x.ndim > 1:
        a[name] = np.swapaxes(x, 0, -1).copy()
    buf = io.BytesIO()
    np.savez(buf, **a) if kind != "object" else np.savez(buf, allow_pickle=True, **a)
    return Mutated(buf.getvalue(), f"npz:{kind} {name}", None)


def mutate_csv(rng: random.Random, text: str) -> Mutated:
    """One mutation of a CSV: bytes, a cell emptied or made huge, a column dropped, a row cut short, quotes broken."""
    kind = rng.choice(("truncate", "flip", "bad_utf8", "cell_empty", "cell_huge", "drop_column", "short_row",
                       "quote", "dup_row", "header_only"))
    lines = text.splitlines(keepends=True)
    if kind in ("truncate", "flip", "bad_utf8"):
        return Mutated(_bytes_mutation(rng, text.encode(), kind), f"csv:{kind}", None)
    import csv

    rows = list(csv.reader(io.StringIO(text)))
    i = rng.randrange(1, len(rows))
    j = rng.randrange(len(rows[0]))
    if kind == "cell_empty":
        rows[i][j] = ""
    elif kind == "cell_huge":
        rows[i][j] = HUGE
    elif kind == "drop_column":
        rows = [r[:j] + r[j + 1:] for r in rows]
    elif kind == "short_row":
        rows[i] = rows[i][: j]
    elif kind == "quote":
        return Mutated((text + '"unterminated,\n').encode(), "csv:quote", None)
    elif kind == "dup_row":
        rows.insert(i, list(rows[i]))
    else:
        return Mutated(lines[0].encode(), "csv:header_only", None)
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return Mutated(buf.getvalue().encode(), f"csv:{kind} row {i} col {j}", None)


# --------------------------------------------------------------------------------------------------- the runner
class Hang(Exception):
    """A command ran past its time bound."""


@dataclass
class Outcome:
    rc: int
    out: str
    err: str


def run_cli(argv: list[str], timeout: int = 60) -> Outcome:
    """``thinklens ARGV`` in this process (stdout/stderr captured, warnings kept out), bounded by SIGALRM. An
    exception escaping ``main`` is re-raised with the argv; a run past ``timeout`` raises :class:`Hang`."""
    import warnings

    from thinklens.cli.main import main

    def alarm(*_: Any) -> None:
        raise Hang(f"thinklens {' '.join(argv)} ran past {timeout} s")

    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(timeout)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rc = main(argv)
    except SystemExit as e:  # argparse
        rc = int(e.code or 0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    return Outcome(rc, out.getvalue(), err.getvalue())


def contract_violation(o: Outcome) -> str | None:
    """Why an outcome breaks the contract (None when it keeps it): exit 0, or exit 2 with exactly one error line."""
    if "Traceback" in o.err or "Traceback" in o.out:
        return "traceback printed"
    if o.rc == 0:
        return None
    if o.rc != 2:
        return f"exit code {o.rc}"
    errors = [x for x in o.err.splitlines() if ": error: " in x]
    if len(errors) != 1:
        return f"{len(errors)} error lines: {o.err[-500:]!r}"
    if len(errors[0]) > 2000:
        return f"error line of {len(errors[0])} characters (a huge value echoed?)"
    return None

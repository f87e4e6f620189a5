"""Checks for data where it enters thinklens: records, ``.npz`` arrays and JSON state files.

Why one module: a file written by hand, by another tool or by a crashed run reaches the model through many readers,
and each must refuse the same things in the same words (a token id outside the vocabulary, a span out of order, a
mask that is not 0/1, a NaN where a number is needed, an array of the wrong shape) *before* torch or numpy turn them
into a raw ``IndexError`` far from the file. Every check raises :class:`thinklens.errors.ThinklensError` with one
line that names what is wrong; the caller prefixes where (file, line, record id) and decides whether to skip the
record (a batch) or stop (a single input)::

    >>> from thinklens.validate import check_ids
    >>> try:
    ...     check_ids([1, 2, 10_000_000], "clean_ids", vocab=1000)
    ... except ThinklensError as err:
    ...     print(err)
    clean_ids[2] = 10000000 is outside the vocabulary (0..999)
"""
from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from thinklens.errors import ThinklensError


def _is_int(v: Any) -> bool:
    import numpy as np

    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def check_int(v: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    """``v`` as an int in ``[lo, hi)`` (either bound optional).

    >>> check_int(3, "k", 0, 5)
    3
    """
    if not _is_int(v):
        raise ThinklensError(f"{name} must be an integer, got {_show(v)}")
    if (lo is not None and v < lo) or (hi is not None and v >= hi):
        lo_, hi_ = "" if lo is None else lo, "" if hi is None else hi - 1
        raise ThinklensError(f"{name} = {v} is outside {lo_}..{hi_}")
    return int(v)


def check_finite(v: Any, name: str) -> float:
    """``v`` as a finite float (not a bool, a string, NaN or inf).

    >>> check_finite(0.5, "x")
    0.5
    """
    import numpy as np

    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise ThinklensError(f"{name} must be a number, got {_show(v)}")
    if not math.isfinite(float(v)):
        raise ThinklensError(f"{name} must be a finite number, got {v}")
    return float(v)


def check_str(v: Any, name: str, *, empty: bool = False) -> str:
    """``v`` as a string (non-empty unless ``empty``)."""
    if not isinstance(v, str):
        raise ThinklensError(f"{name} must be a string, got {_show(v)}")
    if not empty and not v:
        raise ThinklensError(f"{name} is empty")
    return v


def check_ids(values: Any, name: str, *, vocab: int | None = None) -> list[int]:
    """A list of token ids, each in ``0..vocab-1`` (only ``>= 0`` when ``vocab`` is None)."""
    if not isinstance(values, (list, tuple)):
        raise ThinklensError(f"{name} must be a list of token ids, got {_show(values)}")
    for i, t in enumerate(values):
        if not _is_int(t):
            raise ThinklensError(f"{name}[{i}] must be a token id (an integer), got {_show(t)}")
        if t < 0 or (vocab is not None and t >= vocab):
            bound = f"0..{vocab - 1}" if vocab is not None else ">= 0"
            raise ThinklensError(f"{name}[{i}] = {t} is outside the vocabulary ({bound})")
    return [int(t) for t in values]


def check_mask(values: Any, name: str, n: int) -> list[int]:
    """An attention mask: ``n`` values, each 0 or 1.

    >>> check_mask([1, 0, 1], "mask", 3)
    [1, 0, 1]
    """
    if not isinstance(values, (list, tuple)):
        raise ThinklensError(f"{name} must be a list of 0/1, got {_show(values)}")
    if len(values) != n:
        raise ThinklensError(f"{name} has {len(values)} values for {n} tokens")
    for i, m in enumerate(values):
        if m not in (0, 1) or isinstance(m, float) and not m.is_integer() or isinstance(m, str):
            raise ThinklensError(f"{name}[{i}] must be 0 or 1, got {_show(m)}")
    return [int(m) for m in values]


def check_span(span: Any, name: str, n: int) -> list[int]:
    """A half-open token span ``[start, end)`` with ``0 <= start <= end <= n``.

    >>> check_span([2, 5], "probe", 10)
    [2, 5]
    """
    if not isinstance(span, (list, tuple)) or len(span) != 2 or not all(_is_int(x) for x in span):
        raise ThinklensError(f"span {name} must be [start, end] integers, got {_show(span)}")
    a, b = int(span[0]), int(span[1])
    if not 0 <= a <= b <= n:
        raise ThinklensError(f"span {name} = [{a}, {b}] is not an ordered span inside the {n} tokens")
    return [a, b]


def check_fields(record: Mapping[str, Any], required: Sequence[str], what: str) -> None:
    """Every name of ``required`` is a key of ``record`` (one message listing the missing ones)."""
    if not isinstance(record, Mapping):
        raise ThinklensError(f"{what} must be a JSON object, got {_show(record)}")
    missing = [k for k in required if k not in record]
    if missing:
        raise ThinklensError(f"{what}: missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")


def _show(v: Any) -> str:
    """A value in an error message: its type and a short repr (a huge string is cut)."""
    text = repr(v)
    return f"{type(v).__name__} {text[:40] + '...' if len(text) > 43 else text}"


# ------------------------------------------------------------------------------------------------------ files
def load_npz(path: str | Path, contract: Mapping[str, tuple[int, str]]) -> dict[str, Any]:
    """The arrays of an ``.npz`` file checked against ``contract``: name -> (ndim, kinds), kinds being numpy dtype
    kind letters (``"f"`` float, ``"iu"`` integer, ``"U"`` string, ``"b"`` bool). Extra arrays are kept unchecked.
    A file that is not an npz archive, lacks an array or holds one of another shape or dtype is a one-line
    ThinklensError naming the file and the array; object arrays (pickles) are never loaded.

    >>> import tempfile, numpy as np
    >>> f = tempfile.mktemp(suffix=".npz")
    >>> np.savez(f, a2r=np.zeros((2, 3, 4)))
    >>> try:
    ...     load_npz(f, {"a2r": (3, "f"), "ids": (1, "U")})
    ... except ThinklensError as err:
    ...     print(str(err).split(": ", 1)[1])
    missing array 'ids'
    """
    import numpy as np

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except FileNotFoundError:
        raise ThinklensError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, zipfile.LargeZipFile) as err:
        raise ThinklensError(f"{path}: not a readable .npz archive ({_first(err)}); rerun the stage that writes it"
                             ) from None
    except Exception as err:  # zlib.error, struct.error, ... from a damaged member
        raise ThinklensError(f"{path}: damaged .npz archive ({type(err).__name__}: {_first(err)}); rerun the stage "
                             "that writes it") from None
    for name, (ndim, kinds) in contract.items():
        if name not in arrays:
            raise ThinklensError(f"{path}: missing array {name!r}")
        a = arrays[name]
        if a.ndim != ndim or a.dtype.kind not in kinds:
            raise ThinklensError(f"{path}: array {name!r} is {a.dtype} of shape {a.shape}, expected {ndim} dimension"
                                 f"{'s' if ndim != 1 else ''} of kind {'/'.join(_KINDS.get(k, k) for k in kinds)}")
    return arrays


_KINDS = {"f": "float", "i": "int", "u": "uint", "U": "str", "b": "bool"}


def read_json_object(path: str | Path, what: str) -> dict[str, Any] | None:
    """A JSON file holding an object (None when absent); anything else is a one-line ThinklensError."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ThinklensError(f"{path}: not UTF-8 text ({what})") from None
    except json.JSONDecodeError as err:
        raise ThinklensError(f"{path}: invalid JSON at line {err.lineno}: {err.msg} ({what})") from None
    except RecursionError:
        raise ThinklensError(f"{path}: JSON nested too deeply ({what})") from None
    if not isinstance(obj, dict):
        raise ThinklensError(f"{path}: expected a JSON object ({what}), got {type(obj).__name__}")
    return obj


def _first(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]

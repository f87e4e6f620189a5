"""Progress bars for long work, created in one place.

Why: every long stage shows a bar (to stderr), and ``thinklens run`` labels each bar with its stage (``[4/6]
attention  attention: 12/100``) so the display always says what runs and how much is left. The label travels in a
context variable, so the stages stay standalone commands that know nothing of the pipeline.
"""
from __future__ import annotations

import contextlib
import contextvars
import sys
from collections.abc import Iterable, Iterator
from typing import Any

_PREFIX: contextvars.ContextVar[str] = contextvars.ContextVar("thinklens_progress_prefix", default="")
_QUIET = False


def set_quiet(quiet: bool = True) -> None:
    """Silence every progress bar: ours, and the weight-loading bars of transformers and huggingface_hub."""
    global _QUIET
    _QUIET = quiet
    try:
        from transformers.utils import logging as hf_logging

        (hf_logging.disable_progress_bar if quiet else hf_logging.enable_progress_bar)()
    except ImportError:  # pragma: no cover
        pass


def bar(iterable: Iterable[Any] | None = None, *, desc: str = "", total: int | None = None, unit: str = "it",
        disable: bool = False, **kwargs: Any) -> Any:
    """A tqdm bar on stderr whose description carries the current :func:`prefixed` label."""
    from tqdm import tqdm

    prefix = _PREFIX.get()
    label = f"{prefix}  {desc}".rstrip() if prefix else desc
    return tqdm(iterable, desc=label, total=total, unit=unit, disable=disable or _QUIET, file=sys.stderr, **kwargs)


@contextlib.contextmanager
def prefixed(label: str) -> Iterator[None]:
    """Prefix every bar opened inside the block with ``label``."""
    token = _PREFIX.set(label)
    try:
        yield
    finally:
        _PREFIX.reset(token)

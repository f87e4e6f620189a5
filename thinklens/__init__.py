"""thinklens: how a reasoning model uses its own reasoning to reach its answer.

The public API is flat and lazily imported (``import thinklens`` stays fast and does not import torch)::

    import thinklens as tl
    model, tokenizer, profile = tl.load_model("tiny-r1")
    trace = tl.Trace.from_text(text, tokenizer, profile)
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from thinklens.errors import ModelLoadError, ThinklensError, TraceError

__version__ = "0.1.0"

# public name -> module that defines it
_API: dict[str, str] = {
    "Profile": "thinklens.profiles",
    "get_profile": "thinklens.profiles",
    "Trace": "thinklens.traces",
    "Span": "thinklens.traces",
    "read_jsonl": "thinklens.jsonl",
    "JsonlWriter": "thinklens.jsonl",
    "done_ids": "thinklens.jsonl",
    "load_model": "thinklens.models",
    "inspect_traces": "thinklens.traces",
}

__all__ = ["__version__", "ThinklensError", "TraceError", "ModelLoadError", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'thinklens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover
    from thinklens.jsonl import JsonlWriter, done_ids, read_jsonl  # noqa: F401
    from thinklens.models import load_model  # noqa: F401
    from thinklens.profiles import Profile, get_profile  # noqa: F401
    from thinklens.traces import Span, Trace, inspect_traces  # noqa: F401

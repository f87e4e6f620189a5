"""One place that knows how a transformers model takes and returns its KV cache.

Why: transformers 5.24 renamed the forward argument and output field ``past_key_values`` to ``cache``; the old
name still works but warns on every cached forward and is removed in 5.40. Older transformers (and remote-code
models) only know ``past_key_values``. Every cached forward in thinklens goes through :func:`cache_kw` and
:func:`cache_of`, which pick the name the model's own ``forward`` signature declares, so one package works on both
sides of the rename without a warning.
"""
from __future__ import annotations

import inspect
from typing import Any

NEW, OLD = "cache", "past_key_values"


def cache_arg(model: Any) -> str:
    """The keyword the model's forward takes its KV cache as: ``"cache"`` (transformers >= 5.24) or
    ``"past_key_values"`` (older versions, remote-code models).

    >>> class Old:
    ...     def forward(self, input_ids=None, past_key_values=None): ...
    >>> cache_arg(Old())
    'past_key_values'
    """
    forward = getattr(model, "forward", model)
    try:
        params = inspect.signature(forward).parameters
    except (TypeError, ValueError):  # builtins, odd wrappers: assume the current name
        return NEW
    return NEW if NEW in params else OLD


def cache_kw(model: Any, cache: Any) -> dict[str, Any]:
    """``{name: cache}`` to splat into a forward call: ``model(input_ids=x, **cache_kw(model, c), use_cache=True)``.

    >>> class New:
    ...     def forward(self, input_ids=None, cache=None): ...
    >>> cache_kw(New(), None)
    {'cache': None}
    """
    return {cache_arg(model): cache}


def cache_of(output: Any) -> Any:
    """The KV cache a forward returned (``output.cache`` on transformers >= 5.24, else ``output.past_key_values``),
    read without touching the deprecated alias.

    >>> from types import SimpleNamespace
    >>> cache_of(SimpleNamespace(past_key_values="kv"))
    'kv'
    """
    fields = getattr(type(output), "__dataclass_fields__", None)
    if fields is not None:
        return getattr(output, NEW if NEW in fields else OLD)
    return getattr(output, NEW) if hasattr(output, NEW) else getattr(output, OLD)

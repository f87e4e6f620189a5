"""Options as data: every setting of every stage is one field of a config dataclass, with its default and help text.

Why: a setting written in one place cannot drift. The CLI derives its flags from these fields
(:mod:`thinklens.cli.flags`), ``thinklens run`` composes the stage configs instead of copying their fields, and the
report derives the "reproduce" commands from the same objects. :func:`opt` is ``dataclasses.field`` plus the help
text and CLI details; the config classes validate themselves in ``__post_init__``.

>>> from dataclasses import dataclass
>>> @dataclass
... class Knobs:
...     top_k: int = opt(10, "Reasoning-Focus Heads to report")
>>> cli_fields(Knobs)[0].metadata["help"]
'Reasoning-Focus Heads to report'
"""
from __future__ import annotations

import dataclasses
import shlex
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any


def opt(default: Any = dataclasses.MISSING, help: str = "", *, flag: str | None = None,
        choices: Sequence[Any] | None = None, metavar: str | None = None, cli: bool = True,
        factory: Callable[[], Any] | None = None, short: str | None = None, positional: bool = False) -> Any:
    """A dataclass field with what the CLI needs: ``help``, the ``flag`` (default ``--field-name``), ``choices``,
    ``metavar``, ``short`` (e.g. ``-o``), ``positional`` (an argument without a flag); ``cli=False`` keeps a field
    out of the command line. A field whose value is itself a config dataclass (``factory``) contributes that class's
    flags."""
    md = {"help": help, "flag": flag, "choices": tuple(choices) if choices is not None else None,
          "metavar": metavar, "cli": cli, "short": short, "positional": positional}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=md)
    return dataclasses.field(default=default, metadata=md)


def cli_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a config dataclass that appear on the command line, in declaration order."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("cli", True) and f.init]


def hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a config dataclass."""
    return typing.get_type_hints(cls)


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """(inner type, is optional) of ``X | None``."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def is_config(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def flag_name(f: dataclasses.Field) -> str:
    """``--max-new-tokens`` for field ``max_new_tokens`` (or the field's explicit ``flag``)."""
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def replace_checked(obj: Any, **changes: Any) -> Any:
    """``dataclasses.replace`` that names unknown fields in a one-line error instead of a TypeError."""
    from thinklens.errors import ThinklensError

    known = {f.name for f in dataclasses.fields(obj)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ThinklensError(f"{type(obj).__name__}: unknown field(s) {unknown}")
    return dataclasses.replace(obj, **changes)


def to_argv(obj: Any, *, skip: tuple[str, ...] = (), always: tuple[str, ...] = ()) -> list[str]:
    """The flags that rebuild ``obj`` from its class's defaults (required and ``always`` fields always written)."""
    out: list[str] = []
    types_ = hints(type(obj))
    # a nested config's field named like one of ours is the same setting: written once, as ours
    own = tuple(f.name for f in cli_fields(type(obj)) if not is_config(unwrap_optional(types_[f.name])[0]))
    for f in cli_fields(type(obj)):
        if f.name in skip:
            continue
        value = getattr(obj, f.name)
        tp, _ = unwrap_optional(types_[f.name])
        if is_config(tp):
            out += to_argv(value, skip=skip + own, always=always)
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        if value == default and f.name not in always:
            continue
        if f.metadata.get("positional"):
            out += [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
            continue
        name = flag_name(f)
        if tp is bool:
            if value is None:
                continue
            out.append(name if value else "--no-" + name[2:])
        elif value is None:
            continue
        else:
            out += [name, ",".join(map(str, value)) if isinstance(value, (tuple, list)) else str(value)]
    return out


def command(*argv: str) -> str:
    """A ``thinklens`` command line, quoted for a POSIX shell.

    >>> command("grade", "runs/my run/traces.jsonl", "--output", "g.jsonl")
    "thinklens grade 'runs/my run/traces.jsonl' --output g.jsonl"
    """
    return shlex.join(["thinklens", *map(str, argv)])

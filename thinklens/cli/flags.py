"""Command-line flags derived from the config dataclasses, so that each option is written once.

A config field declared with :func:`thinklens.options.opt` becomes one flag: its name (``--max-new-tokens``), type
(from the annotation: ``int``, ``float``, ``str``, ``bool``, optional ones, ``tuple[str, ...]`` as a comma list),
default and help all come from the field. Fields whose value is another config dataclass contribute that class's
flags (flattened: ``thinklens run`` takes ``--max-new-tokens`` like ``thinklens collect``). Groups shared by several
commands (the model flags) are built once as argparse *parents*. :func:`build` turns the parsed namespace back into
the config object (:func:`thinklens.options.to_argv` goes the other way, for the report's "reproduce" commands)::

    parser = argparse.ArgumentParser(parents=[parent(ModelOptions)])
    add_config(parser, GenerationSettings)
    ns = parser.parse_args(["--model", "tiny-r1", "--max-new-tokens", "64"])
    settings = build(GenerationSettings, ns)
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import typing
from typing import Any

from thinklens.options import cli_fields, flag_name, hints, is_config, unwrap_optional


def _comma_tuple(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in str(text).split(",") if s.strip())


def _fmt_default(value: Any) -> str:
    if isinstance(value, (tuple, list)):
        return ",".join(map(str, value))
    return str(value)


def add_config(parser: Any, cls: type, *, skip: tuple[str, ...] = (), required: tuple[str, ...] = (),
               nested: bool = True) -> None:
    """Add one flag per CLI field of ``cls`` to a parser or argument group; nested config fields contribute their
    own flags (``nested=False``: they come from :func:`parent` parsers given to the subparser instead)."""
    types_ = hints(cls)
    own = tuple(f.name for f in cli_fields(cls) if not is_config(unwrap_optional(types_[f.name])[0]))
    for f in cli_fields(cls):
        if f.name in skip:
            continue
        tp, optional = unwrap_optional(types_[f.name])
        if is_config(tp):  # a nested config's field named like one of ours is the same setting (e.g. seed)
            if nested:
                add_config(parser, tp, skip=skip + own, required=required)
            continue
        md = f.metadata
        has_default = f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        helptext = md.get("help", "")
        if md.get("positional"):
            nargs = "+" if typing.get_origin(tp) in (list, tuple) else None
            parser.add_argument(f.name, nargs=nargs, help=helptext, metavar=md.get("metavar"))
            continue
        names = [flag_name(f)] + ([md["short"]] if md.get("short") else [])
        kw: dict[str, Any] = {"dest": f.name, "help": helptext, "default": default}
        if tp is bool:
            if default is True or optional:
                kw["action"] = argparse.BooleanOptionalAction
            else:
                kw["action"] = "store_true"
        else:
            if typing.get_origin(tp) in (tuple, list):
                kw["type"] = _comma_tuple
                kw["metavar"] = md.get("metavar") or "A,B,..."
            else:
                kw["type"] = tp if tp in (int, float, str) else str
                if md.get("metavar"):
                    kw["metavar"] = md["metavar"]
            if md.get("choices"):
                kw["choices"] = md["choices"]
            if f.name in required or not has_default:
                kw["required"] = True
                kw.pop("default")
            elif helptext and default not in (None, (), "") and "default" not in helptext:
                kw["help"] = f"{helptext} (default: {_fmt_default(default)})"
        parser.add_argument(*names, **kw)


@functools.cache
def parent(cls: type, skip: tuple[str, ...] = (), required: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    """A parent parser holding the flags of ``cls`` in their own help group (shared by several subcommands)."""
    p = argparse.ArgumentParser(add_help=False)
    title = (cls.__doc__ or cls.__name__).strip().splitlines()[0].rstrip(".").replace("``", "")
    add_config(p.add_argument_group(title), cls, skip=skip, required=required)
    return p


def build(cls: type, ns: argparse.Namespace, **fixed: Any) -> Any:
    """The config object of ``cls`` from a parsed namespace (nested configs built recursively); ``fixed`` values
    win over the namespace (for fields a command sets itself, e.g. ``reasoning`` per run)."""
    types_ = hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in fixed:
            values[f.name] = fixed[f.name]
            continue
        tp, _ = unwrap_optional(types_[f.name])
        if is_config(tp) and f.metadata.get("cli", True):
            values[f.name] = build(tp, ns)
        elif hasattr(ns, f.name):
            values[f.name] = getattr(ns, f.name)
    return cls(**values)

"""Entry point of the ``thinklens`` command: discovers subcommand modules in :mod:`thinklens.cli`."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import thinklens
import thinklens.cli as cli_pkg

_SKIP = {"main", "common"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thinklens",
        description="How a reasoning model uses its own reasoning to reach its answer "
        "(with/without-reasoning evaluation, Reasoning-Focus Heads, activation patching).",
    )
    parser.add_argument("--version", action="version", version=f"thinklens {thinklens.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(cli_pkg.__path__), key=lambda m: m.name):
        if info.name in _SKIP or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"thinklens.cli.{info.name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except thinklens.ThinklensError as err:  # user-facing errors: one clear line, no traceback
        print(f"thinklens {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

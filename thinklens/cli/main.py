"""Entry point of the ``thinklens`` command: discovers subcommand modules in :mod:`thinklens.cli`.

Errors a user can act on print as one line, ``thinklens COMMAND: error: WHAT (WHERE); WHAT TO DO``, and exit 2 (no
traceback unless ``--debug``): bad input (:class:`thinklens.errors.ThinklensError`) and the operating system's
refusals (a path that cannot be written, a full disk, a missing file), each with the path it concerns.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import pkgutil
import sys

import thinklens
import thinklens.cli as cli_pkg

_SKIP = {"main", "common", "flags"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="thinklens",
        description="How a reasoning model uses its own reasoning to reach its answer "
        "(with/without-reasoning evaluation, Reasoning-Focus Heads, activation patching, step attribution).",
    )
    parser.add_argument("--version", action="version", version=f"thinklens {thinklens.__version__}")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(cli_pkg.__path__), key=lambda m: m.name):
        if info.name in _SKIP or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"thinklens.cli.{info.name}")
        module.register(sub)
    return parser


def os_error_message(err: OSError) -> str:
    """One line for an operating-system error: what failed, on which path, and what to do."""
    path = err.filename or ""
    where = f" {path}" if path else ""
    if err.errno == errno.ENOSPC:
        return (f"no space left on the device while writing{where}: free some space and rerun the same command "
                "(it resumes where it stopped)")
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write{where}: {err.strerror}; choose an --output in a writable directory"
    if err.errno == errno.ENOENT:
        return f"no such file or directory:{where or ' (unnamed)'}; check the path"
    if err.errno in (errno.ENOTDIR, errno.EISDIR):
        return f"{err.strerror}:{where}; check the path"
    return f"{err.strerror or err}{(':' + where) if where else ''}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    from thinklens.progress import set_quiet

    set_quiet(bool(getattr(args, "quiet", False)))
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except (thinklens.ThinklensError, OSError) as err:  # user-facing: one clear line, no traceback
        if args.debug:
            raise
        msg = os_error_message(err) if isinstance(err, OSError) and not isinstance(err, thinklens.ThinklensError) \
            else str(err)
        print(f"thinklens {args.command}: error: {msg}", file=sys.stderr)
        return 2
    finally:
        set_quiet(False)


if __name__ == "__main__":
    sys.exit(main())

"""Helpers shared by subcommand modules: JSON output and the ``--quiet`` flag."""
from __future__ import annotations

import json
import sys
from typing import Any


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def add_quiet(parser: Any) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress display (warnings are still printed)")

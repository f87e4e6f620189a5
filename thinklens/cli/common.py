"""Helpers shared by subcommand modules (argument-to-dataclass conversion, JSON printing)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Any, TypeVar

T = TypeVar("T")


def to_dataclass(cls: type[T], args: argparse.Namespace) -> T:
    """Build the subcommand's argument dataclass from the parsed namespace (extra attributes are ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    return cls(**{k: v for k, v in vars(args).items() if k in names})


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()

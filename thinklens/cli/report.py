"""``thinklens report DIR``: rebuild ``report.html`` (and its figures) from a run directory's saved files."""
from __future__ import annotations

import argparse

from thinklens.cli.common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="rebuild report.html from a run directory (no model needed)",
        description="Render the figures and the self-contained report.html of a `thinklens run` directory from its "
        "saved files (evaluation, attention, heads, patching, ...). No model is loaded.",
    )
    p.add_argument("directory", help="run directory written by `thinklens run`")
    p.add_argument("--out", help="where to write the HTML (default: DIRECTORY/report.html)")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from thinklens.pipeline import build_report

    print_json({"report": str(build_report(ns.directory, ns.out))})
    return 0

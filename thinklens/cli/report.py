"""``thinklens report DIR``: rebuild ``report.html`` (and its figures) from a run directory's saved files."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from thinklens.cli.common import print_json, to_dataclass


@dataclass
class ReportArgs:
    directory: str
    out: str | None = None
    animations: bool = False


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="rebuild report.html from a run directory (no model needed)",
        description="Render the figures and the self-contained report.html of a `thinklens run` directory from its "
        "saved files (results.json, evaluation.json, attention/, heads.json, patching/). No model is loaded.",
    )
    p.add_argument("directory", help="run directory written by `thinklens run`")
    p.add_argument("--out", help="where to write the HTML (default: DIRECTORY/report.html)")
    p.add_argument("--animations", action="store_true",
                   help="also write the layer-by-layer view as DIRECTORY/animations/layers.gif (and .mp4 when ffmpeg "
                   "is on PATH), one frame per layer, for slides")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from thinklens.report.html import build_report

    args = to_dataclass(ReportArgs, ns)
    out = {"report": str(build_report(args.directory, args.out))}
    if args.animations:
        from thinklens.report.animation import layer_animation

        out["animations"] = layer_animation(args.directory)
    print_json(out)
    return 0

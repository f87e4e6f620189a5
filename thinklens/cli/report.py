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
    p.add_argument("--animations", action="store_true",
                   help="also write the layer-by-layer view as DIRECTORY/animations/layers.gif (and .mp4 when ffmpeg "
                   "is on PATH), one frame per layer, for slides")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from thinklens.pipeline import build_report

    out = {"report": str(build_report(ns.directory, ns.out))}
    if ns.animations:
        from thinklens.report.animation import layer_animation

        out["animations"] = layer_animation(ns.directory)
    print_json(out)
    return 0

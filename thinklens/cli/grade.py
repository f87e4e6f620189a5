"""``thinklens grade``: extract each answer and judge it (math-verify + the MATH strict normalizer)."""
from __future__ import annotations

import argparse
import sys

from thinklens.cli.common import add_quiet, print_json


def register(sub: argparse._SubParsersAction) -> None:
    from thinklens.cli.flags import add_config
    from thinklens.empirical.grading import GradeSettings

    p = sub.add_parser(
        "grade", help="grade answers of a trace file (math-verify + strict MATH normalizer)",
        description="Add extracted_answer (last \\boxed{} after the </think> that ends the reasoning; fallbacks "
        "recorded in extraction_method), is_correct (math-verify) and is_correct_strict (MATH is_equiv). Records "
        "without an answer (unfinished reasoning, missing fields) are written with an 'error'. Resumable.",
    )
    p.add_argument("file", help="trace JSONL (from thinklens collect, or any file with a response and a gold answer)")
    p.add_argument("--output", required=True, help="graded JSONL (appended to; graded records are skipped)")
    add_config(p, GradeSettings)
    add_quiet(p)
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from thinklens.cli.flags import build
    from thinklens.empirical.grading import GradeSettings, grade_file

    summary = grade_file(ns.file, ns.output, build(GradeSettings, ns), progress=not ns.quiet)
    for line in summary.bad_lines or []:
        print(line, file=sys.stderr)
    print_json(summary.to_dict())
    return 0

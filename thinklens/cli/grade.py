"""``thinklens grade``: extract each answer and judge it (math-verify + the MATH strict normalizer)."""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from thinklens.cli.common import print_json, to_dataclass


@dataclass
class GradeArgs:
    file: str
    output: str
    response_field: str | None = None
    gold_field: str = "gold_answer"
    timeout: int = 5
    quiet: bool = False


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "grade", help="grade answers of a trace file (math-verify + strict MATH normalizer)",
        description="Add extracted_answer (last \\boxed{} after the </think> that ends the reasoning; fallbacks "
        "recorded in extraction_method), is_correct (math-verify) and is_correct_strict (MATH is_equiv). Records "
        "without an answer (unfinished reasoning, missing fields) are written with an 'error'. Resumable.",
    )
    p.add_argument("file", help="trace JSONL (from thinklens collect, or any file with a response and a gold answer)")
    p.add_argument("--output", required=True, help="graded JSONL (appended to; graded records are skipped)")
    p.add_argument("--response-field", help="field with the model output (default: completion, else text, else "
                   "response); a full text including the prompt is fine: only text after </think> counts")
    p.add_argument("--gold-field", default="gold_answer", help="field with the reference answer")
    p.add_argument("--timeout", type=int, default=5, help="math-verify timeout per comparison, in seconds")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from thinklens.empirical.grading import GradeSettings, grade_file

    args = to_dataclass(GradeArgs, ns)
    settings = GradeSettings(response_field=args.response_field, gold_field=args.gold_field, timeout=args.timeout)
    summary = grade_file(args.file, args.output, settings, progress=not args.quiet)
    for line in summary.bad_lines or []:
        print(f"skipped {line}", file=sys.stderr)
    print_json(summary.to_dict())
    return 0

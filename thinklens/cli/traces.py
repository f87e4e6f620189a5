"""``thinklens traces inspect``: segment every record of a trace file and print its spans as JSON lines."""
from __future__ import annotations

import argparse

from thinklens.cli.common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("traces", help="work with trace files (JSONL)", description="Work with trace files (JSONL).")
    tsub = p.add_subparsers(dest="traces_command", metavar="ACTION", required=True)
    q = tsub.add_parser(
        "inspect",
        help="segment each record and print its spans",
        description="Print one JSON object per record: id, n_tokens, think_start, think_end, n_reasoning_tokens, "
        "n_answer_tokens, n_think_close (or error with the reason). Token positions follow "
        "tokenizer(text, add_special_tokens=False).",
    )
    q.add_argument("file", help="trace JSONL file")
    q.add_argument("--tokenizer", required=True, help="hub id, local directory or tiny-r1")
    q.add_argument("--text-field", help="field holding the full sequence (default: text, else prompt+completion)")
    q.add_argument("--profile", help="model-family profile name (default: chosen from the tokenizer's name)")
    q.add_argument("--strict", action="store_true", help="exit non-zero at the first bad record, naming its line")
    q.set_defaults(func=run_inspect)
    r = tsub.add_parser(
        "reference", help="write a dataset's teacher-forced reference traces (with self-corrections)",
        description="The reference traces a dataset ships (tiny-r1's arithmetic: teacher-forced traces, a share of "
        "which slip and correct themselves with 'Wait,'), as a trace file: what `thinklens run` reads cue "
        "statistics on when the model itself never writes a cue.")
    r.add_argument("--dataset", required=True, help="a dataset with reference traces (arithmetic)")
    r.add_argument("--n", type=int, required=True, help="number of traces")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--output", required=True, help="trace JSONL to write (resumable: existing ids are kept)")
    r.set_defaults(func=run_reference)


def run_inspect(ns: argparse.Namespace) -> int:
    import sys

    from thinklens.errors import ThinklensError
    from thinklens.models import load_tokenizer
    from thinklens.profiles import get_profile
    from thinklens.traces import inspect_traces

    args = ns
    tokenizer = load_tokenizer(args.tokenizer)
    profile = get_profile(args.profile or str(tokenizer.name_or_path))
    try:
        rows = inspect_traces(args.file, tokenizer, profile, args.text_field)
        for row in rows:
            print_json(row)
            if args.strict and "error" in row:
                print(f"{args.file}:{row['line']}: {row['error']}", file=sys.stderr)
                return 1
    except FileNotFoundError:
        raise ThinklensError(f"no such trace file: {args.file}") from None
    return 0


def run_reference(ns: argparse.Namespace) -> int:
    from thinklens.empirical.datasets import dataset_spec
    from thinklens.errors import ThinklensError
    from thinklens.jsonl import ResumableOutput

    spec = dataset_spec(ns.dataset)
    if spec.reference_traces is None:
        raise ThinklensError(f"dataset {ns.dataset!r} ships no reference traces")
    with ResumableOutput(ns.output) as out:
        for rec in out.pending_items(spec.reference_traces(ns.n, ns.seed), key=lambda r: str(r["id"])):
            out.write(rec)
    print_json({"output": ns.output, "n_written": out.n_written, "n_done_before": out.report.n_done_before})
    return 0

"""``thinklens pairs prepare|build|toy``: contrastive pairs for activation patching (see thinklens.patching.pairs)."""
from __future__ import annotations

import argparse
import sys

from thinklens.cli.common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pairs", help="build contrastive pairs for activation patching",
                       description="Build clean/corrupted pairs for activation patching (Zhang et al. 2025).")
    psub = p.add_subparsers(dest="pairs_command", metavar="ACTION", required=True)
    q = psub.add_parser("prepare", help="write the queries of a contrastive pair CSV as problems to collect",
                        description="Write one problem per CSV query (ids {case_id}-a / {case_id}-b) for "
                        "`thinklens collect --dataset-file`.")
    q.add_argument("--csv", required=True, help="pair CSV (query_a, answer_a, query_b, answer_b, case_id, ...)")
    q.add_argument("--output", required=True, help="queries JSONL to write")
    q.set_defaults(func=run_prepare)
    b = psub.add_parser("build", help="build pairs from collected responses to the CSV queries",
                        description="Cut each response's reasoning before its final answer and add the probe; keep "
                        "the model's answer text up to its final boxed line (as the paper does; --answer drop leaves "
                        "it out) and add the answer ending; pad and align. Rejected pairs go to a rejects file with "
                        "the reason.")
    b.add_argument("--model", required=True, help="model id/directory (its tokenizer and profile are used)")
    b.add_argument("--csv", required=True, help="the pair CSV the queries came from")
    b.add_argument("--responses", required=True, help="collected trace JSONL (ids {case_id}-a / -b)")
    b.add_argument("--output", required=True, help="pair JSONL to write")
    b.add_argument("--rejects", help="rejects JSONL (default: OUTPUT.rejects.jsonl)")
    b.add_argument("--probe", type=int, default=0, choices=[0, 1],
                   help="probe phrase: 0 = 'Final answer is X.', 1 = 'Final answer is \\boxed{X}.'")
    b.add_argument("--swap", action="store_true", help="clean = side b, corrupted = side a")
    b.add_argument("--answer", default="keep", choices=["keep", "drop"],
                   help="keep: the model's answer text up to its final boxed line stays before the answer ending "
                   "(the paper's construction); drop: the ending follows </think> directly (shorter, isolates the "
                   "reasoning route) (default: %(default)s)")
    b.add_argument("--profile", help="model-family profile name (default: from the model id)")
    b.set_defaults(func=run_build)
    t = psub.add_parser("toy", help="tiny-r1 contrastive arithmetic pairs",
                        description="Pairs from thinklens.toy.tasks.contrastive_pairs, tokenized for tiny-r1.")
    t.add_argument("--n", type=int, default=20, help="number of pairs")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--split", default="test", choices=["train", "test"])
    t.add_argument("--answer", default="drop", choices=["drop", "restate"],
                   help="drop: </think> + the answer ending (what the paper's keep builds from tiny-r1's one-line "
                   "answers); restate: tiny-r1's own answer line 'The answer is \\boxed{N}.' stays before the ending "
                   "(default: %(default)s)")
    t.add_argument("--output", required=True, help="pair JSONL to write")
    t.set_defaults(func=run_toy)


def run_prepare(ns: argparse.Namespace) -> int:
    from thinklens.jsonl import JsonlWriter
    from thinklens.patching.pairs import prepare_queries, read_pair_csv

    args = ns
    bad: list[str] = []
    queries = prepare_queries(read_pair_csv(args.csv, bad))
    for msg in bad:
        print(f"skipped {msg}", file=sys.stderr)
    with JsonlWriter(args.output, overwrite=True) as w:
        w.write_all(queries)
    print_json({"queries": len(queries), "bad_csv_rows": len(bad), "output": args.output})
    return 0


def run_build(ns: argparse.Namespace) -> int:
    from thinklens.models import load_tokenizer
    from thinklens.patching.pairs import PROBES, build_csv_pairs, read_pair_csv, read_responses, save_pairs
    from thinklens.profiles import get_profile

    args = ns
    tokenizer = load_tokenizer(args.model)
    profile = get_profile(args.profile or args.model)
    bad_rows: list[str] = []
    rows = read_pair_csv(args.csv, bad_rows)
    for msg in bad_rows:
        print(f"skipped {msg}", file=sys.stderr)
    responses, bad = read_responses(args.responses)
    pairs, rejects = build_csv_pairs(rows, responses, tokenizer, profile, PROBES[args.probe], swap=args.swap,
                                     answer=args.answer)
    save_pairs(args.output, pairs, rejects + bad, args.rejects)
    print_json({"pairs": len(pairs), "rejected": len(rejects), "bad_response_lines": len(bad),
                "bad_csv_rows": len(bad_rows),
                "answer": args.answer, "output": args.output})
    return 0


def run_toy(ns: argparse.Namespace) -> int:
    from thinklens.patching.pairs import save_pairs, toy_pairs, toy_tokenizer

    args = ns
    pairs, rejects = toy_pairs(args.n, args.seed, toy_tokenizer(), split=args.split, answer=args.answer)
    save_pairs(args.output, pairs, rejects)
    print_json({"pairs": len(pairs), "rejected": len(rejects), "output": args.output})
    return 0

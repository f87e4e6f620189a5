"""``thinklens attention``: answer→reasoning attention per (layer, head) for every trace of a file."""
from __future__ import annotations

import argparse
import sys

from thinklens.cli.common import add_quiet, print_json


def register(sub: argparse._SubParsersAction) -> None:
    from thinklens.attention.segments import DEFAULT_TOKEN_VIEW
    from thinklens.cli.flags import parent
    from thinklens.models import ModelOptions

    p = sub.add_parser(
        "attention", parents=[parent(ModelOptions, required=("name",))],
        help="answer→reasoning attention per head (Reasoning-Focus Heads scores)",
        description="Score every trace: per (layer, head), the attention mass of answer tokens on BOS, prompt, "
        "<think>, reasoning, </think> and answer (a2bos, a2p, a2bot, a2r, a2eot, a2a) and of reasoning tokens on "
        "reasoning/prompt (r2r, r2p). Memory grows with rows x T, never T^2. Writes DIR/head_scores.npz (+ .json), "
        "DIR/skipped.jsonl and DIR/tokens/ (per-token attention of the first --token-view traces). Resumable: a "
        "rerun skips traces already in DIR/scores_partial.jsonl.")
    p.add_argument("--traces", required=True, help="trace JSONL (from `thinklens collect`)")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--text-field", help="field with the full sequence (default: text, else prompt+completion)")
    p.add_argument("--limit", type=int, help="only the first N lines")
    p.add_argument("--max-tokens", type=int, help="skip traces longer than N tokens")
    p.add_argument("--no-reasoning-queries", action="store_true",
                   help="skip r2r/r2p (reasoning queries cost about one extra attention pass)")
    p.add_argument("--token-view", type=int, default=DEFAULT_TOKEN_VIEW, metavar="N",
                   help="keep per-reasoning-token attention for the first N traces (for `heads tokens`; "
                   "default %(default)s)")
    add_quiet(p)
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    import torch

    from thinklens.attention.segments import score_trace_file
    from thinklens.cli.flags import build
    from thinklens.models import ModelOptions

    model, tokenizer, profile = build(ModelOptions, ns).load()
    with torch.no_grad():
        hs = score_trace_file(model, tokenizer, ns.traces, ns.output, profile=profile, model_name=ns.name,
                              text_field=ns.text_field, limit=ns.limit, max_tokens=ns.max_tokens,
                              reasoning_queries=not ns.no_reasoning_queries, token_view=ns.token_view,
                              progress=not ns.quiet)
    for s in hs.skipped:
        print(f"skipped {s['reason']}", file=sys.stderr)
    print_json({"output": f"{ns.output}/head_scores.npz", "n_traces": hs.n_traces, "n_skipped": len(hs.skipped),
                "n_layers": hs.shape[0], "n_heads": hs.shape[1]})
    return 0

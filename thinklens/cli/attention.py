"""``thinklens attention``: answer→reasoning attention per (layer, head) for every trace of a file."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from thinklens.cli.common import print_json, to_dataclass


@dataclass
class AttentionArgs:
    model: str
    traces: str
    output: str
    text_field: str | None = None
    limit: int | None = None
    max_tokens: int | None = None
    device: str | None = None
    dtype: str | None = None
    no_reasoning_queries: bool = False
    token_view: int = 5


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "attention", help="answer→reasoning attention per head (Reasoning-Focus Heads scores)",
        description="Score every trace: per (layer, head), the attention mass of answer tokens on BOS, prompt, "
        "<think>, reasoning, </think> and answer (a2bos, a2p, a2bot, a2r, a2eot, a2a) and of reasoning tokens on "
        "reasoning/prompt (r2r, r2p). Memory grows with rows x T, never T^2. Writes DIR/head_scores.npz (+ .json), "
        "DIR/skipped.jsonl and DIR/tokens/ (per-token attention of the first --token-view traces). Resumable: a "
        "rerun skips traces already in DIR/scores_partial.jsonl.")
    p.add_argument("--model", required=True, help="hub id, local directory or tiny-r1")
    p.add_argument("--traces", required=True, help="trace JSONL (from `thinklens collect`)")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--text-field", help="field with the full sequence (default: text, else prompt+completion)")
    p.add_argument("--limit", type=int, help="only the first N lines")
    p.add_argument("--max-tokens", type=int, help="skip traces longer than N tokens")
    p.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    p.add_argument("--dtype", help="fp32, bf16, fp16 (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--no-reasoning-queries", action="store_true",
                   help="skip r2r/r2p (reasoning queries cost about one extra attention pass)")
    p.add_argument("--token-view", type=int, default=5, metavar="N",
                   help="keep per-reasoning-token attention for the first N traces (default 5; for `heads tokens`)")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    import torch

    from thinklens.attention.segments import score_trace_file
    from thinklens.models import load_model

    args = to_dataclass(AttentionArgs, ns)
    model, tokenizer, profile = load_model(args.model, args.device, args.dtype)
    with torch.no_grad():
        hs = score_trace_file(model, tokenizer, args.traces, args.output, profile=profile, model_name=args.model,
                              text_field=args.text_field, limit=args.limit, max_tokens=args.max_tokens,
                              reasoning_queries=not args.no_reasoning_queries, token_view=args.token_view)
    print_json({"output": f"{args.output}/head_scores.npz", "n_traces": hs.n_traces, "n_skipped": len(hs.skipped),
                "n_layers": hs.shape[0], "n_heads": hs.shape[1]})
    return 0

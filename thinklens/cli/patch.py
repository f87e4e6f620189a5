"""``thinklens patch``: per-token (and per-head, attribution) activation patching of a pair file, resumable."""
from __future__ import annotations

import argparse

from thinklens.cli.common import add_quiet, print_json


def register(sub: argparse._SubParsersAction) -> None:
    from thinklens.cli.flags import parent
    from thinklens.models import ModelOptions
    from thinklens.patching.engine import BATCH_SIZE, ENGINES, MAX_PACKED_TOKENS
    from thinklens.patching.sweeps import DEFAULT_HEAD_POSITIONS

    p = sub.add_parser(
        "patch", parents=[parent(ModelOptions, required=("name",))],
        help="activation patching clean -> corrupted, scored by normalized logit difference",
        description="Patch clean activations into the corrupted run at every layer x the chosen positions and score "
        "the final-position normalized logit difference (NLD). Per-pair results are appended to OUTPUT/pairs.jsonl "
        "(a rerun skips finished pair ids); the stacked result is saved as OUTPUT/result.json + result.npz.",
    )
    p.add_argument("--pairs", required=True, help="pair JSONL (from `thinklens pairs build|toy`)")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--positions", default=None,
                   help="position spec: probe (every probe token), last-reasoning:K, answer-tail:K, prompt-head:K, "
                   "named (answer_flip, answer_step, answer_kept, think_close, final; NAME? = only if the pair has "
                   "it), labels (probe+1, a-2) or integers, comma-separated (default: by the pairs' source, "
                   "thinklens.patching.sweeps.default_positions: the paper's grid PAPER_POSITIONS for CSV pairs, "
                   "TOY_POSITIONS for tiny-r1's toy pairs)")
    p.add_argument("--sites", default="resid_pre",
                   help="site kinds, comma-separated: resid_pre, resid_mid, resid_post, attn_out, mlp_out "
                   "(several: one subdirectory each)")
    p.add_argument("--layers", help="layer indices, comma-separated (default: all)")
    p.add_argument("--heads", action="store_true", help="also patch every query head at --head-positions")
    p.add_argument("--head-positions", default=DEFAULT_HEAD_POSITIONS,
                   help="positions for --heads (default: %(default)s)")
    p.add_argument("--attribution", action="store_true",
                   help="also run attribution patching and its Spearman correlation with exact patching")
    p.add_argument("--engine", default=ENGINES[0], choices=ENGINES)
    p.add_argument("--limit", type=int, help="patch only the first N pairs")
    p.add_argument("--max-tokens", type=int, default=MAX_PACKED_TOKENS,
                   help="packed suffix tokens per forward (fast engine; lower it if memory is short)")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE,
                   help="patched runs per batched forward (fast engine without packing support)")
    add_quiet(p)
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    import numpy as np

    from thinklens.cli.flags import build
    from thinklens.errors import ThinklensError
    from thinklens.models import ModelOptions
    from thinklens.patching.pairs import load_pairs
    from thinklens.patching.sweeps import patch_pairs

    args = ns
    errors: list = []
    pairs = load_pairs(args.pairs, errors)
    for e in errors:
        print(f"{args.pairs}:{e['line']}: skipped: {e['error']}", file=sys.stderr)
    if args.limit is not None:
        pairs = pairs[: args.limit]
    if not pairs:
        raise ThinklensError(f"{args.pairs}: no usable pairs")
    try:
        layers = [int(x) for x in args.layers.split(",")] if args.layers else None
    except ValueError:
        raise ThinklensError(f"--layers {args.layers!r}: expected comma-separated integers") from None
    model, _, profile = build(ModelOptions, ns).load()
    sites = [s.strip() for s in args.sites.split(",") if s.strip()]
    summary = {"pairs": len(pairs), "bad_pair_lines": len(errors), "output": args.output, "sites": {}}
    for site in sites:
        out = Path(args.output) / site if len(sites) > 1 else Path(args.output)
        res = patch_pairs(model, profile, pairs, out, positions=args.positions, site=site, layers=layers,
                          heads=args.heads, head_positions=args.head_positions, attribution=args.attribution,
                          engine=args.engine, batch_size=args.batch_size, max_tokens=args.max_tokens,
                          progress=not args.quiet)
        entry = {"output": str(out), "n_patched": len(res.pair_ids)}
        for name in ("answer_flip", "answer_step", "think_close", "answer_kept", "final"):
            col = res.column(name)
            if np.isfinite(col).any():
                entry[f"mean_nld_{name}"] = [None if not np.isfinite(v) else round(float(v), 4)
                                             for v in np.nanmean(col, axis=0)]
        if res.attribution_spearman is not None:
            entry["attribution_spearman_mean"] = float(np.nanmean(res.attribution_spearman))
        summary["sites"][site] = entry
    print_json(summary)
    return 0

"""``thinklens heads``: rank Reasoning-Focus Heads, induction heads, token view and figures from saved scores."""
from __future__ import annotations

import argparse
from pathlib import Path

from thinklens.cli.common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    from thinklens.attention.heads import N_BOOTSTRAP
    from thinklens.attention.induction import N_SEQS, SEQ_LEN
    from thinklens.cli.flags import parent
    from thinklens.models import ModelOptions

    p = sub.add_parser("heads", help="rank heads (RFHs), induction heads, token view",
                       description="Work with per-head attention scores.")
    hs = p.add_subparsers(dest="heads_command", metavar="ACTION", required=True)
    r = hs.add_parser("rank", help="rank heads by mean score with bootstrap stability",
                      description="Rank (layer, head) by the mean of a score over traces (the paper's RFH definition) "
                      "with std, bootstrap stability (share of resamples in top k) and 95% rank interval.")
    r.add_argument("scores", help="head_scores.npz (or its directory)")
    r.add_argument("--score", default="a2r", help="a2r (default), a2p, a2a, a2bos, a2bot, a2eot, r2r, r2p")
    r.add_argument("--top", type=int, default=10, help="k (default 10)")
    r.add_argument("--json", action="store_true", help="print one JSON object")
    r.add_argument("--compare", help="reference heads JSON (a [[layer, head], ...] list or paper_reference.json)")
    r.add_argument("--compare-model", help="model key inside the reference file")
    r.add_argument("--bootstrap", type=int, default=N_BOOTSTRAP,
                   help="bootstrap resamples over traces (0 = off; default %(default)s)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--plots", metavar="DIR", help="also save heatmap, layer profile and decomposition PNGs here")
    r.set_defaults(func=run_rank)
    i = hs.add_parser("induction", help="induction-head score of every head",
                      parents=[parent(ModelOptions, required=("name",))],
                      description="Mean attention from each token of the second copy of [BOS]+r+r (r random, seeded) "
                      "to the token after its first occurrence; saves a JSON with all scores and the top heads.")
    i.add_argument("--output", required=True, help="output JSON file")
    i.add_argument("--seq-len", type=int, default=SEQ_LEN, help="length of the repeated random sequence")
    i.add_argument("--n-seqs", type=int, default=N_SEQS, help="random sequences averaged over")
    i.add_argument("--seed", type=int, default=0)
    i.add_argument("--top", type=int, default=10)
    i.set_defaults(func=run_induction)
    t = hs.add_parser("tokens", help="token view (HTML) and self-reflection cue statistics",
                      description="From DIR/tokens/ (written by `thinklens attention --token-view N`): attention each "
                      "reasoning token receives from the answer through chosen heads (default: top RFHs), a "
                      "self-contained HTML view, and cue-vs-other statistics with a permutation test "
                      "(DIR/cue_stats.json).")
    t.add_argument("scores_dir", help="output directory of `thinklens attention`")
    t.add_argument("--heads", nargs="*", default=[], metavar="L:H", help="heads, e.g. 3:1 5:0 (default: top RFHs)")
    t.add_argument("--top", type=int, default=5, help="number of top RFHs when --heads is not given")
    t.add_argument("--id", help="trace id for the HTML view (default: the first stored trace)")
    t.add_argument("--cues", help="comma-separated cue words (default: Wait,Alternatively,Hmm,double-check,...)")
    t.add_argument("--ignore-case", action="store_true")
    t.add_argument("--output", help="HTML path (default: SCORES_DIR/token_view.html)")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=run_tokens)


def run_rank(ns: argparse.Namespace) -> int:
    from thinklens.attention.heads import compare_heads, load_reference_heads, rank_heads
    from thinklens.attention.segments import HeadScores

    args = ns
    hs = HeadScores.load(args.scores)
    ranking = rank_heads(hs, args.score, args.top, args.bootstrap, args.seed)
    out = ranking.to_json()
    if args.compare:
        name, ref = load_reference_heads(args.compare, args.compare_model)
        n_layers, n_heads = hs.shape
        out["compare"] = {"reference": name, **compare_heads(ranking.pairs(), ref[: args.top], n_layers * n_heads)}
    if args.plots:
        from thinklens.report import fig_attention as fa

        d = Path(args.plots)
        fa.heatmap(hs, args.score, args.top, d / "heatmap.png")
        fa.layer_profile(hs, args.score, d / "layer_profile.png")
        fa.decomposition(hs, "top", args.top, d / "decomposition.png")
        out["plots"] = [str(d / n) for n in ("heatmap.png", "layer_profile.png", "decomposition.png")]
    if args.json:
        print_json(out)
        return 0
    print(f"{args.score}: top {ranking.top_k} heads over {ranking.n_traces} traces "
          f"(stability = share of {args.bootstrap} bootstrap resamples in top {ranking.top_k})")
    print(f"{'rank':>4} {'layer':>5} {'head':>4} {'mean':>9} {'std':>9} {'stab':>5} rank95")
    for h in ranking.heads:
        print(f"{h.rank:>4} {h.layer:>5} {h.head:>4} {h.mean:>9.4f} {h.std:>9.4f} {h.stability:>5.2f} "
              f"[{h.rank_ci[0]}, {h.rank_ci[1]}]")
    if "compare" in out:
        c = out["compare"]
        print(f"overlap with {c['reference']}: {c['overlap']}/{c['k_reference']} (Jaccard {c['jaccard']:.2f}, "
              f"hypergeometric p = {c['p_value']:.3g})")
    return 0


def run_induction(ns: argparse.Namespace) -> int:
    import torch

    from thinklens.attention.induction import induction_scores
    from thinklens.cli.flags import build
    from thinklens.models import ModelOptions

    args = ns
    model, tokenizer, profile = build(ModelOptions, ns).load()
    with torch.no_grad():
        res = induction_scores(model, tokenizer, seq_len=args.seq_len, n_seqs=args.n_seqs, seed=args.seed,
                               model_name=ns.name)
    res.save(args.output)
    print_json({"output": args.output, "top": [list(t) for t in res.top(args.top)]})
    return 0


def _parse_head(s: str) -> tuple[int, int]:
    from thinklens.errors import ThinklensError

    try:
        a, b = s.replace(",", ":").split(":")
        return int(a), int(b)
    except ValueError as err:
        raise ThinklensError(f"bad head {s!r}: use LAYER:HEAD, e.g. 3:1") from err


def run_tokens(ns: argparse.Namespace) -> int:
    from thinklens.attention.tokens import DEFAULT_CUES, analyze_tokens
    from thinklens.errors import ThinklensError
    from thinklens.report.token_view import render_token_view

    args = ns
    heads = [_parse_head(h) for h in args.heads] or None
    cues = tuple(c.strip() for c in args.cues.split(",") if c.strip()) if args.cues else DEFAULT_CUES
    items, stats = analyze_tokens(args.scores_dir, heads, top_k=args.top, cues=cues, ignore_case=args.ignore_case,
                                  seed=args.seed)
    chosen = items[0] if args.id is None else next((it for it in items if it.id == args.id), None)
    if chosen is None:
        raise ThinklensError(f"trace {args.id!r} has no stored token profile; stored: {[it.id for it in items]}")
    out = Path(args.output or Path(args.scores_dir) / "token_view.html")
    render_token_view(chosen, out)
    print_json({"html": str(out), "cue_stats": stats.to_json()})
    return 0

"""``thinklens heads``: rank Reasoning-Focus Heads, induction and retrieval heads, the RFH ablation test, failure
debugging, token view and cue statistics."""
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
    t.add_argument("--window", type=int, metavar="W",
                   help="±W tokens of the window-matched cue control (default: tokens.DEFAULT_CUE_WINDOW)")
    t.add_argument("--controls", default="window,sentence_start",
                   help="matched cue controls, comma-separated: window, sentence_start (default both)")
    t.set_defaults(func=run_tokens)
    _register_retrieval(hs)
    _register_ablate(hs)
    _register_debug(hs)


def _model_parent() -> list[argparse.ArgumentParser]:
    """``--model`` (required) and the other model flags, shared with every model-loading command."""
    from thinklens.cli.flags import parent
    from thinklens.models import ModelOptions

    return [parent(ModelOptions, required=("name",))]


def _load(ns: argparse.Namespace) -> tuple:
    from thinklens.cli.flags import build
    from thinklens.models import ModelOptions

    return build(ModelOptions, ns).load()


def _register_retrieval(hs: argparse._SubParsersAction) -> None:
    r = hs.add_parser("retrieval", help="retrieval-head score of every head (needle-in-a-haystack copy test)",
                      parents=_model_parent(),
                      description="Wu et al. (2024) retrieval score: at the steps where the model copies a needle "
                      "token (teacher-forced: haystack + needle + question + the needle as the answer), how often a "
                      "head's top attention lands on that token in the needle. Seeded haystacks built with the model's "
                      "tokenizer. With --scores, the overlap of the RFHs with retrieval and induction heads, before "
                      "and after each family's threshold; with --compare, the paper's lists.")
    r.add_argument("--output", required=True, help="output JSON file")
    r.add_argument("--format", help="haystack format: passkey (natural language) or arithmetic (the organism's "
                   "reasoning lines); default: the model profile's needle_haystack")
    r.add_argument("--lengths", help="context lengths in tokens, comma-separated (default: the format's)")
    r.add_argument("--depths", default="0,0.25,0.5,0.75,1", help="needle depths in [0, 1], comma-separated")
    r.add_argument("--n-needles", type=int, help="needles per (length, depth) (default: the format's)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--top", type=int, default=10, help="k of the top lists and of the RFHs (default 10)")
    r.add_argument("--scores", help="attention output directory: report the RFH overlaps")
    r.add_argument("--induction", help="induction JSON of `heads induction` (default: computed with --scores)")
    r.add_argument("--compare", help="paper_reference.json: compare with the paper's head lists")
    r.add_argument("--compare-model", help="model key inside the reference file (default: --model)")
    r.set_defaults(func=run_retrieval)


def _register_ablate(hs: argparse._SubParsersAction) -> None:
    a = hs.add_parser("ablate", help="causal test: ablate the top RFHs during answering vs random heads",
                      parents=_model_parent(),
                      description="Keep each scored trace's prompt + reasoning + </think>, regenerate the answer "
                      "greedily with the top-k RFHs ablated (their slice of the o_proj input at every answer "
                      "position; mean or zero) and with k random heads from the same layers (several seeded draws); "
                      "grade against gold_answer, score the log-prob of the unablated answer, and test RFH vs random "
                      "(exact McNemar per draw, permutation over draws). Resumable in --output.")
    a.add_argument("--scores", required=True, help="output directory of `thinklens attention`")
    a.add_argument("--top", type=int, default=3, help="k RFHs to ablate (default 3)")
    a.add_argument("--random-draws", type=int, default=5, help="seeded random head sets (default 5)")
    a.add_argument("--limit", type=int, help="only the first N scored traces")
    a.add_argument("--mode", default="mean", choices=["mean", "zero"],
                   help="mean: each head's mean answer output in the unablated runs (default); zero")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--traces", help="trace JSONL (default: the one recorded in the scores' settings)")
    a.add_argument("--max-new-tokens", type=int,
                   help="answer cap (default: 2 x the trace's answer + ablation.ANSWER_MARGIN)")
    a.add_argument("--batch-size", type=int, default=16,
                   help="traces per batch, each with 1 + R condition rows sharing its prefix (default %(default)s; "
                   "lower it for long traces on a small GPU: the KV cache holds batch x (1 + R) rows)")
    a.add_argument("--output", help="output directory (default: SCORES/ablation)")
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.set_defaults(func=run_ablate)


def _register_debug(hs: argparse._SubParsersAction) -> None:
    from thinklens.steps.segment import DEFAULT_MIN_CHARS
    from thinklens.steps.segment import MODES as SEGMENT_MODES

    d = hs.add_parser("debug", help="failure debugging: which reasoning steps the RFHs read, where values sit",
                      parents=_model_parent(),
                      description="For every graded trace: answer→step attention through the top RFHs (steps = "
                      "reasoning lines), where the answered value first appears in the reasoning, whether the gold "
                      "value appears; summary: how often the RFHs' top step holds the wrong value (incorrect traces) "
                      "vs the correct value (correct traces). Writes OUTPUT/debug.json and OUTPUT/debug.npz.")
    d.add_argument("--scores", required=True, help="output directory of `thinklens attention` (for the RFHs)")
    d.add_argument("--graded", required=True, help="graded JSONL (`thinklens grade`)")
    d.add_argument("--output", required=True, help="output directory")
    d.add_argument("--top", type=int, default=5, help="number of RFHs (default 5)")
    d.add_argument("--limit", type=int, help="only the first N gradable traces")
    d.add_argument("--segment", choices=SEGMENT_MODES,
                   help="steps as `thinklens steps` cuts them (auto, lines, sentences); default: reasoning lines")
    d.add_argument("--min-chars", type=int, default=DEFAULT_MIN_CHARS,
                   help="with --segment: merge step fragments shorter than N non-space characters")
    d.add_argument("--json", action="store_true", help="print the summary and every incorrect trace as JSON")
    d.set_defaults(func=run_debug)


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
    for e in ranking.excluded:
        what = f"head L{e['head'][0]}H{e['head'][1]}" if "head" in e else f"trace {e['trace']}"
        print(f"left out: {what} ({e['reason']})")
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
    if not _main():
        return 0
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
    from thinklens.attention.tokens import DEFAULT_CUE_WINDOW, cue_window_control

    controls = tuple(c.strip() for c in args.controls.split(",") if c.strip())
    control = cue_window_control(items, cues, window=args.window if args.window is not None else DEFAULT_CUE_WINDOW,
                                 controls=controls, ignore_case=args.ignore_case, seed=args.seed)
    control.save(args.scores_dir)
    print_json({"html": str(out), "cue_stats": stats.to_json(), "cue_control": control.to_json()})
    return 0


def _floats(s: str) -> tuple[float, ...]:
    from thinklens.errors import ThinklensError

    try:
        return tuple(float(x) for x in s.split(",") if x.strip())
    except ValueError as err:
        raise ThinklensError(f"bad number list {s!r}: use e.g. 0,0.5,1") from err


def run_retrieval(ns: argparse.Namespace) -> int:
    import torch

    from thinklens.attention.retrieval import retrieval_scores

    args = ns
    model, tokenizer, profile = _load(ns)
    lengths = tuple(int(x) for x in _floats(args.lengths)) if args.lengths else None
    with torch.no_grad():
        res = retrieval_scores(model, tokenizer, fmt=args.format, profile=profile, model_name=args.name,
                               lengths=lengths, depths=_floats(args.depths), n_needles=args.n_needles, seed=args.seed)
    out = res.to_json(args.top)
    L, H = res.scores.shape
    rfh = None
    if args.scores:
        from thinklens.attention.heads import rank_heads
        from thinklens.attention.induction import InductionScores, induction_scores
        from thinklens.attention.overlaps import head_overlaps
        from thinklens.attention.segments import HeadScores

        rfh = rank_heads(HeadScores.load(args.scores), "a2r", args.top, n_bootstrap=0).pairs()
        with torch.no_grad():
            ind = (InductionScores.load(args.induction) if args.induction
                   else induction_scores(model, tokenizer, seed=args.seed, model_name=args.name))
        out["overlaps"] = head_overlaps(rfh, ind, res, L * H)
    if args.compare:
        from thinklens.attention.overlaps import compare_with_reference

        found = {"retrieval": [(t[0], t[1]) for t in res.top(args.top)], **({"rfh": rfh} if rfh else {})}
        out["reference"] = compare_with_reference(args.compare, args.compare_model or args.name, found, L * H)
    import json

    if not _main():
        return 0
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=1, allow_nan=False) + "\n")
    brief = {k: out[k] for k in ("n_tests", "n_passed", "threshold", "top", "retrieval_heads")}
    if "overlaps" in out:
        brief["overlaps"] = {f: {w: {k: out["overlaps"][f][w][k] for k in ("overlap", "k_reference", "p_value")}
                                 for w in ("before", "after")} for f in ("induction", "retrieval")}
    print_json({"output": args.output, **brief})
    return 0


def _main() -> bool:
    """Whether this process reports: always, except on ranks other than 0 of a torchrun launch (the model-running
    subcommands share their items among the ranks, and every rank holds the merged result)."""
    from thinklens import distributed

    return distributed.world().is_main


def run_ablate(ns: argparse.Namespace) -> int:
    from thinklens.attention.ablation import run_ablation

    args = ns
    model, tokenizer, profile = _load(ns)
    out = args.output or str(Path(args.scores) / "ablation")
    res = run_ablation(model, tokenizer, profile, args.scores, out, top_k=args.top, random_draws=args.random_draws,
                       mode=args.mode, seed=args.seed, limit=args.limit, traces=args.traces,
                       max_new_tokens=args.max_new_tokens, batch_size=args.batch_size, model_name=args.name,
                       progress=not args.json)
    if not _main():
        return 0
    s = res.summary()
    if args.json:
        print_json({"output": out, **s})
        return 0
    print(f"{s['n']} traces, {args.mode} ablation of {len(res.rfh)} heads over the answer positions ({out})")
    print(f"accuracy: base {s['accuracy_base']:.3f}  RFHs {res.rfh} ablated {s['accuracy_rfh_ablated']:.3f}  "
          f"random (mean of {res.n_draws}) {s['accuracy_random_mean'] if res.n_draws else float('nan'):.3f}")
    for d, heads in enumerate(res.random_heads):
        m = s["mcnemar_random_vs_rfh"][d]
        print(f"  draw {d}: {heads} accuracy {s['accuracy_random_ablated'][d]:.3f}  log-prob delta "
              f"{s['logprob_delta_random'][d]:+.3f}  McNemar vs RFH p = {m['p_value']:.3g}")
    print(f"log-prob of the unablated answer: RFH delta {s['logprob_delta_rfh']:+.3f}; McNemar base vs RFH "
          f"p = {s['mcnemar_base_vs_rfh']['p_value']:.3g}; permutation over draws p = {s['p_rank_rfh_vs_random']}")
    return 0


def run_debug(ns: argparse.Namespace) -> int:
    from thinklens.attention.debugging import debug_graded_file
    from thinklens.attention.heads import rank_heads
    from thinklens.attention.segments import HeadScores

    args = ns
    rfh = rank_heads(HeadScores.load(args.scores), "a2r", args.top, n_bootstrap=0).pairs()
    model, tokenizer, profile = _load(ns)
    kw = {}
    if args.segment:
        from thinklens.steps.segment import segment_reasoning, step_spans

        kw["segment"] = lambda trace: step_spans(segment_reasoning(trace, args.segment, args.min_chars))
    res = debug_graded_file(model, tokenizer, profile, args.graded, rfh, limit=args.limit, model_name=args.name,
                            progress=not args.json, **kw)
    if not _main():
        return 0
    path = res.save(args.output)
    summary = res.summary()
    if args.json:
        print_json({"output": str(path), "summary": summary,
                    "incorrect": [t.to_json() for t in res.traces if not t.is_correct]})
        return 0
    print_json({"output": str(path), **summary})
    for t in res.traces:
        if not t.is_correct:
            j = t.to_json()
            print(f"  {t.id}: answered {t.extracted!r} (gold {t.gold!r}); RFHs read step {j['top_step']} "
                  f"{t.step_text[j['top_step']]!r}; answered value first in step {j['first_extracted_step']}; "
                  f"gold in reasoning: {j['gold_in_reasoning']}")
    return 0

"""``thinklens evaluate``: paired with/without-reasoning accuracy per model (bootstrap CI, exact McNemar)."""
from __future__ import annotations

import argparse
import sys

from thinklens.cli.common import print_json


def register(sub: argparse._SubParsersAction) -> None:
    from thinklens.empirical.evaluate import N_RESAMPLES
    from thinklens.empirical.thinking import MIN_USABLE

    p = sub.add_parser(
        "evaluate", help="compare accuracy with vs without reasoning (paired, per model)",
        description="Pair graded records by (model, id/unique_id), keep problems where both runs finished, and report "
        "n, accuracy with and without reasoning, the difference with a paired-bootstrap 95% CI, the exact McNemar "
        "p-value, discordant counts, strict-grader accuracies and how many problems were dropped and why.",
    )
    p.add_argument("files", nargs="+", help="graded JSONL files (from thinklens grade), any mix of models/modes")
    p.add_argument("--json", action="store_true", help='print {"models": {MODEL: {...}}} instead of a table')
    p.add_argument("--plot", help="write the quality-impact figure (PNG/PDF/SVG)")
    p.add_argument("--save", help="directory for evaluation.json + evaluation.npz")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--n-resamples", type=int, default=N_RESAMPLES, help="bootstrap resamples (default %(default)s)")
    p.add_argument("--min-usable", type=float, default=MIN_USABLE, metavar="SHARE",
                   help="fail with advice (which option, which budget) when fewer than this share of a model's "
                   "problems have a usable pair, or none (default %(default)s; 0: evaluate whatever is left)")
    p.add_argument("--paper", metavar="JSON", help="put the paper's accuracies next to ours (a reference JSON with "
                   "math500_accuracy_percent, e.g. paper_reference.json); models matched by name "
                   "(deepseek-reasoner = DeepSeek-R1 (full))")
    p.set_defaults(func=run)


def _pct(x: float | None) -> str:
    return "  n/a" if x is None else f"{100 * x:5.1f}"


def run(ns: argparse.Namespace) -> int:
    from thinklens.empirical.evaluate import evaluate_files

    args = ns
    errors: list[str] = []
    result = evaluate_files(args.files, seed=args.seed, n_resamples=args.n_resamples, errors=errors,
                            min_usable=args.min_usable)
    for e in errors:
        print(f"skipped {e}", file=sys.stderr)
    paper = None
    if args.paper:
        from thinklens.empirical.evaluate import compare_with_paper, load_paper_table

        paper = compare_with_paper(result, load_paper_table(args.paper))
        for m in result.models:
            if m not in paper:
                print(f"warning: the paper reports no model named like {m!r}", file=sys.stderr)
    if args.save:
        result.save(args.save)
    if args.plot:
        from thinklens.report.fig_empirical import plot_quality_impact

        plot_quality_impact(result, args.plot, paper=paper)
    if args.json:
        print_json({**result.to_dict(), **({"paper": paper} if paper is not None else {})})
        return 0
    print(f"{'model':<45} {'n':>4} {'with%':>6} {'w/o%':>6} {'diff [95% CI]':>22} {'p (McNemar)':>12}  strict w/o")
    for m, e in result.models.items():
        ci = f"[{100 * e.difference_ci95[0]:+.1f}, {100 * e.difference_ci95[1]:+.1f}]" if e.difference_ci95 else ""
        diff = f"{100 * e.difference:+.1f} {ci}" if e.difference is not None else "n/a"
        print(f"{m[-45:]:<45} {e.n:>4} {_pct(e.accuracy_with_reasoning):>6} {_pct(e.accuracy_without_reasoning):>6} "
              f"{diff:>22} {e.p_value:>12.3g}  {_pct(e.strict_accuracy_with_reasoning)}/"
              f"{_pct(e.strict_accuracy_without_reasoning).strip()}")
        fc = e.n_forced_close or {}
        print(f"    thinking: {e.thinking or 'n/a'}; without reasoning: {e.without_mode or 'n/a'}; forced close "
              f"(budget forcing): {fc.get('with', 0)} with, {fc.get('without', 0)} without")
        if e.dropped:
            print(f"    dropped: {', '.join(f'{k}={v}' for k, v in sorted(e.dropped.items()))}")
        if paper and m in paper:
            r = paper[m]
            print(f"    paper ({r['paper_model']}, n={r['paper_n']}): {r['paper_with_reasoning']:.1f} with, "
                  f"{r['paper_without_reasoning']:.1f} without, difference {r['paper_difference']:+.1f}; here "
                  f"{r['difference']:+.1f}" if r["difference"] is not None else "    paper: no paired problems here")
    return 0

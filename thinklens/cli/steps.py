"""``thinklens steps``: which reasoning steps does the answer use? (attention, suppression, truncation, resampling)"""
from __future__ import annotations

import argparse

from thinklens.cli.common import add_quiet, print_json


def register(sub: argparse._SubParsersAction) -> None:
    from thinklens.cli.flags import add_config, parent
    from thinklens.models import ModelOptions
    from thinklens.steps.results import StepsConfig

    p = sub.add_parser(
        "steps", parents=[parent(ModelOptions, required=("name",))],
        help="which reasoning steps the answer uses (step attention, suppression, truncation, resampling)",
        description="Cut each trace's reasoning into steps (lines or sentences) and score every step with each "
        "method: answer→step attention of the Reasoning-Focus Heads, attention suppression (KL of the answer; "
        "blocked from every later token, and from the answer only), "
        "early answering (truncation) and counterfactual resampling; find Thought Anchors' receiver heads; compare "
        "the methods (Spearman with bootstrap CIs, per step category). Writes DIR/steps.jsonl, receivers.json, "
        "truncation.json, agreement.json, result.json. Resumable: a rerun skips finished traces.")
    p.add_argument("--traces", required=True, help="trace JSONL (from `thinklens collect`)")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--rfh", nargs="*", default=[], metavar="L:H",
                   help="Reasoning-Focus Heads for the attention number, e.g. 1:2 2:6 (default: ranked here)")
    p.add_argument("--rfh-scores", metavar="PATH", help="rank the RFHs from a head_scores.npz (`thinklens attention`)")
    add_config(p.add_argument_group("steps"), StepsConfig)
    p.add_argument("--backend", choices=["transformers", "vllm"], default="transformers",
                   help="engine of the resampling rollouts (vllm: prefix caching, needs thinklens[vllm])")
    p.add_argument("--figures", action="store_true", help="also draw DIR/figures/*.png and DIR/step_view.html")
    p.add_argument("--plan", action="store_true", help="print what resampling would cost (rollouts, generated tokens, "
                   "a time estimate from a short calibration) and stop")
    add_quiet(p)
    p.set_defaults(func=run)


def parse_head(s: str) -> tuple[int, int]:
    """``"1:2"`` (or ``"1,2"``) -> ``(1, 2)``; a ThinklensError otherwise.

    >>> parse_head("1:2")
    (1, 2)
    """
    from thinklens.errors import ThinklensError

    try:
        a, b = s.replace(",", ":").split(":")
        return int(a), int(b)
    except ValueError as err:
        raise ThinklensError(f"bad head {s!r}: use LAYER:HEAD, e.g. 1:2") from err


def run(ns: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    import torch

    from thinklens.cli.flags import build
    from thinklens.errors import ThinklensError
    from thinklens.models import ModelOptions
    from thinklens.steps.results import StepsConfig
    from thinklens.steps.run import run_steps

    args = ns
    config = build(StepsConfig, ns)  # validate before loading a model
    if not Path(args.traces).is_file():
        raise ThinklensError(f"{args.traces}: no such trace file")
    rfh = [parse_head(h) for h in args.rfh] or None
    if rfh is None and args.rfh_scores:
        from thinklens.attention.heads import rank_heads
        from thinklens.attention.segments import HeadScores

        rfh = rank_heads(HeadScores.load(args.rfh_scores), "a2r", config.top_k, n_bootstrap=0).pairs()
    options = build(ModelOptions, ns)
    model, tokenizer, profile = options.load()
    if args.plan:
        from thinklens.steps.plan import resampling_plan
        from thinklens.steps.results import with_profile_defaults

        plan = resampling_plan(model, tokenizer, profile, args.traces, with_profile_defaults(config, profile))
        print(plan.line(), file=sys.stderr)
        print_json({"plan": plan.to_dict()})
        return 0
    backend = None
    if args.backend == "vllm" and "resampling" in config.methods:
        from thinklens.empirical.backends.vllm import vllm_backend

        backend = vllm_backend(options.name, tokenizer, dtype=options.dtype, seed=config.seed)
    with torch.no_grad():
        res = run_steps(model, tokenizer, profile, args.traces, args.output, config, rfh=rfh,
                        model_name=options.name, progress=not args.quiet, backend=backend)
    from thinklens import distributed

    if not distributed.world().is_main:  # under torchrun rank 0 reports for all (the results are merged)
        return 0
    out = {"output": args.output, **res.summary(), "n_skipped": res.meta.get("n_skipped"),
           "notes": res.meta.get("notes")}
    if args.figures:
        from thinklens.report.fig_steps import draw_all

        out["figures"] = [str(p) for p in draw_all(args.output)]
    print_json(out)
    return 0

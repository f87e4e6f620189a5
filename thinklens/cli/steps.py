"""``thinklens steps``: which reasoning steps does the answer use? (attention, suppression, truncation, resampling)"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

from thinklens.cli.common import print_json, to_dataclass


@dataclass
class StepsArgs:
    model: str
    traces: str
    output: str
    methods: str | None = None
    rfh: list[str] = field(default_factory=list)
    rfh_scores: str | None = None
    top_k: int = 10
    limit: int | None = None
    rollouts: int = 8
    segment: str = "auto"
    min_chars: int | None = None
    proximity: int | None = None
    receivers: int = 10
    max_tokens: int | None = None
    text_field: str | None = None
    seed: int = 0
    device: str | None = None
    dtype: str | None = None
    quiet: bool = False
    figures: bool = False


def register(sub: argparse._SubParsersAction) -> None:
    from thinklens.steps.agreement import METHODS
    from thinklens.steps.results import DEFAULT_METHODS
    from thinklens.steps.segment import MODES

    p = sub.add_parser(
        "steps", help="which reasoning steps the answer uses (step attention, suppression, truncation, resampling)",
        description="Cut each trace's reasoning into steps (lines or sentences) and score every step with each "
        "method: answer→step attention of the Reasoning-Focus Heads, attention suppression (KL of the answer), "
        "early answering (truncation) and counterfactual resampling; find Thought Anchors' receiver heads; compare "
        "the methods (Spearman with bootstrap CIs, per step category). Writes DIR/steps.jsonl, receivers.json, "
        "truncation.json, agreement.json, result.json. Resumable: a rerun skips finished traces.")
    p.add_argument("--model", required=True, help="hub id, local directory or tiny-r1")
    p.add_argument("--traces", required=True, help="trace JSONL (from `thinklens collect`)")
    p.add_argument("--output", required=True, help="output directory")
    p.add_argument("--methods", help=f"comma-separated subset of {','.join(METHODS)} "
                   f"(default {','.join(DEFAULT_METHODS)}; resampling costs n_steps x rollouts generations)")
    p.add_argument("--rfh", nargs="*", default=[], metavar="L:H",
                   help="Reasoning-Focus Heads for the attention number, e.g. 1:2 2:6 (default: ranked here)")
    p.add_argument("--rfh-scores", metavar="PATH", help="rank the RFHs from a head_scores.npz (`thinklens attention`)")
    p.add_argument("--top-k", type=int, default=10, help="number of RFHs when ranked (default 10)")
    p.add_argument("--limit", type=int, help="only the first N lines of the trace file")
    p.add_argument("--rollouts", type=int, default=8, help="resampling: rollouts per step (default 8)")
    p.add_argument("--segment", default="auto", choices=MODES, help="steps: lines, sentences or auto (default)")
    p.add_argument("--min-chars", type=int, help="merge fragments shorter than N non-space characters (default 3)")
    p.add_argument("--proximity", type=int, help="receiver heads: count only steps at least N steps later "
                   "(default 4, as Thought Anchors; use 1 for short traces such as tiny-r1's)")
    p.add_argument("--receivers", type=int, default=10, help="number of receiver heads (default 10)")
    p.add_argument("--max-tokens", type=int, help="skip traces longer than N tokens")
    p.add_argument("--text-field", help="field with the full sequence (default: text, else prompt+completion)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu, cuda, mps (default: best available)")
    p.add_argument("--dtype", help="fp32, bf16, fp16 (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--figures", action="store_true", help="also draw DIR/figures/*.png and DIR/step_view.html")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
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


def build_config(args: StepsArgs):  # -> StepsConfig
    from thinklens.steps.results import DEFAULT_METHODS, StepsConfig

    extra = {k: v for k, v in (("min_chars", args.min_chars), ("proximity", args.proximity)) if v is not None}
    return StepsConfig(methods=args.methods or DEFAULT_METHODS, segment=args.segment, top_k=args.top_k,
                       receiver_top_k=args.receivers, n_rollouts=args.rollouts, max_traces=args.limit,
                       max_tokens=args.max_tokens, seed=args.seed, text_field=args.text_field, **extra)


def run(ns: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from thinklens.errors import ThinklensError
    from thinklens.models import load_model
    from thinklens.steps.run import run_steps

    args = to_dataclass(StepsArgs, ns)
    config = build_config(args)  # validate before loading a model
    if not Path(args.traces).is_file():
        raise ThinklensError(f"{args.traces}: no such trace file")
    rfh = [parse_head(h) for h in args.rfh] or None
    if rfh is None and args.rfh_scores:
        from thinklens.attention.heads import rank_heads
        from thinklens.attention.segments import HeadScores

        rfh = rank_heads(HeadScores.load(args.rfh_scores), "a2r", args.top_k, n_bootstrap=0).pairs()
    model, tokenizer, profile = load_model(args.model, args.device, args.dtype)
    with torch.no_grad():
        res = run_steps(model, tokenizer, profile, args.traces, args.output, config, rfh=rfh, model_name=args.model,
                        progress=not args.quiet)
    out = {"output": args.output, **res.summary(), "n_skipped": res.meta.get("n_skipped"),
           "notes": res.meta.get("notes")}
    if args.figures:
        from thinklens.report.fig_steps import draw_all

        out["figures"] = [str(p) for p in draw_all(args.output)]
    print_json(out)
    return 0

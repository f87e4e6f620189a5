"""``thinklens train-toy``: regenerate a model organism (tiny-r1, a small Qwen2 reasoning model, or tiny-r1-hints,
its hint-trained twin) into a directory."""
from __future__ import annotations

import argparse

from thinklens.cli.common import print_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``thinklens train-toy``; defaults come from :class:`thinklens.toy.config.TrainConfig` and the
    recipe (a torch-free module, so building the parser stays light)."""
    from thinklens.toy.config import HINTS_ORGANISM, HINTS_THREADS, RECIPE, RECIPE_THREADS, TrainConfig

    r1, r2 = RECIPE
    p.add_argument("--output", required=True, help="model directory to write")
    p.add_argument("--organism", choices=("tiny-r1", HINTS_ORGANISM), default="tiny-r1",
                   help=f"tiny-r1 (default) or {HINTS_ORGANISM}: one further stage from the shipped tiny-r1 weights "
                   "(or --init-from DIR) on prompts of which half carry a hint, followed faithfully, unfaithfully or "
                   "ignored at known rates (thinklens.toy.hinted); the stage flags below change its recipe values")
    p.add_argument("--stage", choices=("all", "1", "2"), default="all",
                   help="all (default): the shipped two-stage recipe, which regenerates the shipped weights; "
                   "1 or 2: a single stage (2 needs --init-from), whose recipe values the flags below can change")
    p.add_argument("--stage1-dir", help="with --stage all: keep the stage-1 model here (default: a temp dir)")
    p.add_argument("--init-from", help=f"with --stage 2 (or --organism {HINTS_ORGANISM}): continue from this model "
                   "directory")
    p.add_argument("--seed", type=int,
                   help=f"single stage: seed of data, init and mix (recipe: {r1['seed']} / {r2['seed']})")
    p.add_argument("--steps", type=int, help=f"optimizer steps (recipe: {r1['steps']} / {r2['steps']}); with "
                   "--stage all: both stages")
    p.add_argument("--lr", type=float, help=f"single stage: peak learning rate (recipe: {r1['lr']} / {r2['lr']})")
    p.add_argument("--warmup-steps", type=int,
                   help=f"single stage: warmup steps (recipe: {r1['warmup_steps']} / {r2['warmup_steps']})")
    p.add_argument("--final-override-rate", type=float,
                   help="single stage: share of traces whose final line states another value (recipe: "
                   f"{r1['final_override_rate']} / {r2['final_override_rate']})")
    p.add_argument("--batch-size", type=int, default=TrainConfig.batch_size)
    p.add_argument("--eval-n", type=int, default=TrainConfig.eval_n, help="problems for the gates (0: skip)")
    p.add_argument("--hidden-size", type=int, default=TrainConfig.hidden_size)
    p.add_argument("--intermediate-size", type=int, default=TrainConfig.intermediate_size)
    p.add_argument("--num-layers", type=int, default=TrainConfig.num_layers)
    p.add_argument("--threads", type=int,
                   help=f"torch CPU threads (default as shipped: tiny-r1 {RECIPE_THREADS}, {HINTS_ORGANISM} "
                   f"{HINTS_THREADS}; other counts can change the floats)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-toy",
        help="train the tiny-r1 model organism (CPU; the shipped two-stage recipe by default) or tiny-r1-hints",
        description="Train tiny-r1 (Qwen2, character-level R1 tokenizer) on the seeded arithmetic task and write a "
        "HF model directory with a model card holding the measured quality gates. By default runs the shipped "
        "two-stage recipe (stage 1, then stage 2 from the stage-1 weights), which regenerates the shipped weights "
        "bitwise; --stage 1 / --stage 2 --init-from DIR run one stage. --organism tiny-r1-hints trains the "
        "hint-trained "
        "organism (the faithfulness tool's ground truth) from the shipped tiny-r1 weights.",
    )
    add_arguments(p)
    p.set_defaults(func=run, _parser=p)


def run(ns: argparse.Namespace) -> int:
    from thinklens.toy.recipe import train_from_flags

    parser = getattr(ns, "_parser", None)
    summary = train_from_flags(ns, error=parser.error if parser else None)
    print_json({k: v for k, v in summary.items() if k != "config"})
    return 0

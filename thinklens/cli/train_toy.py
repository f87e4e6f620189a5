"""``thinklens train-toy``: train the tiny-r1 model organism (a small Qwen2 reasoning model) into a directory."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from thinklens.cli.common import print_json, to_dataclass


@dataclass
class TrainToyArgs:
    output: str
    seed: int = 0
    steps: int = 1200
    batch_size: int = 64
    lr: float = 3e-3
    eval_n: int = 200
    threads: int = 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train-toy",
        help="train the tiny-r1 model organism (CPU, ~15-20 min)",
        description="Train tiny-r1 (Qwen2, character-level R1 tokenizer) on the seeded arithmetic task and write a "
        "HF model directory with a model card holding the measured quality gates. The shipped tiny-r1 was trained "
        "in two stages (exact commands in its README; the second uses python -m thinklens.toy.train --init-from).",
    )
    p.add_argument("--output", required=True, help="model directory to write")
    p.add_argument("--seed", type=int, default=0, help="seed of data, init and mix (default: 0)")
    p.add_argument("--steps", type=int, default=1200, help="optimizer steps (default: 1200)")
    p.add_argument("--batch-size", type=int, default=64, help="examples per step (default: 64)")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default: 3e-3)")
    p.add_argument("--eval-n", type=int, default=200, help="test problems for the quality gates; 0 skips them")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (1 is faster on a busy machine)")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from thinklens.toy.train import train

    args = to_dataclass(TrainToyArgs, ns)
    summary = train(args.output, seed=args.seed, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                    eval_n=args.eval_n, threads=args.threads, log=lambda m: print(m, flush=True))
    print_json({k: v for k, v in summary.items() if k != "config"})
    return 0

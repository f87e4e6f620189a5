"""``thinklens run``: the whole study in one command (collect → grade → evaluate → attention → patching → report)."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from thinklens.cli.common import print_json, to_dataclass


@dataclass
class RunArgs:
    model: str = "tiny-r1"
    dataset: str = "arithmetic"
    limit: int = 100
    output: str = "thinklens-run"
    seed: int = 0
    device: str | None = None
    dtype: str | None = None
    device_map: str | None = None
    n_pairs: int = 20
    pairs_csv: str | None = None
    stages: str = "collect,grade,evaluate,attention,patching,report"
    batch_size: int | None = None
    max_new_tokens: int | None = None
    top_k: int = 10
    quiet: bool = False


def register(sub: argparse._SubParsersAction) -> None:
    from thinklens.pipeline import STAGES

    d = RunArgs()
    p = sub.add_parser(
        "run", help="run the whole study (evaluation, Reasoning-Focus Heads, patching) and write report.html",
        description="Collect traces with and without reasoning, grade and evaluate them, score answer->reasoning "
        "attention per head (Reasoning-Focus Heads), patch activations on contrastive pairs, and write "
        "DIR/results.json and a self-contained DIR/report.html. Rerunning the same command resumes: finished "
        "stages are skipped, partial ones continue.",
    )
    p.add_argument("--model", default=d.model, help="hub id, local directory or tiny-r1 (default: %(default)s)")
    p.add_argument("--dataset", default=d.dataset,
                   help="arithmetic (tiny-r1's task), math500, wildbench or a .jsonl file (default: %(default)s)")
    p.add_argument("--limit", type=int, default=d.limit, help="number of problems (default: %(default)s)")
    p.add_argument("--output", "-o", default=d.output, help="run directory (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed for problems, pairs and bootstraps")
    p.add_argument("--device", help="cuda, cuda:1, mps or cpu (default: best available)")
    p.add_argument("--dtype", help="fp32, bf16 or fp16 (default: bf16 on CUDA, fp32 on CPU)")
    p.add_argument("--device-map", help="passed to from_pretrained, e.g. auto to spread a large model over GPUs")
    p.add_argument("--n-pairs", type=int, default=d.n_pairs, help="contrastive pairs to patch (0: skip patching)")
    p.add_argument("--pairs-csv", help="the paper's contrastive QA pairs CSV (patching for models other than tiny-r1)")
    p.add_argument("--stages", default=d.stages, help=f"comma-separated subset of {','.join(STAGES)}")
    p.add_argument("--batch-size", type=int, help="generation batch size (default: 64 for tiny-r1, else 16)")
    p.add_argument("--max-new-tokens", type=int, help="generation budget (default: 256 for tiny-r1, else 2048)")
    p.add_argument("--top-k", type=int, default=d.top_k, help="Reasoning-Focus Heads to report")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from thinklens.pipeline import RunConfig
    from thinklens.pipeline import run as run_pipeline

    args = to_dataclass(RunArgs, ns)
    fields = {k: v for k, v in vars(args).items() if k != "quiet"}
    result = run_pipeline(RunConfig(**fields), progress=not args.quiet)
    print_json({"output": str(result.output), "report": str(result.report) if result.report else None,
                "evaluation": result.results.get("evaluation"), "heads_top": result.results.get("heads", {})
                .get("top", [])[:5], "patching": {k: v for k, v in result.results.get("patching", {}).items()
                                                   if k != "pairs"}, "timings": result.results.get("timings"),
                "notes": result.notes})
    return 0

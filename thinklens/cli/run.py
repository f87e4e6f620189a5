"""``thinklens run``: the whole study in one command; its flags are the fields of :class:`thinklens.RunConfig`."""
from __future__ import annotations

import argparse

from thinklens.cli.common import add_quiet, print_json


def register(sub: argparse._SubParsersAction) -> None:
    from thinklens.cli.flags import add_config, parent
    from thinklens.empirical.backends.openai import ServerSettings
    from thinklens.empirical.settings import GenerationSettings
    from thinklens.faithfulness.config import FaithfulnessConfig
    from thinklens.models import ModelOptions
    from thinklens.rundir import RunConfig
    from thinklens.stages.registry import STAGES
    from thinklens.steps.results import StepsConfig

    p = sub.add_parser(
        "run", parents=[parent(ModelOptions), parent(GenerationSettings, skip=("seed",)), parent(ServerSettings),
                        parent(StepsConfig, skip=("seed", "top_k")),  # both are the run's own (--seed, --top-k)
                        parent(FaithfulnessConfig, skip=("seed",))],
        help="run the whole study (evaluation, Reasoning-Focus Heads, patching, ...) and write report.html",
        description="Stages: " + "; ".join(f"{s.name}: {s.doc}" for s in STAGES) + ". Writes DIR/results.json and "
        "a self-contained DIR/report.html. Rerunning the same command resumes: finished stages are skipped, partial "
        "ones continue; a stage whose settings changed reruns.",
    )
    add_config(p, RunConfig, nested=False)
    add_quiet(p)
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from thinklens.cli.flags import build
    from thinklens.pipeline import run as run_pipeline
    from thinklens.rundir import RunConfig

    result = run_pipeline(build(RunConfig, ns), progress=not ns.quiet)
    print_json({"output": str(result.output), "report": str(result.report) if result.report else None,
                "evaluation": result.results.get("evaluation"),
                "heads_top": (result.results.get("heads") or {}).get("top", [])[:5],
                "patching": result.results.get("patching"), "timings": result.results.get("timings"),
                "notes": result.notes})
    return 0

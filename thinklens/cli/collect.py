"""``thinklens collect``: generate traces with or without reasoning into a resumable JSONL file."""
from __future__ import annotations

import argparse
import sys

from thinklens.cli.common import add_quiet, print_json


def register(sub: argparse._SubParsersAction) -> None:
    from thinklens.cli.flags import parent
    from thinklens.empirical.backends.openai import ServerSettings
    from thinklens.empirical.settings import GenerationSettings
    from thinklens.models import ModelOptions

    p = sub.add_parser(
        "collect", parents=[parent(ModelOptions, required=("name",)), parent(GenerationSettings),
                            parent(ServerSettings)],
        help="generate traces with or without reasoning (stage 1)",
        description="Generate one trace per problem and append it to OUTPUT (JSONL). --reasoning without forces R1's "
        "finished thinking ('<think>\\nOkay, I think I have finished thinking.\\n</think>') so the model answers "
        "directly. Rerunning with the same OUTPUT skips problems already written (resume after a crash). Defaults "
        "left open (budget, batch, math instruction) come from the model family and the dataset, as in "
        "`thinklens run`.",
    )
    p.add_argument("--dataset", required=True, help="math500, wildbench, arithmetic (tiny-r1's task) or a .jsonl file")
    p.add_argument("--dataset-file", help="local JSONL copy of a named dataset (problem, answer, id/unique_id)")
    p.add_argument("--reasoning", required=True, choices=["with", "without"])
    p.add_argument("--output", required=True, help="trace JSONL file (appended to; existing ids are skipped)")
    p.add_argument("--limit", type=int, help="only the first N problems")
    add_quiet(p)
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    from thinklens.cli.flags import build
    from thinklens.empirical.backends.openai import ServerSettings
    from thinklens.empirical.collect import collect_dataset
    from thinklens.empirical.settings import GenerationSettings
    from thinklens.errors import ThinklensError
    from thinklens.models import ModelOptions

    model, settings, server = build(ModelOptions, ns), build(GenerationSettings, ns), build(ServerSettings, ns)
    if settings.backend == "openai":
        from thinklens.empirical.collect_server import collect_server_dataset

        summary = collect_server_dataset(
            ns.dataset, reasoning=ns.reasoning, output=ns.output, server=server.for_model(model.name),
            settings=settings, dataset_file=ns.dataset_file, limit=ns.limit, profile=model.profile,
            model_name=model.name, progress=not ns.quiet)
    elif server.is_set:
        raise ThinklensError("--base-url and the other server options are for --backend openai")
    else:
        summary = collect_dataset(
            model.name, ns.dataset, reasoning=ns.reasoning, output=ns.output, settings=settings,
            dataset_file=ns.dataset_file, limit=ns.limit, device=model.device, dtype=model.dtype,
            profile=model.profile, device_map=model.device_map, progress=not ns.quiet)
    for err in summary.errors:
        print(err, file=sys.stderr)
    for warning in summary.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if summary.n_failed:
        print(f"{summary.n_failed} request(s) failed after their retries and were written as error records: rerun "
              "the same command to retry them", file=sys.stderr)
    print_json(summary.to_dict())
    return 0

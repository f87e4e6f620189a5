"""``thinklens faithfulness``: does the reasoning say when a hint moved the answer, and which path did the hint take?"""
from __future__ import annotations

import argparse

from thinklens.cli.common import add_quiet, print_json


def register(sub: argparse._SubParsersAction) -> None:
    from thinklens.cli.flags import add_config, parent
    from thinklens.empirical.backends.openai import ServerSettings
    from thinklens.empirical.settings import GenerationSettings
    from thinklens.faithfulness.config import FaithfulnessConfig
    from thinklens.models import ModelOptions

    p = sub.add_parser(
        "faithfulness", parents=[parent(ModelOptions, required=("name",)),
                                 parent(GenerationSettings, skip=("temperature", "seed")), parent(ServerSettings)],
        help="hinted twins of each problem: hint-taking, verbalization (faithfulness score) and the hint's path",
        description="Give each of the first N problems with a gold answer hinted twins, one per hint family (Chen et "
        "al. 2025: an authority's answer, an <answer> field in question metadata, an answer the model is told it "
        "gave earlier), pointing at a seeded wrong answer X; generate the problem and its twins with reasoning, "
        "sampled at --faithfulness-temperature. A pair takes the hint when the hinted answer is X and the unhinted "
        "one is not; it verbalizes the hint when its reasoning acknowledges it (a rule-based detector, and an LLM "
        "judge with --judge-url/--judge-model). Per family: hint-taking rate, faithfulness score (verbalizing share "
        "of hint-taking pairs) with bootstrap 95% CIs and Chen et al.'s normalization for random answer changes; "
        "then the mechanism on the hinted traces: answer->hint vs answer->reasoning attention per head, hint "
        "suppression (answer scope vs total scope), patching at the hint span, by faithful vs unfaithful. Writes "
        "DIR/traces/{unhinted,hinted}.jsonl, DIR/pairs.jsonl, DIR/summary.json, DIR/mechanism/. Resumable.")
    p.add_argument("--dataset", required=True, help="arithmetic (tiny-r1's task), math500 or a .jsonl file with "
                   "gold answers")
    p.add_argument("--dataset-file", help="local JSONL copy of a named dataset (problem, answer, id/unique_id)")
    p.add_argument("--output", required=True, help="output directory (a rerun resumes it)")
    p.add_argument("--limit", type=int, metavar="N", help="problems that get hinted twins (default: the model "
                   "profile's faithfulness_problems; required for models whose profile says 0)")
    add_config(p.add_argument_group("faithfulness"), FaithfulnessConfig, skip=("faithfulness_problems",))
    p.add_argument("--rfh", nargs="*", default=[], metavar="L:H", help="Reasoning-Focus Heads to mark in the "
                   "mechanism summary, e.g. 1:2 2:6")
    p.add_argument("--rfh-scores", metavar="PATH", help="rank the RFHs (top 10) from a head_scores.npz")
    add_quiet(p)
    p.set_defaults(func=run)


def run(ns: argparse.Namespace) -> int:
    import sys
    from dataclasses import replace

    from thinklens.cli.flags import build
    from thinklens.cli.steps import parse_head
    from thinklens.empirical.backends.openai import ServerSettings
    from thinklens.empirical.datasets import dataset_spec, load_problems
    from thinklens.empirical.settings import GenerationSettings
    from thinklens.errors import ThinklensError
    from thinklens.faithfulness.config import FaithfulnessConfig
    from thinklens.faithfulness.run import local_generator, run_faithfulness, server_generator, study_settings
    from thinklens.models import ModelOptions, load_tokenizer
    from thinklens.profiles import get_profile

    cfg = build(FaithfulnessConfig, ns, faithfulness_problems=ns.limit)  # bad hint specs fail here, before loading
    options, server = build(ModelOptions, ns), build(ServerSettings, ns)
    settings = build(GenerationSettings, ns)
    rfh = [parse_head(h) for h in ns.rfh] or None
    if rfh is None and ns.rfh_scores:
        from thinklens.attention.heads import rank_heads
        from thinklens.attention.segments import HeadScores

        rfh = rank_heads(HeadScores.load(ns.rfh_scores), "a2r", 10, n_bootstrap=0).pairs()
    loaded, backend = None, None
    if settings.backend == "openai":
        server = server.for_model(options.name)
        profile = get_profile(options.profile) if options.profile else get_profile(server.tokenizer or options.name)
        tokenizer = load_tokenizer(server.tokenizer) if server.tokenizer else None
        if server.tokenizer and cfg.hint_mechanism:
            loaded = replace(options, name=server.tokenizer).load()
    elif server.is_set:
        raise ThinklensError("--base-url and the other server options are for --backend openai")
    else:
        loaded = options.load()
        profile = loaded.profile
        if settings.backend == "vllm":
            from thinklens.empirical.backends.vllm import vllm_backend

            backend = vllm_backend(options.name, loaded.tokenizer, dtype=options.dtype, seed=cfg.seed)
    cfg = cfg.resolved(profile)
    if not cfg.faithfulness_problems:
        raise ThinklensError(f"the {profile.name} profile gives faithfulness no problems: pass --limit N")
    errors: list[str] = []
    problems = load_problems(ns.dataset, ns.dataset_file, limit=cfg.faithfulness_problems, seed=cfg.seed, errors=errors)
    for e in errors:
        print(f"skipped {e}", file=sys.stderr)
    gen_settings = study_settings(settings, cfg, profile, ns.dataset)
    if settings.backend == "openai":
        generate = server_generator(server, gen_settings, tokenizer=tokenizer, profile=profile,
                                    model_name=options.name, progress=not ns.quiet)
    else:
        generate = local_generator(loaded, gen_settings, model_name=options.name, backend=backend,
                                   progress=not ns.quiet)
    res = run_faithfulness(problems, cfg, ns.output, generate=generate, profile=profile, loaded=loaded,
                           answer_range=dataset_spec(ns.dataset).answer_range, rfh=rfh,
                           log=None if ns.quiet else (lambda m: print(m, file=sys.stderr)),
                           warn=lambda m: print(m, file=sys.stderr), generation=gen_settings.to_dict())
    print_json({"output": ns.output, "families": res.table(), "notes": res.summary.get("notes"),
                "mechanism": res.summary.get("mechanism")})
    return 0

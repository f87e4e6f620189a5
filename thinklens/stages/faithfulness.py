"""The faithfulness stage of a run: hinted twins of the dataset's first N problems, hint-taking and verbalization per
hint family, and the hint's path to the answer (:mod:`thinklens.faithfulness`), under ``RUN/faithfulness/``.

On when the model profile gives it problems (``faithfulness_problems``: the organism) or ``--faithfulness-problems
N`` asks; otherwise skipped with a note saying how to turn it on. Generation goes where the run's goes (transformers,
vLLM, or the run's server); the mechanism marks the run's Reasoning-Focus Heads.
"""
from __future__ import annotations

from typing import Any

from thinklens.options import command, to_argv
from thinklens.rundir import RunConfig, RunPaths
from thinklens.stages.context import StageContext, model_argv, ranked_heads, run_profile


def faithfulness_config(c: RunConfig) -> Any:
    """The run's faithfulness settings with the profile's problem count and temperature where none was given.

    >>> import thinklens as tl
    >>> cfg = faithfulness_config(tl.RunConfig(output="/tmp/tl_doc_run"))  # tiny-r1: on
    >>> cfg.faithfulness_problems > 0, cfg.faithfulness_temperature
    (True, 0.6)
    """
    return c.faithfulness.resolved(run_profile(c))


def faithfulness(ctx: StageContext) -> dict[str, Any]:
    from thinklens.empirical.datasets import dataset_spec, load_problems
    from thinklens.faithfulness.run import local_generator, run_faithfulness, server_generator, study_settings

    c, p = ctx.config, ctx.paths
    cfg = faithfulness_config(c)
    if not cfg.faithfulness_problems:
        return {"status": "skipped", "note": f"off for the {run_profile(c).name} profile (faithfulness_problems 0); "
                "--faithfulness-problems N turns it on"}
    errors: list[str] = []
    problems = load_problems(c.dataset, limit=cfg.faithfulness_problems, seed=c.seed, errors=errors)
    for e in errors:
        ctx.warn(f"skipped {e}")
    if not any(q.get("answer") is not None for q in problems):
        return {"status": "skipped", "note": f"{c.dataset} has no gold answers: hint-taking is a change of answer to "
                "a wrong one, so faithfulness needs them"}
    gen_settings = study_settings(c.generation, cfg, run_profile(c), c.dataset)
    if c.generation.backend == "openai":
        from thinklens.models import load_tokenizer

        profile = run_profile(c)
        loaded = ctx.model() if c.server.tokenizer and cfg.hint_mechanism else None
        tokenizer = loaded.tokenizer if loaded is not None else (
            load_tokenizer(c.server.tokenizer) if c.server.tokenizer else None)
        generate = server_generator(c.server, gen_settings,
                                    tokenizer=tokenizer, profile=profile, model_name=c.model.name,
                                    progress=ctx.show_progress)
    else:
        loaded = ctx.model()
        profile = loaded.profile
        gen_settings = study_settings(c.generation, cfg, profile, c.dataset)
        generate = local_generator(loaded, gen_settings,
                                   model_name=c.model.name, backend=ctx.backend(), progress=ctx.show_progress)
    res = run_faithfulness(problems, cfg, p.faithfulness_dir, generate=generate, profile=profile, loaded=loaded,
                           answer_range=dataset_spec(c.dataset).answer_range, rfh=ranked_heads(p, c.top_k) or None,
                           log=ctx.log, warn=ctx.warn, generation=gen_settings.to_dict())
    overall = res.summary.get("overall") or {}
    out: dict[str, Any] = {"n_pairs": overall.get("n_pairs"), "n_hint_taken": overall.get("n_hint_taken"),
                           "hint_taking": (overall.get("hint_taking") or {}).get("rate"),
                           "faithfulness_score": (overall.get("faithfulness_score") or {}).get("rate")}
    if res.summary.get("notes"):
        out["note"] = "; ".join(res.summary["notes"])
    return out


def faithfulness_command(c: RunConfig, p: RunPaths) -> list[str]:
    cfg = faithfulness_config(c)
    if not cfg.faithfulness_problems:
        return []
    gen = to_argv(c.generation, skip=("seed", "temperature"))
    return [command("faithfulness", *model_argv(c), "--dataset", c.dataset, "--output", p.faithfulness_dir,
                    "--limit", cfg.faithfulness_problems, *to_argv(cfg, skip=("faithfulness_problems", "seed")),
                    "--seed", c.seed, *gen, *to_argv(c.server), "--rfh-scores", p.head_scores)]

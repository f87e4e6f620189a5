"""Stage 1 of a run: collect traces with and without reasoning, grade them, evaluate the paired difference."""
from __future__ import annotations

from typing import Any

from thinklens.errors import ThinklensError
from thinklens.options import command, to_argv
from thinklens.rundir import RunConfig, RunPaths
from thinklens.stages.context import StageContext, model_argv

MODES = ("with", "without")


def _paths(paths: RunPaths, kind: str) -> dict[str, Any]:
    return {mode: paths[f"{kind}_{mode}"] for mode in MODES}


def collect(ctx: StageContext) -> dict[str, Any]:
    """Both runs of every problem; under torchrun each rank generates its share (a server backend: rank 0 alone)."""
    from thinklens import distributed
    from thinklens.empirical.collect import collect as collect_traces
    from thinklens.empirical.datasets import load_problems

    c = ctx.config
    errors: list[str] = []
    problems = load_problems(c.dataset, limit=c.limit, seed=c.seed, errors=errors)
    for e in errors if distributed.world().is_main else ():  # every rank reads the problems: rank 0 reports
        ctx.warn(f"skipped {e}")
    out: dict[str, Any] = {"n_problems": len(problems), "bad_problems": len(errors)}
    for mode, path in _paths(ctx.paths, "traces").items():
        if c.generation.backend == "openai":
            s = distributed.on_main(_collect_on_server, c, problems, mode, path, ctx.show_progress)
        else:
            loaded = ctx.model()
            s = collect_traces(loaded, problems, reasoning=mode, output=path,
                               settings=c.generation.resolved(loaded.profile, c.dataset), model_name=c.model.name,
                               backend=ctx.backend(), progress=ctx.show_progress)
        for line in s.errors + [f"warning: {w}" for w in s.warnings]:
            ctx.warn(line)
        out[mode] = {"n_written": s.n_written, "n_finished": s.n_finished, "n_failed": s.n_failed,
                     "n_forced_close": s.n_forced_close,
                     "seconds": round(s.seconds, 2), "resume": s.resume.to_dict() if s.resume else None}
        if c.generation.backend != "openai":  # counts of all ranks (rank 0 keeps the run state)
            out[mode] = distributed.combine(out[mode], total=("n_written", "n_finished", "n_failed"),
                                            longest=("seconds",)) or out[mode]
        if s.n_failed:  # not finished: a rerun retries the failed requests
            raise ThinklensError(f"{s.n_failed} request(s) to {c.server.base_url} failed after their retries (written "
                                 f"to {path} as error records): rerun the same command to retry them")
    return out


def _collect_on_server(c: RunConfig, problems: list[dict[str, Any]], mode: str, path: Any, progress: bool) -> Any:
    from thinklens.empirical.collect_server import collect_server
    from thinklens.models import load_tokenizer
    from thinklens.profiles import get_profile

    tokenizer = load_tokenizer(c.server.tokenizer) if c.server.tokenizer else None
    profile = get_profile(c.model.profile) if c.model.profile else get_profile(c.server.tokenizer or c.model.name)
    return collect_server(problems, reasoning=mode, output=path, server=c.server,
                          settings=c.generation.resolved(profile, c.dataset), tokenizer=tokenizer, profile=profile,
                          model_name=c.model.name, progress=progress)


def collect_command(c: RunConfig, p: RunPaths) -> list[str]:
    base = ["collect", *model_argv(c), "--dataset", c.dataset, "--limit", str(c.limit), "--seed", str(c.seed),
            *command_argv_generation(c), *to_argv(c.server)]
    return [command(*base, "--reasoning", mode, "--output", str(path)) for mode, path in _paths(p, "traces").items()]


def grade(ctx: StageContext) -> dict[str, Any]:
    from thinklens.empirical.grading import grade_file

    out = {}
    for (mode, src), dst in zip(_paths(ctx.paths, "traces").items(), _paths(ctx.paths, "graded").values()):
        if not src.exists():
            raise ThinklensError(f"{src} not found: run the collect stage first")
        summary = grade_file(str(src), str(dst), progress=ctx.show_progress)
        for line in summary.bad_lines or []:
            ctx.warn(line)
        out[mode] = summary.to_dict()
    return out


def grade_command(c: RunConfig, p: RunPaths) -> list[str]:
    return [command("grade", str(src), "--output", str(dst))
            for src, dst in zip(_paths(p, "traces").values(), _paths(p, "graded").values())]


def evaluate(ctx: StageContext) -> dict[str, Any]:
    from thinklens.empirical.evaluate import evaluate_files

    c, p = ctx.config, ctx.paths
    errors: list[str] = []
    try:
        result = evaluate_files(list(_paths(p, "graded").values()), seed=c.seed, errors=errors,
                                min_usable=c.min_usable)
    except ThinklensError as err:  # too few usable pairs: the advice names generation options, fixed at collect
        if "usable with/without pair" not in str(err):
            raise
        raise ThinklensError(f"{err} (with other generation options, use a new --output: a run directory keeps the "
                             "settings its traces were generated with)") from None
    for e in errors:
        ctx.warn(f"skipped {e}")
    result.save(p.evaluation_dir)  # evaluation.json + evaluation.npz
    return {"n": {m: e.n for m, e in result.models.items()}, "bad_lines": len(errors)}


def evaluate_command(c: RunConfig, p: RunPaths) -> list[str]:
    return [command("evaluate", *map(str, _paths(p, "graded").values()), "--save", str(p.evaluation_dir),
                    "--seed", str(c.seed), "--min-usable", str(c.min_usable))]


def command_argv_generation(c: RunConfig) -> list[str]:
    return to_argv(c.generation, skip=("seed",))

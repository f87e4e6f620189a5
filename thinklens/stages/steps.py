"""The steps stage of a run: which reasoning steps the answer uses, by attention (the run's Reasoning-Focus Heads),
attention suppression (total and answer-only), early answering and counterfactual resampling, on the run's own
with-reasoning traces."""
from __future__ import annotations

import dataclasses
from typing import Any

from thinklens.errors import ThinklensError
from thinklens.options import command, to_argv
from thinklens.rundir import RunConfig, RunPaths
from thinklens.stages.context import StageContext, model_argv, ranked_heads


def steps_config(c: RunConfig) -> Any:
    """The run's steps settings, with the dataset's receiver-head proximity where none was given."""
    from thinklens.empirical.datasets import dataset_spec

    spec = dataset_spec(c.dataset)
    cfg = c.steps
    if cfg.proximity is None and spec.steps_proximity is not None:
        cfg = dataclasses.replace(cfg, proximity=spec.steps_proximity)
    if cfg.resampling_traces is None:
        cfg = dataclasses.replace(cfg, resampling_traces=spec.steps_resampling_traces)
    if cfg.resampling_temperature is None and spec.steps_resampling_temperature is not None:
        cfg = dataclasses.replace(cfg, resampling_temperature=spec.steps_resampling_temperature)
    return cfg


def steps(ctx: StageContext) -> dict[str, Any]:
    from thinklens.steps.run import run_steps

    c, p = ctx.config, ctx.paths
    if not p.traces_with.exists():
        raise ThinklensError(f"{p.traces_with} not found: run the collect stage first")
    cfg = steps_config(c)
    _start_over_if_changed(ctx, cfg)
    m = ctx.model()
    backend = ctx.backend() if cfg.resampling_traces and "resampling" in cfg.methods else None
    res = run_steps(m.model, m.tokenizer, m.profile, p.traces_with, p.steps_dir, cfg, rfh=ranked_heads(p) or None,
                    model_name=c.model.name, progress=ctx.show_progress, backend=backend)
    from thinklens.report.step_view import write_step_view

    write_step_view(p.steps_dir, p.step_view)
    out = res.summary()
    notes = res.meta.get("notes") or []
    if notes:
        out["note"] = "; ".join(notes)
    return out


def _start_over_if_changed(ctx: StageContext, cfg: Any) -> None:
    """In a run the stage owns ``steps/``: results computed with other per-trace settings (methods, segmentation,
    rollouts, ...) are set aside as ``steps.old/`` and the stage starts over, as every stage whose settings changed
    does (the standalone ``thinklens steps`` refuses instead, so that nothing is lost silently)."""
    import json
    import shutil

    from thinklens.steps.results import StepsConfig
    from thinklens.steps.run import CONFIG_FILE

    saved = ctx.paths.steps_dir / CONFIG_FILE
    if not saved.exists():
        return
    try:
        old = StepsConfig.from_dict(json.loads(saved.read_text())).per_trace()
    except (OSError, ValueError, ThinklensError):
        old = None
    if old != cfg.per_trace():
        aside = ctx.paths.steps_dir.with_name(ctx.paths.steps_dir.name + ".old")
        shutil.rmtree(aside, ignore_errors=True)
        ctx.paths.steps_dir.rename(aside)
        ctx.log(f"steps settings changed: the earlier results are in {aside}; recomputing")


def steps_command(c: RunConfig, p: RunPaths) -> list[str]:
    cfg = steps_config(c)
    vllm = ["--backend", "vllm"] if c.generation.backend == "vllm" else []
    return [command("steps", *model_argv(c), "--traces", p.traces_with, "--output",
                    p.steps_dir, "--rfh-scores", p.head_scores, *to_argv(cfg, skip=("seed",)), "--seed", c.seed,
                    *vllm, "--figures")]

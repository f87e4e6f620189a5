"""The steps stage of a run: which reasoning steps the answer uses, by attention (the run's Reasoning-Focus Heads),
attention suppression (total and answer-only), early answering and counterfactual resampling, on the run's own
with-reasoning traces. Under torchrun every rank takes its share of the traces (:func:`thinklens.steps.run.run_steps`);
rank 0 sets old results aside, consolidates and draws the step view."""
from __future__ import annotations

import dataclasses
from typing import Any

from thinklens.errors import ThinklensError
from thinklens.options import command, to_argv
from thinklens.rundir import RunConfig, RunPaths
from thinklens.stages.context import StageContext, model_argv, ranked_heads, run_profile


def steps_config(c: RunConfig) -> Any:
    """The run's steps settings: the dataset's receiver-head proximity, and the model profile's resampling (how
    many traces, temperature, rollout length) where none was given.

    >>> import thinklens as tl
    >>> cfg = steps_config(tl.RunConfig(output="/tmp/tl_doc_run"))  # tiny-r1 on arithmetic
    >>> cfg.resampling_traces, cfg.resampling_temperature, cfg.max_rollout_tokens
    (10, 2.0, 1024)
    """
    from thinklens.empirical.datasets import dataset_spec
    from thinklens.steps.results import with_profile_defaults

    spec = dataset_spec(c.dataset)
    cfg = c.steps
    if cfg.proximity is None and spec.steps_proximity is not None:
        cfg = dataclasses.replace(cfg, proximity=spec.steps_proximity)
    profile = run_profile(c)
    if cfg.resampling_traces is None:
        cfg = dataclasses.replace(cfg, resampling_traces=profile.resampling_traces)
    return with_profile_defaults(cfg, profile)


def steps(ctx: StageContext) -> dict[str, Any]:
    from thinklens import distributed
    from thinklens.steps.run import run_steps

    c, p = ctx.config, ctx.paths
    if not p.traces_with.exists():
        raise ThinklensError(f"{p.traces_with} not found: run the collect stage first")
    cfg = steps_config(c)
    distributed.on_main(_start_over_if_changed, ctx, cfg, share=False)
    m = ctx.model()
    backend = ctx.backend() if cfg.resampling_traces and "resampling" in cfg.methods else None
    res = run_steps(m.model, m.tokenizer, m.profile, p.traces_with, p.steps_dir, cfg, rfh=ranked_heads(p) or None,
                    model_name=c.model.name, progress=ctx.show_progress, backend=backend or _server_backend(c, m))
    from thinklens.report.step_view import write_step_view

    distributed.on_main(write_step_view, p.steps_dir, p.step_view, share=False)
    out = res.summary()
    notes = res.meta.get("notes") or []
    if notes:
        out["note"] = "; ".join(notes)
    return out


def _server_backend(c: RunConfig, m: Any) -> Any:
    """When the run generates on a server, resampling's rollouts go there too (``--concurrency`` requests in flight,
    a trace's cut points together for the server's prefix cache); else None (local, with prefix caching)."""
    if c.generation.backend != "openai":
        return None
    from thinklens.empirical.backends.openai import OpenAIBackend
    from thinklens.empirical.backends.server_ids import ServerIdsBackend

    client = OpenAIBackend(c.server, think_open=m.profile.think_open, think_close=m.profile.think_close,
                           eos=getattr(m.tokenizer, "eos_token", None) or m.profile.eos_token)
    return ServerIdsBackend(client, m.tokenizer, c.server.concurrency)


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

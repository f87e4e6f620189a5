"""The stages of ``thinklens run``, one record each: what it runs, what it reads and writes, which settings it
depends on, and the standalone commands that do the same.

Why a registry: ``thinklens run``, ``--stages``, resuming and the report's "reproduce" commands are all derived from
these records, so none of them keeps its own copy of what a stage does. Adding a stage means adding one module with
its function and its command, and one record here::

    >>> [s.name for s in STAGES][:3]
    ['collect', 'grade', 'evaluate']
    >>> stage("heads").reads
    ('top_k', 'n_bootstrap')
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from thinklens.errors import ThinklensError
from thinklens.options import command
from thinklens.rundir import LAYOUT, RunConfig, RunPaths
from thinklens.stages import attention, empirical, faithfulness, heads_causal, patching, steps
from thinklens.stages.context import StageContext


@dataclass(frozen=True)
class Stage:
    """One stage of a run.

    ``inputs``/``outputs`` name files of :data:`thinklens.rundir.LAYOUT`; a stage is finished when its outputs exist
    and the settings it ``reads`` are those it ran with (otherwise it reruns: every option takes effect).
    ``run(ctx)`` returns ``{"status": "done"|"skipped", "note"?: str, **summary}``; ``command(config, paths)`` the
    standalone commands that reproduce its files. ``parallel`` stages run on every rank of a torchrun launch and
    share their items (:mod:`thinklens.distributed`); the others run on rank 0 while the other ranks wait."""

    name: str
    run: Callable[[StageContext], dict[str, Any]]
    command: Callable[[RunConfig, RunPaths], list[str]]
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()  # RunConfig fields beyond its identity that change this stage's outputs
    doc: str = ""
    parallel: bool = False  # under torchrun its items are shared among the ranks; otherwise rank 0 runs it alone

    def __post_init__(self) -> None:
        unknown = [f for f in self.inputs + self.outputs if f not in LAYOUT]
        if unknown:
            raise ThinklensError(f"stage {self.name}: {unknown} are not files of the run layout")

    def settings(self, config: RunConfig) -> dict[str, Any]:
        """The values of the settings this stage reads, as JSON (kept in ``run_state.json``)."""
        import dataclasses

        def plain(v: Any) -> Any:
            if dataclasses.is_dataclass(v):
                v = dataclasses.asdict(v)
            return [plain(x) for x in v] if isinstance(v, (list, tuple)) else (
                {k: plain(x) for k, x in v.items()} if isinstance(v, dict) else v)

        return {k: plain(getattr(config, k)) for k in self.reads}


def _report(ctx: StageContext) -> dict[str, Any]:
    from thinklens.report.html import render_report

    return {"report": str(render_report(ctx.paths.root, commands(ctx.config)))}


def _report_command(c: RunConfig, p: RunPaths) -> list[str]:
    return [command("report", p.root)]


STAGES: tuple[Stage, ...] = (
    Stage("collect", empirical.collect, empirical.collect_command, (), ("traces_with", "traces_without"),
          doc="generate every problem with and without reasoning", parallel=True),
    Stage("grade", empirical.grade, empirical.grade_command, ("traces_with", "traces_without"),
          ("graded_with", "graded_without"), doc="extract and grade the answers"),
    Stage("evaluate", empirical.evaluate, empirical.evaluate_command, ("graded_with", "graded_without"),
          ("evaluation",), reads=("min_usable",), doc="paired accuracy with vs without reasoning"),
    Stage("attention", attention.attention, attention.attention_command, ("traces_with",), ("head_scores",),
          doc="answer→reasoning attention per (layer, head)", parallel=True),
    Stage("heads", attention.heads, attention.heads_command, ("head_scores",), ("heads",),
          reads=("top_k", "n_bootstrap", "retrieval_lengths"),
          doc="Reasoning-Focus Heads, cue statistics, induction and retrieval overlaps", parallel=True),
    Stage("ablation", heads_causal.ablation, heads_causal.ablation_command, ("head_scores",), ("ablation",),
          doc="the causal test: accuracy with the top RFHs ablated vs random heads of their layers", parallel=True),
    Stage("debugging", heads_causal.debugging, heads_causal.debugging_command, ("graded_with", "heads"), ("debug",),
          reads=("steps",), doc="failure debugging: the reasoning steps the RFHs read in incorrect traces",
          parallel=True),
    Stage("patching", patching.patching, patching.patching_command, (), ("patching_result",),
          doc="activation patching on contrastive pairs", parallel=True),
    Stage("steps", steps.steps, steps.steps_command, ("traces_with", "heads"), ("steps",), reads=("steps", "top_k"),
          doc="which reasoning steps the answer uses (step attention, suppression, answer suppression, early "
              "answering, resampling)", parallel=True),
    Stage("faithfulness", faithfulness.faithfulness, faithfulness.faithfulness_command, ("heads",),
          ("faithfulness_summary",), reads=("faithfulness", "top_k"),
          doc="hinted twins: hint-taking, whether the reasoning says so (faithfulness score) and the hint's path to "
              "the answer"),
    Stage("report", _report, _report_command, ("evaluation", "heads", "ablation", "debug", "patching_result", "steps",
                                                "faithfulness_summary"),
          ("report",),
          doc="figures and the self-contained report"),
)


def stage_names() -> list[str]:
    return [s.name for s in STAGES]


def stage(name: str) -> Stage:
    for s in STAGES:
        if s.name == name:
            return s
    raise ThinklensError(f"unknown stage {name!r}; choose from {','.join(stage_names())}")


def commands(config: RunConfig) -> dict[str, str]:
    """The standalone commands equivalent to each stage of this run (one string per stage, newline-separated),
    plus the ``run`` command itself (shown in the report)."""
    from thinklens.options import to_argv

    paths = RunPaths(config.output)
    out = {s.name: "\n".join(s.command(config, paths)) for s in STAGES}
    out["run"] = command("run", *to_argv(config, skip=("stages",), always=("output",)))
    return {k: v for k, v in out.items() if v}

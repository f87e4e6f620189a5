"""The main job: ``thinklens run`` chains every stage of Zhang et al. (EMNLP 2025) into one resumable run.

The method, stage by stage (each stage reads the previous stages' files and writes its own under the run directory,
so any stage can be rerun alone, from the CLI or from Python; the stages and their files are listed once, in
:mod:`thinklens.stages.registry`):

1. **collect** — generate each problem twice: *with* reasoning (the model thinks freely) and *without* (R1's forced
   finished thinking ``<think>\\nOkay, I think I have finished thinking.\\n</think>``).
2. **grade** — extract the final answer and compare it with the gold answer.
3. **evaluate** — accuracy with vs without reasoning, paired by problem id (McNemar p, bootstrap CI of the gap).
   *Finding 1: reasoning helps.*
4. **attention** / **heads** — for every with-reasoning trace, attention from answer tokens to reasoning tokens per
   (layer, head); the heads that focus on the reasoning most, stably across traces, are the Reasoning-Focus Heads.
   *Finding 2: RFHs exist.*
5. **patching** — on contrastive pairs, patch clean activations into the corrupted run per layer and token and score
   the normalized logit difference (NLD). *Finding 3: patching the reasoning's answer token flips the answer.*
6. **report** — figures and a self-contained ``report.html``; ``results.json`` holds the headline numbers.

Resuming: ``run_state.json`` records which stages finished, with the settings they read; a rerun skips a finished
stage whose files are still there and whose settings are unchanged, reruns it otherwise (so every option takes
effect), reruns the stages that read a rerun stage's files, and lets partial stages resume from what they wrote.

Several GPUs and nodes (``torchrun --nproc-per-node N -m thinklens run ...``): every rank loads the model on its own
device; the stages that run the model (collect, attention, heads' induction and retrieval tests, ablation,
debugging, patching, steps) share their items among the ranks (:mod:`thinklens.distributed`), the others (grade,
evaluate, report) run on rank 0 while the rest wait, and rank 0 alone writes the run's state and results.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thinklens.errors import ThinklensError
from thinklens.jsonl import write_json
from thinklens.rundir import RunConfig, RunPaths, bind_config, load_config, load_state, read_json
from thinklens.stages.context import StageContext
from thinklens.stages.registry import STAGES, commands, stage_names


@dataclass
class RunResult:
    """What :func:`run` returns: the run directory, the headline numbers and per-stage outcomes.

    >>> import thinklens as tl
    >>> r = tl.RunResult.load("runs/tiny")  # doctest: +SKIP
    >>> r.results["evaluation"]["tiny-r1"]["accuracy_with_reasoning"]  # doctest: +SKIP
    0.97
    """

    output: Path
    results: dict[str, Any]
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {status, seconds, summary|note}
    report: Path | None = None

    @property
    def notes(self) -> list[str]:
        return [f"{k}: {v['note']}" for k, v in self.stages.items() if v.get("note")]

    @classmethod
    def load(cls, directory: str | Path) -> RunResult:
        """The result of a finished (or partial) run, from its directory; no model needed."""
        paths = RunPaths(directory)
        results = read_json(paths.results)
        if results is None:
            raise ThinklensError(f"{paths.results} not found: run `thinklens run --output {directory}` first")
        return cls(output=paths.root, results=results, stages=load_state(paths),
                   report=paths.report if paths.report.exists() else None)


def run(config: RunConfig, *, progress: bool = True) -> RunResult:
    """Run (or resume) the selected stages of ``config``; write ``results.json`` and ``report.html``.

    A stage that cannot run for this model/dataset (e.g. patching without pairs) is skipped with a note that ends up
    in ``results.json`` and the report::

        >>> import thinklens as tl
        >>> r = tl.run(tl.RunConfig(limit=8, n_pairs=2, output="/tmp/tl_doc_run8"), progress=False)  # doctest: +SKIP
    """
    from thinklens import distributed

    world = distributed.world()
    progress = progress and world.is_main  # under torchrun, logs and bars come from rank 0
    names = stage_names()
    bad = [s for s in config.stages if s not in names]
    if bad:
        raise ThinklensError(f"unknown stage(s) {bad}; choose from {','.join(names)}")
    selected = [s for s in STAGES if not config.stages or s.name in config.stages]
    paths = RunPaths(config.output)
    paths.root.mkdir(parents=True, exist_ok=True)
    distributed.on_main(bind_config, config, paths, share=False)
    state = load_state(paths, warn=_warn if world.is_main else None)  # a damaged state file is set aside, said
    ctx = StageContext(config=config, paths=paths, show_progress=progress)
    rewritten: set[str] = set()  # files rewritten by stages run now: the stages that read them must rerun
    for i, st in enumerate(selected, start=1):
        ctx.label = f"[{i}/{len(selected)}] {st.name}"
        prev = state.get(st.name, {})
        settings = st.settings(config)
        finished = distributed.broadcast(  # rank 0 decides, so that every rank runs the same stages
            prev.get("status") in ("done", "skipped") and prev.get("settings", {}) == settings
            and all(paths[o].exists() for o in st.outputs) and not rewritten & set(st.inputs))
        if finished and st.name != "report":
            ctx.log(f"already done ({prev.get('seconds', 0):.1f}s), skipping")
            continue
        ctx.log("starting")
        t0 = time.perf_counter()
        with ctx.labelled_bars():
            outcome = st.run(ctx) if st.parallel else distributed.on_main(st.run, ctx)
        distributed.barrier()
        seconds = round(time.perf_counter() - t0, 2)
        state[st.name] = {"status": outcome.get("status", "done"), "seconds": seconds, "settings": settings,
                          "peak_rss_gb": peak_rss_gb(), **{k: v for k, v in outcome.items() if k != "status"}}
        if world.is_main:
            write_json(paths.state, state)
        rewritten |= set(st.outputs)
        ctx.log(f"{state[st.name]['status']} in {seconds:.1f}s" + (f" ({outcome['note']})" if outcome.get("note")
                                                                    else ""))
    ctx.close()
    results = distributed.on_main(_write_results, paths, config)
    return RunResult(output=paths.root, results=results, stages=state,
                     report=paths.report if paths.report.exists() else None)


def peak_rss_gb() -> float:
    """This process's peak resident memory so far, in GB: recorded with each stage, where a jump names the stage that
    needed it (a 1.5B run peaked at 21 GB of a 24 GB machine before this was kept).

    >>> peak_rss_gb() > 0
    True
    """
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (2**30 if sys.platform == "darwin" else 2**20), 2)


def _warn(message: str) -> None:
    import sys

    print(f"warning: {message}", file=sys.stderr)


def _write_results(paths: RunPaths, config: RunConfig) -> dict[str, Any]:
    from thinklens.results import headline_results

    results = headline_results(paths, config)
    write_json(paths.results, results)
    return results


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Redraw the figures and ``report.html`` of a run directory from its saved files (no model needed)::

        >>> import thinklens as tl
        >>> tl.build_report("runs/tiny")  # doctest: +SKIP
        PosixPath('runs/tiny/report.html')
    """
    from thinklens.report.html import render_report

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ThinklensError(f"no such run directory: {run_dir}")
    return render_report(run_dir, commands(load_config(run_dir)), out)


__all__ = ["RunConfig", "RunResult", "run", "build_report", "load_config"]

"""The recipes of the shipped organisms: ``tiny-r1`` (two stages, ``thinklens train-toy --output DIR``) and
``tiny-r1-hints`` (a third stage, ``thinklens train-toy --organism tiny-r1-hints --output DIR``).

Why a recipe: the shipped weights must be regenerable by one command, bitwise on the same machine and torch build.
Stage 1 trains from a fresh init; stage 2 continues from the stage-1 weights with final-line override examples (the
answer is read from the ``Final answer is N.`` line only). :func:`train_from_flags` is what the CLI calls.

Why ``tiny-r1-hints`` continues from the shipped tiny-r1 weights rather than repeating stages 1-2: its unhinted
behaviour must be tiny-r1's (the same data mix continues on the unhinted half, final-line overrides included, so the
answer still reads the probe line), the new skills (find the hint, copy X, a calibrated choice) are small next to
learning arithmetic, and the hint stages cost less than the two (CPU minutes on a shared machine). Three hint stages:
the first (unfaithful vs ignore a coin flip at the answer's digits) teaches finding and copying the hint; the second
adds the neutral opening line of unfaithful traces that the answer's choice needs (see :mod:`thinklens.toy.hinted`
for the measurement), the third (80% hinted prompts) makes the answer follow it (after the second, 22% of sampled
hinted answers were still neither X nor gold; after the third, 5%). The tiny-r1 weights it starts from are
themselves regenerable by the tiny-r1 recipe; ``--init-from`` names another base.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from thinklens.toy.config import HINTS_ORGANISM, HINTS_RECIPE, HINTS_THREADS, RECIPE, RECIPE_THREADS
from thinklens.toy.train import train


def train_recipe(output_dir: str | Path, stage: str | int = "all", init_from: str | Path | None = None,
                 stage1_dir: str | Path | None = None, stage_overrides: dict | None = None, eval_n: int = 200,
                 threads: int = RECIPE_THREADS, log=print, **overrides) -> dict:
    """Run the shipped two-stage :data:`RECIPE` (``stage="all"``) or one of its stages (``1`` or ``2``).

    ``stage="all"``: stage 1 into ``stage1_dir`` (a temporary directory, removed at the end, when None; its
    gates are skipped), then stage 2 from those weights into ``output_dir``. ``stage=2`` needs ``init_from``.
    ``stage_overrides`` change a single stage's recipe fields (only with ``stage`` 1 or 2); ``overrides`` are
    further :class:`TrainConfig` fields for every stage (e.g. ``steps=2, hidden_size=32`` for a smoke test).
    Returns the last stage's summary.
    """
    stage = str(stage)
    if stage not in ("all", "1", "2"):
        raise ValueError(f"stage must be 'all', 1 or 2, not {stage!r}")
    if stage == "all" and stage_overrides:
        raise ValueError("stage_overrides change one stage: use stage=1 or stage=2")
    if stage == "2" and not init_from:
        raise ValueError("stage 2 continues from stage-1 weights: pass init_from")
    if stage == "1" and init_from:
        raise ValueError("stage 1 starts from a fresh init: init_from is for stage 2")

    def run(i: int, out, init, n_eval: int) -> dict:
        kw = {**RECIPE[i], "threads": threads, **overrides, **(stage_overrides or {})}
        log(f"tiny-r1 recipe stage {i + 1}/{len(RECIPE)}: " + ", ".join(f"{k}={v}" for k, v in kw.items()))
        return train(out, eval_n=n_eval, init_from=str(init) if init else None, log=log, **kw)

    if stage == "1":
        return run(0, output_dir, None, eval_n)
    if stage == "2":
        return run(1, output_dir, init_from, eval_n)
    with tempfile.TemporaryDirectory(prefix="tiny-r1-stage1-") as tmp:
        first = Path(stage1_dir) if stage1_dir else Path(tmp)
        run(0, first, None, 0)
        return run(1, output_dir, first, eval_n)


def train_hints(output_dir: str | Path, init_from: str | Path | None = None, eval_n: int = 200,
                threads: int = HINTS_THREADS, log=print, **overrides) -> dict:
    """Train ``tiny-r1-hints``: the stages of :data:`HINTS_RECIPE` from ``init_from`` (default: the shipped tiny-r1),
    each from the previous one's weights (kept in a temporary directory), then the gates; a realized rate further
    than the tolerance from its trained value raises (after the model, its summary and card are written, so the
    failure can be inspected). ``overrides``: further TrainConfig fields for every stage."""
    from thinklens.toy import TINY_R1_DIR
    from thinklens.toy.hint_gates import check_hint_gates

    base = str(init_from or TINY_R1_DIR)
    with tempfile.TemporaryDirectory(prefix="tiny-r1-hints-") as tmp:
        for i, stage in enumerate(HINTS_RECIPE):
            last = i == len(HINTS_RECIPE) - 1
            kw = {**stage, "threads": threads, **overrides}
            log(f"tiny-r1-hints recipe stage {i + 1}/{len(HINTS_RECIPE)} from {base}: "
                + ", ".join(f"{k}={v}" for k, v in kw.items()))
            out = Path(output_dir) if last else Path(tmp) / f"stage{i + 1}"
            summary = train(out, eval_n=eval_n if last else 0, init_from=base, log=log, **kw)
            base = str(out)
    if "hint_gates" in summary:
        check_hint_gates(summary["hint_gates"])
    return summary


_STAGE_FLAGS = ("seed", "steps", "lr", "warmup_steps", "final_override_rate")


def train_from_flags(a: Any, error=None) -> dict:
    """Run what :func:`thinklens.cli.train_toy.add_arguments` parsed (any object with those attributes).

    ``error`` reports a bad flag combination (e.g. ``parser.error``); without it a ValueError is raised.
    """
    def fail(msg):
        if error:
            error(msg)
        raise ValueError(msg)

    single = {k: getattr(a, k) for k in _STAGE_FLAGS if getattr(a, k) is not None}
    log = lambda m: print(m, flush=True)  # noqa: E731
    common = {"batch_size": a.batch_size, "hidden_size": a.hidden_size,
              "intermediate_size": a.intermediate_size, "num_layers": a.num_layers}
    if getattr(a, "organism", "tiny-r1") == HINTS_ORGANISM:
        if a.stage != "all" or a.stage1_dir:
            fail(f"--organism {HINTS_ORGANISM} is one stage from tiny-r1's weights: drop --stage / --stage1-dir")
        try:
            return train_hints(a.output, init_from=a.init_from, eval_n=a.eval_n,
                               threads=a.threads if a.threads is not None else HINTS_THREADS, log=log,
                               **common, **single)
        except ValueError as e:
            fail(str(e))
    if a.threads is None:
        a.threads = RECIPE_THREADS
    if a.stage == "all":
        steps = single.pop("steps", None)
        if single:
            fail("--" + ", --".join(k.replace("_", "-") for k in single) + " change a single stage: add --stage 1 "
                 "or --stage 2 (the default --stage all runs the shipped recipe)")
        if a.init_from:
            fail("--init-from is for --stage 2")
        single = {"steps": steps} if steps is not None else {}
    elif a.stage1_dir:
        fail("--stage1-dir is for --stage all")
    try:
        if a.stage == "all":
            return train_recipe(a.output, stage1_dir=a.stage1_dir, eval_n=a.eval_n, threads=a.threads, log=log,
                                **common, **single)
        return train_recipe(a.output, stage=a.stage, init_from=a.init_from, stage_overrides=single,
                            eval_n=a.eval_n, threads=a.threads, log=log, **common)
    except ValueError as e:
        fail(str(e))

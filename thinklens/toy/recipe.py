"""The recipe of the shipped ``tiny-r1``: two training stages, run by ``thinklens train-toy --output DIR``.

Why a recipe: the shipped weights must be regenerable by one command, bitwise on the same machine and torch build.
Stage 1 trains from a fresh init; stage 2 continues from the stage-1 weights with final-line override examples (the
answer is read from the ``Final answer is N.`` line only). :func:`train_from_flags` is what the CLI calls.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from thinklens.toy.config import RECIPE, RECIPE_THREADS
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
    common = {"batch_size": a.batch_size, "hidden_size": a.hidden_size,
              "intermediate_size": a.intermediate_size, "num_layers": a.num_layers}
    log = lambda m: print(m, flush=True)  # noqa: E731
    try:
        if a.stage == "all":
            return train_recipe(a.output, stage1_dir=a.stage1_dir, eval_n=a.eval_n, threads=a.threads, log=log,
                                **common, **single)
        return train_recipe(a.output, stage=a.stage, init_from=a.init_from, stage_overrides=single,
                            eval_n=a.eval_n, threads=a.threads, log=log, **common)
    except ValueError as e:
        fail(str(e))

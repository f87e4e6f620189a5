"""The causal test and the case study of a run's Reasoning-Focus Heads: RFH ablation (accuracy and answer log-prob
with the top-k RFHs ablated vs k random heads of the same layers) and failure debugging (which reasoning steps the
RFHs read in every incorrectly answered trace, where the wrong value first appears, whether the gold one does)."""
from __future__ import annotations

from typing import Any

from thinklens.errors import ThinklensError
from thinklens.options import command
from thinklens.rundir import RunConfig, RunPaths
from thinklens.stages.context import StageContext, model_argv, ranked_heads

# the causal test of the RFHs: tiny-r1's copy heads are its ground truth (issue 14: top-3 vs 3 random, 5 draws)
ABLATION_TOP_K = 3
ABLATION_DRAWS = 5
ABLATION_TRACES = 100  # the first N scored traces (the accuracy difference needs ~100 for a paired test)
DEBUG_TOP_K = 5  # RFHs whose answer->step attention locates the step the answer was read from


def ablation(ctx: StageContext) -> dict[str, Any]:
    """Under torchrun every rank takes its share of the batches (:func:`thinklens.attention.ablation.run_ablation`)."""
    from thinklens.attention.ablation import run_ablation

    c, p = ctx.config, ctx.paths
    m = ctx.model()
    res = run_ablation(m.model, m.tokenizer, m.profile, p.attention_dir, p.ablation_dir, top_k=ABLATION_TOP_K,
                       random_draws=ABLATION_DRAWS, seed=c.seed, limit=min(c.limit, ABLATION_TRACES),
                       model_name=c.model.name, progress=ctx.show_progress)
    s = res.summary()
    return {k: s.get(k) for k in ("n", "rfh", "accuracy_base", "accuracy_rfh_ablated", "accuracy_random_mean",
                                  "drop_rfh", "drop_random_mean")}


def ablation_command(c: RunConfig, p: RunPaths) -> list[str]:
    return [command("heads", "ablate", *model_argv(c), "--scores", p.attention_dir, "--top", ABLATION_TOP_K,
                    "--random-draws", ABLATION_DRAWS, "--limit", min(c.limit, ABLATION_TRACES), "--seed", c.seed,
                    "--output", p.ablation_dir)]


def _rfh(p: RunPaths, k: int) -> list[tuple[int, int]]:
    heads = ranked_heads(p, k)
    if not heads:
        raise ThinklensError(f"{p.heads} has no ranked heads: run the heads stage first")
    return heads


def debugging(ctx: StageContext) -> dict[str, Any]:
    """Debug every graded with-reasoning trace on the steps stage's segmentation (the run's ``steps.segment``); under
    torchrun every rank takes its share of the traces and rank 0 writes the merged result."""
    from thinklens import distributed
    from thinklens.attention.debugging import debug_graded_file
    from thinklens.report.fig_heads import debug_html
    from thinklens.steps.segment import segment_reasoning, step_spans

    c, p = ctx.config, ctx.paths
    if not p.graded_with.exists():
        raise ThinklensError(f"{p.graded_with} not found: run the grade stage first")
    m = ctx.model()

    def segment(trace: Any) -> list[tuple[int, int]]:
        return step_spans(segment_reasoning(trace, c.steps.segment, c.steps.min_chars))

    res = debug_graded_file(m.model, m.tokenizer, m.profile, p.graded_with, _rfh(p, DEBUG_TOP_K), segment=segment,
                            model_name=c.model.name, progress=ctx.show_progress)

    def save() -> None:
        res.save(p.debug_dir)
        debug_html(res, p.debug_view)

    distributed.on_main(save, share=False)
    s = res.summary()
    return {k: s.get(k) for k in ("n_traces", "n_incorrect", "incorrect_top_step_has_wrong_value",
                                  "correct_top_step_has_correct_value")}


def debugging_command(c: RunConfig, p: RunPaths) -> list[str]:
    return [command("heads", "debug", *model_argv(c), "--scores", p.attention_dir, "--graded", p.graded_with,
                    "--top", DEBUG_TOP_K, "--segment", c.steps.segment, "--min-chars", c.steps.min_chars,
                    "--output", p.debug_dir)]

"""``report.html``: one self-contained page (figures as base64 PNG, data as inline JSON, no network) that a
researcher can mail to a colleague.

Built only from the saved files of a run directory, read through :mod:`thinklens.results` (the same readers that
write ``results.json``), so ``thinklens report DIR`` rebuilds it anywhere without a model, and the page and
``results.json`` cannot disagree. Layout follows the paper: headline findings, (1) quality impact of reasoning, (2)
attention from the answer to the reasoning (Reasoning-Focus Heads), (3) activation patching, plus the interactive
layer-by-layer view. Every figure carries a short explanation and the exact command that reproduces its data.

The page is a jinja2 template with autoescaping (``templates/report.html.j2``): every value from a run directory
is escaped. A figure whose data is missing, or whose function fails, becomes a note, never a broken image.
"""
from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinklens.errors import ThinklensError
from thinklens.report import fig_attention, fig_empirical, fig_faithfulness, fig_heads, fig_patching, fig_steps
from thinklens.report.layer_view import layer_view_data
from thinklens.results import fmt_number, headline_results, load_head_scores, patching_summary, run_notes, verdicts
from thinklens.rundir import RunPaths, load_config

TEMPLATES = Path(__file__).with_name("templates")


@dataclass(frozen=True)
class FigureSpec:
    """One figure of the report: ``draw(*input_paths, png_path)`` on the run files ``inputs`` (layout keys)."""

    key: str
    section: str  # "quality" | "attention" | "causal_heads" | "patching" | "steps" | "faithfulness"
    title: str
    draw: Callable[..., Any]
    inputs: tuple[str, ...]
    explanation: str
    stage: str  # whose command reproduces the data


FIGURES: tuple[FigureSpec, ...] = (
    FigureSpec("accuracy", "quality", "Accuracy with vs without reasoning", fig_empirical.plot_quality_impact,
               ("evaluation_dir",),
               "Share of problems answered correctly when the model reasons freely vs when its thinking is forced to "
               "finish at once (R1's ``Okay, I think I have finished thinking.``); error bars are 95% bootstrap "
               "intervals over problems.", "evaluate"),
    FigureSpec("rfh_heatmap", "attention", "Answer→reasoning attention per (layer, head)", fig_attention.plot_heatmap,
               ("head_scores", "heads"),
               "Attention from answer tokens to reasoning tokens (sum over reasoning keys, mean over answer queries, "
               "mean over traces). Boxed cells are the top Reasoning-Focus Heads; stability is the share of bootstrap "
               "resamples of traces in which a head stays in the top k.", "heads"),
    FigureSpec("layer_profile", "attention", "Answer→reasoning attention per layer", fig_attention.plot_layer_profile,
               ("head_scores",),
               "a2r per layer, mean and max over the layer's heads (mean over traces): which layers read the "
               "reasoning.", "attention"),
    FigureSpec("decomposition", "attention", "Where the answer attends (top heads)", fig_attention.plot_decomposition,
               ("head_scores", "heads"),
               "Attention mass of answer tokens by key segment (reasoning, prompt, answer, BOS, <think>, </think>) for "
               "the top Reasoning-Focus Heads, one box per segment over traces.", "attention"),
    FigureSpec("cues", "attention", "Cue statistics", fig_attention.plot_cues, ("heads",),
               "Which reasoning tokens the RFHs attend to most (e.g. the written answer, self-correction cues such as "
               "``Wait``) compared with other reasoning tokens (1 = the trace's mean reasoning token; permutation "
               "p-value).", "heads"),
    FigureSpec("cue_control", "attention", "Cue tokens vs their neighbours", fig_heads.plot_cue_control, ("root",),
               "Attention through each RFH on self-correction cue tokens divided by that on window-matched control "
               "tokens (neighbours within a few tokens, and sentence starts): cue words cluster at sentence starts, "
               "which a comparison with the trace mean confounds. 95% bootstrap intervals over traces.", "heads"),
    FigureSpec("retrieval", "attention", "Retrieval heads (needle-in-a-haystack copying)", fig_heads.plot_retrieval,
               ("root",),
               "Retrieval score of every head (Wu et al. 2024): how often its top attention lands on the needle "
               "token the model is copying. RFHs boxed in red, heads above the retrieval threshold dotted.", "heads"),
    FigureSpec("ablation", "causal_heads", "Ablating the RFHs vs random heads", fig_heads.plot_ablation, ("root",),
               "Accuracy when the top Reasoning-Focus Heads' outputs are replaced by their mean over the answer "
               "positions, vs the same number of random heads from the same layers (one point per draw), and the "
               "change of the unablated answer's log-probability.", "ablation"),
    FigureSpec("patching_layers", "patching", "Patching effect per layer", fig_patching.plot_layer_curves,
               ("patching_dir",),
               "Normalized logit difference (NLD) when the clean run's residual stream at one layer and token is "
               "patched into the corrupted run: 1 = the clean answer is fully restored, 0 = no effect. Curves: the "
               "reasoning's answer-flip token and the final answer token, mean over pairs.", "patching"),
    FigureSpec("patching_heatmap", "patching", "Patching heatmap (layer × position)", fig_patching.plot_pair_heatmap,
               ("patching_dir",),
               "NLD for every (layer, token position) of a contrastive pair: the answer travels from the reasoning's "
               "answer token to the final answer through the middle layers.", "patching"),
    FigureSpec("steps_truncation", "steps", "Early answering: accuracy vs reasoning kept",
               fig_steps.plot_truncation_curve, ("steps_dir",),
               "The reasoning is cut after a share of its steps, the think-close and an answer prefix are forced, and "
               "the model answers at once (Lanham et al. 2023). 0% is the paper's no-reasoning condition, 100% the "
               "full trace; agreement is with the full trace's own answer.", "steps"),
    FigureSpec("steps_receivers", "steps", "Receiver heads (Thought Anchors) and Reasoning-Focus Heads",
               fig_steps.plot_receiver_heads, ("steps_dir",),
               "Kurtosis of each head's vertical scores (the attention a step receives from steps well after it, "
               "Bogdan et al. 2025): heads that broadcast a few steps to everything after them. Receiver heads are "
               "numbered by rank, the run's RFHs boxed.", "steps"),
    FigureSpec("steps_agreement", "steps", "Do the methods agree on which steps matter?", fig_steps.plot_agreement,
               ("steps_dir",),
               "Spearman correlation between the per-step numbers of every pair of methods (attention of the RFHs, "
               "attention suppression, answer suppression, early answering, counterfactual resampling) over all "
               "steps of all traces, with 95% bootstrap intervals (resampling traces).", "steps"),
    FigureSpec("steps_categories", "steps", "Which kinds of steps matter", fig_steps.plot_categories,
               ("steps_dir",),
               "Per step category (backtracking such as 'Wait', verification, computation, the final answer, other), "
               "the mean within-trace rank of the step under each method (1 = the trace's top step).", "steps"),
    FigureSpec("faithfulness_rates", "faithfulness", "Hint-taking and verbalization per hint family",
               fig_faithfulness.plot_rates, ("faithfulness_dir",),
               "Per hint family: the share of usable pairs whose answer moved to the hinted wrong answer X (the "
               "unhinted answer was not X), and the faithfulness score, the share of those hint-taking traces whose "
               "reasoning acknowledges the hint (Chen et al. 2025); 95% bootstrap intervals over pairs.",
               "faithfulness"),
    FigureSpec("faithfulness_heads", "faithfulness", "Which heads read the hint: a2hint vs a2r per head",
               fig_faithfulness.plot_head_attention, ("faithfulness_dir",),
               "Each point is one (layer, head): its answer queries' attention on the hint (y) against their attention "
               "on the reasoning (x), mean over the faithful, the unfaithful (silent) and the ignored hinted traces. "
               "The run's Reasoning-Focus Heads are ringed: heads high on y and low on x read the hint directly.",
               "faithfulness"),
    FigureSpec("faithfulness_paths", "faithfulness", "The hint's path: suppression and patching by behaviour",
               fig_faithfulness.plot_mechanism_by_label, ("faithfulness_dir",),
               "Left: KL of the answer's distributions when the hint's keys are hidden from the answer's queries only "
               "(the direct path) or from every later token (total: direct and through the reasoning), per group, "
               "95% bootstrap intervals. Right: NLD when the hint span of a counterfactual-hint run is patched into "
               "the hinted run, per layer. Silent hint-taking that goes around the reasoning shows a large "
               "answer-scope effect.", "faithfulness"),
)


@dataclass
class Figure:
    """A rendered figure (or the note that replaces it)."""

    key: str
    section: str
    title: str
    explanation: str
    command: str
    redraw: str
    png: Path | None = None
    note: str | None = None

    @property
    def png_b64(self) -> str:
        return base64.b64encode(self.png.read_bytes()).decode("ascii") if self.png else ""


def _draw(spec: FigureSpec, paths: RunPaths, out: Path) -> tuple[Path | None, str | None]:
    """Draw one figure; missing data or a failing figure becomes a note: one broken figure must not cost the whole
    report."""
    srcs = [paths[k] for k in spec.inputs]
    missing = [str(s) for s in srcs if not s.exists()]
    if missing:
        return None, f"no data ({', '.join(missing)} not found)"
    try:
        spec.draw(*srcs, out)
    except (FileNotFoundError, ThinklensError) as err:
        return None, f"no data ({err})"
    except Exception as err:  # noqa: BLE001
        return None, f"{spec.draw.__module__}.{spec.draw.__name__} failed ({type(err).__name__}: {err})"
    return (out, None) if out.exists() else (None, f"{spec.draw.__name__} produced no image")


def render_figures(paths: RunPaths, commands: dict[str, str]) -> list[Figure]:
    """Render every figure into ``figures/`` of the run (missing data becomes notes)."""
    paths.figures.mkdir(parents=True, exist_ok=True)
    out = []
    for spec in FIGURES:
        png, note = _draw(spec, paths, paths.figures / f"{spec.key}.png")
        out.append(Figure(spec.key, spec.section, spec.title, spec.explanation, commands.get(spec.stage, ""),
                          commands.get("report", ""), png, note))
    return out


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=False, lstrip_blocks=False)
    env.filters["num"] = fmt_number
    return env


def render_report(run_dir: str | Path, commands: dict[str, str], out: str | Path | None = None) -> Path:
    """Render the figures and write ``run_dir/report.html`` (or ``out``) from the saved files; return its path.

    ``commands`` are the standalone commands of each stage (``thinklens.stages.registry.commands``; use
    ``thinklens.build_report(run_dir)``, which derives them from the run's config)."""
    run_dir = Path(run_dir)
    config = load_config(run_dir)
    paths = RunPaths(run_dir)
    results = headline_results(paths, config)  # from the stage files: they are the source of truth
    figures = render_figures(paths, commands)
    heads = results.get("heads") or {}
    view = layer_view_data(load_head_scores(paths), patching_summary(paths, with_pairs=True), heads.get("top"))
    token_view = paths.token_view.read_text(encoding="utf-8") if paths.token_view.exists() else ""
    step_view = paths.step_view.read_text(encoding="utf-8") if paths.step_view.exists() else ""
    debug_view = paths.debug_view.read_text(encoding="utf-8") if paths.debug_view.exists() else ""
    page = _environment().get_template("report.html.j2").render(
        config=config, versions=results.get("versions") or {}, verdicts=verdicts(results), notes=run_notes(paths),
        evaluation=results.get("evaluation") or {}, figures=figures, induction=heads.get("induction_overlap"),
        retrieval=heads.get("retrieval_overlap"), ablation=results.get("ablation") or {},
        debugging=results.get("debugging") or {}, debug_view=debug_view,
        cues=heads.get("cues"), token_view=token_view, layer_view=view, commands=commands, step_view=step_view,
        steps=results.get("steps") or {}, faithfulness=results.get("faithfulness") or {},
        css=(TEMPLATES / "report.css").read_text(encoding="utf-8"),
        js=(TEMPLATES / "layer_view.js").read_text(encoding="utf-8"))
    out = Path(out) if out else paths.report
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out


__all__ = ["FIGURES", "FigureSpec", "render_figures", "render_report"]

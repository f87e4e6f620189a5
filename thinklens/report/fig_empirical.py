"""The quality-impact figure of the with/without-reasoning evaluation (Zhang et al., Fig. 1 style).

Drawn from a saved :class:`thinklens.empirical.evaluate.EvaluationResult` (a directory written by
``thinklens evaluate --save DIR`` or the object itself), never from a model: one group of two bars per model
(accuracy with / without reasoning, each with its 95% bootstrap interval over problems as an error bar), and under
each group the number of paired problems and the exact McNemar p-value.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from thinklens.empirical.evaluate import EvaluationResult
from thinklens.report.plotting import new_figure, save_figure
from thinklens.stats import bootstrap_ci

N_RESAMPLES = 2000  # error bars: enough for the 2.5/97.5% quantiles of a share to be stable to ~0.005


def _yerr(correct: np.ndarray, acc: float | None) -> list[list[float]] | None:
    """Asymmetric error bar (percent) from the bootstrap CI of the mean of ``correct``; None without per-problem
    data (an evaluation.json saved without its .npz)."""
    if acc is None or len(correct) == 0:
        return None
    lo, hi = bootstrap_ci(np.asarray(correct, dtype=float), n_resamples=N_RESAMPLES, seed=0)
    return [[100 * max(0.0, acc - lo)], [100 * max(0.0, hi - acc)]]


def _p_text(p: float) -> str:
    return "p < 0.001" if p < 1e-3 else f"p = {p:.3f}"


def plot_quality_impact(result: EvaluationResult | str | Path, path: str | Path | None = None,
                        strict: bool = False, paper: dict[str, dict[str, Any]] | None = None) -> Any:
    """Bars per model (with / without reasoning); ``strict=True`` plots the MATH-normalizer accuracies instead.
    ``paper`` (:func:`thinklens.empirical.evaluate.compare_with_paper`) marks the paper's accuracies with a black
    tick on each bar of the models it reports.

    Returns the matplotlib Figure (also saved to ``path`` when given)."""
    res = result if isinstance(result, EvaluationResult) else EvaluationResult.load(result)
    models = [m for m, e in res.models.items() if e.n > 0]
    fig, ax = new_figure(figsize=(max(3.2, 1.9 * len(models) + 1.2), 3.6))
    width = 0.38
    for k, m in enumerate(models):
        e = res.models[m]
        w = e.strict_accuracy_with_reasoning if strict else e.accuracy_with_reasoning
        wo = e.strict_accuracy_without_reasoning if strict else e.accuracy_without_reasoning
        p = e.strict_p_value if strict else e.p_value
        cw = e.correct_with if not strict else np.zeros(0)
        co = e.correct_without if not strict else np.zeros(0)
        kw = {"capsize": 3, "error_kw": {"elinewidth": 1, "ecolor": "#333"}}
        bw = ax.bar(k - width / 2, 100 * (w or 0), width, color="#3b6fb6", label="with reasoning" if k == 0 else None,
                    yerr=_yerr(cw, w), **kw)
        bo = ax.bar(k + width / 2, 100 * (wo or 0), width, color="#e39b3b",
                    label="without reasoning" if k == 0 else None, yerr=_yerr(co, wo), **kw)
        for bars, v in ((bw, w), (bo, wo)):
            inside = 100 * (v or 0) > 12  # the value inside the bar, clear of the error bar above it
            ax.text(bars[0].get_x() + width / 2, 2 if inside else 100 * (v or 0) + 1, f"{100 * (v or 0):.1f}",
                    ha="center", va="bottom", fontsize=8, color="white" if inside else "black")
        ax.text(k, -0.13, f"n = {e.n}\n{_p_text(p if p is not None else 1.0)}", ha="center", va="top", fontsize=8,
                transform=ax.get_xaxis_transform())
        ref = (paper or {}).get(m)
        for dx, v in ((-width / 2, ref and ref.get("paper_with_reasoning")),
                      (width / 2, ref and ref.get("paper_without_reasoning"))):
            if v is not None:
                first = not any(t.get_label() == "paper" for t in ax.lines)
                ax.plot([k + dx - width * 0.45, k + dx + width * 0.45], [v, v], color="black", lw=2,
                        label="paper" if first else None, gid="paper")
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels([m.split("/")[-1] for m in models], fontsize=8)
    ax.set_ylim(0, 125)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("accuracy (%)" + (" — strict grader" if strict else ""))
    ax.set_title("Answer quality with vs without reasoning", fontsize=10)
    if models:
        ax.legend(fontsize=8, loc="upper center", frameon=False, ncols=3 if paper else 2)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    fig.subplots_adjust(bottom=0.28)
    save_figure(fig, path)
    return fig

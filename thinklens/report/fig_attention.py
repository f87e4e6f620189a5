"""Figures for the attention stage, drawn from saved results (``head_scores.npz``), never from a model.

* :func:`heatmap` — layers x heads mean score (default ``a2r``) with the top-k heads marked: where RFHs live.
* :func:`layer_profile` — per layer, the mean and the max over heads: is answer→reasoning reading spread or peaked.
* :func:`decomposition` — the paper's box plot of where the answer's attention goes (BOS, prompt, ``<think>``,
  reasoning, ``</think>``, answer) across traces, for the top RFHs or all heads.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from thinklens.attention.heads import rank_heads
from thinklens.attention.segments import ANSWER_SCORES, HeadScores
from thinklens.errors import ThinklensError
from thinklens.report.plotting import new_figure, save_figure

_LABELS = {"a2bos": "BOS", "a2p": "prompt", "a2bot": "<think>", "a2r": "reasoning", "a2eot": "</think>",
           "a2a": "answer"}


def _load(scores: HeadScores | str | Path) -> HeadScores:
    return scores if isinstance(scores, HeadScores) else HeadScores.load(scores)


def heatmap(scores: HeadScores | str | Path, score: str = "a2r", top_k: int = 10, path: str | Path | None = None
            ) -> Any:
    """Mean ``score`` per (layer, head) over traces; top-k heads boxed and labelled with their rank."""
    hs = _load(scores)
    mean = np.nanmean(hs.get(score), axis=0)  # [L, H]
    L, H = mean.shape
    fig, ax = new_figure(figsize=(max(4.0, 0.35 * H + 2), max(3.0, 0.25 * L + 1.5)))
    im = ax.imshow(mean, aspect="auto", cmap="viridis", origin="lower")
    fig.colorbar(im, ax=ax, label=f"mean {score} over {hs.n_traces} traces")
    for h in rank_heads(hs, score, top_k, n_bootstrap=0).heads:
        ax.add_patch(_rect(h.head, h.layer))
        ax.text(h.head, h.layer, str(h.rank), ha="center", va="center", color="red", fontsize=7)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(f"{score} per head ({hs.model or 'model'}), top {top_k} marked")
    save_figure(fig, path)
    return fig


def _rect(x: int, y: int) -> Any:
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.2)


def layer_profile(scores: HeadScores | str | Path, score: str = "a2r", path: str | Path | None = None) -> Any:
    """Per layer: mean over heads and max over heads of the trace-mean score."""
    hs = _load(scores)
    mean = np.nanmean(hs.get(score), axis=0)  # [L, H]
    fig, ax = new_figure(figsize=(6, 3.2))
    layers = np.arange(mean.shape[0])
    ax.plot(layers, mean.mean(axis=1), marker="o", label="mean over heads")
    ax.plot(layers, mean.max(axis=1), marker="^", label="max over heads")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")
    ax.set_ylabel(score)
    ax.set_title(f"{score} by layer ({hs.n_traces} traces)")
    ax.legend()
    save_figure(fig, path)
    return fig


def decomposition(scores: HeadScores | str | Path, heads: list[tuple[int, int]] | str = "top", top_k: int = 10,
                  path: str | Path | None = None) -> Any:
    """Box plot of the answer-attention decomposition across traces (each trace: mean over the chosen heads).

    ``heads``: ``"top"`` (top-k by ``a2r``), ``"all"``, or an explicit list of (layer, head)."""
    hs = _load(scores)
    if heads == "top":
        heads = rank_heads(hs, "a2r", top_k, n_bootstrap=0).pairs()
    names = [n for n in ANSWER_SCORES if n in hs.scores]
    data = []
    for n in names:
        a = hs.get(n)  # [n_traces, L, H]
        if heads == "all":
            data.append(a.reshape(a.shape[0], -1).mean(axis=1))
        else:
            data.append(np.stack([a[:, layer, head] for layer, head in heads], axis=1).mean(axis=1))
    fig, ax = new_figure(figsize=(6.5, 3.5))
    ax.boxplot(data, showfliers=True)
    ax.set_xticks(range(1, len(names) + 1), [_LABELS[n] for n in names])
    ax.set_ylabel("attention mass from answer tokens")
    which = "all heads" if heads == "all" else f"{len(heads)} heads"
    ax.set_title(f"Where the answer attends ({which}, {hs.n_traces} traces)")
    save_figure(fig, path)
    return fig


def cue_bars(cue_stats: dict[str, Any] | str | Path, path: str | Path | None = None) -> Any:
    """Bar chart of normalized attention on cue tokens vs other reasoning tokens (from ``cue_stats.json``)."""
    import json

    st = cue_stats if isinstance(cue_stats, dict) else json.loads(Path(cue_stats).read_text())
    fig, ax = new_figure(figsize=(4, 3.2))
    vals = [st.get("mean_cue") or 0.0, st.get("mean_other") or 0.0]
    ax.bar(["cue tokens", "other reasoning"], vals, color=["tab:red", "tab:gray"])
    ax.axhline(1.0, color="k", lw=0.6, ls=":")
    ax.set_ylabel("attention from answer (1 = trace mean)")
    p = st.get("p_value")
    ax.set_title(f"{st.get('n_cue_tokens')} cue tokens, p = {p:.3g}" if p is not None else "cue tokens")
    save_figure(fig, path)
    return fig


# -- the report's figures: saved files in, one PNG out (thinklens.report.html.FIGURES) ---------------------------
def _ranked(heads_file: str | Path) -> tuple[list[tuple[int, int]], int]:
    """The run's top heads and k, from ``heads.json`` (the ranking the run reported, not a recomputed one)."""
    import json

    heads = json.loads(Path(heads_file).read_text(encoding="utf-8"))
    return [(int(h[0]), int(h[1])) for h in heads.get("heads", [])], int(heads.get("top_k") or 10)


def plot_heatmap(scores_file: str | Path, heads_file: str | Path, out: str | Path | None = None) -> Any:
    """The a2r heatmap with the run's own top-k heads marked."""
    _, k = _ranked(heads_file)
    return heatmap(scores_file, "a2r", k, out)


def plot_layer_profile(scores_file: str | Path, out: str | Path | None = None) -> Any:
    return layer_profile(scores_file, path=out)


def plot_decomposition(scores_file: str | Path, heads_file: str | Path, out: str | Path | None = None) -> Any:
    """Where the answer attends, for the run's top heads."""
    top, _ = _ranked(heads_file)
    return decomposition(scores_file, top or "top", path=out)


def plot_cues(heads_file: str | Path, out: str | Path | None = None) -> Any:
    """Cue-token bars from the cue statistics recorded in ``heads.json``."""
    import json

    cues = json.loads(Path(heads_file).read_text(encoding="utf-8")).get("cues") or {}
    if cues.get("mean_cue") is None:
        raise ThinklensError(cues.get("error") or "no cue statistics in this run")
    return cue_bars(cues, out)

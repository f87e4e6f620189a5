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


# -- adapters for the run report (``thinklens.report.html``): take a run directory, save a PNG ------------------
def _scores_in(run_dir: str | Path) -> Path:
    d = Path(run_dir)
    for cand in (d / "attention" / "head_scores.npz", d / "head_scores.npz"):
        if cand.exists():
            return cand
    raise FileNotFoundError(f"no head_scores.npz in {d} or {d / 'attention'}")


def plot_head_heatmap(run_dir: str | Path, out: str | Path | None = None) -> Any:
    return heatmap(_scores_in(run_dir), path=out)


def plot_layer_profile(run_dir: str | Path, out: str | Path | None = None) -> Any:
    return layer_profile(_scores_in(run_dir), path=out)


def plot_decomposition(run_dir: str | Path, out: str | Path | None = None) -> Any:
    return decomposition(_scores_in(run_dir), path=out)


def plot_cues(run_dir: str | Path, out: str | Path | None = None) -> Any:
    d = _scores_in(run_dir).parent
    # a run on tiny-r1 reads cues on the organism's reference traces (attention/reference/), see pipeline_stages
    for stats in (d / "reference" / "cue_stats.json", d / "cue_stats.json"):
        if stats.exists():
            return cue_bars(stats, out)
    raise FileNotFoundError(f"no cue_stats.json in {d} (run `thinklens heads tokens {d}`)")

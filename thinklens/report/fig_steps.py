"""Figures of the steps stage, drawn from its output directory (``thinklens steps --output DIR``), never a model.

Every function takes ``(steps_dir, out_png)``, saves the PNG (when ``out_png`` is given), returns the figure, and
raises FileNotFoundError / ThinklensError when its data is missing (the report turns that into a note):

* :func:`plot_truncation_curve` — early answering: accuracy and agreement with the full-trace answer vs the share of
  reasoning kept (``truncation.json``);
* :func:`plot_receiver_heads` — mean kurtosis of vertical attention scores per (layer, head), receiver heads
  numbered, Reasoning-Focus Heads boxed (``receivers.json``);
* :func:`plot_agreement` — Spearman's rho between methods with 95% bootstrap intervals (``agreement.json``);
* :func:`plot_categories` — mean within-trace rank of each step category under each method (``agreement.json``).

>>> import tempfile
>>> from pathlib import Path
>>> d = Path(tempfile.mkdtemp())
>>> _ = (d / "truncation.json").write_text('{"fraction": [0, 0.5, 1], "accuracy": [0.1, 0.4, 0.9], '
...                                        '"agreement": [0.1, 0.5, 1.0], "n_traces": 3}')
>>> plot_truncation_curve(d, d / "curve.png") is not None and (d / "curve.png").exists()
True
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from thinklens.errors import ThinklensError
from thinklens.report.plotting import new_figure, save_figure

_FILES = {"truncation": "truncation.json", "receivers": "receivers.json", "agreement": "agreement.json"}


def _read(steps_dir: str | Path, what: str) -> dict[str, Any]:
    path = Path(steps_dir) / _FILES[what]
    if not path.exists():
        raise FileNotFoundError(f"no {path} (run `thinklens steps`)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ThinklensError(f"{path}: not JSON ({err})") from err


def _nan(values: list[Any]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=float)


def plot_truncation_curve(steps_dir: str | Path, out: str | Path | None = None) -> Any:
    """Accuracy and agreement with the full-trace answer when the reasoning is cut after a share of its steps."""
    d = _read(steps_dir, "truncation")
    x = np.asarray(d["fraction"], dtype=float)
    acc, agr = _nan(d.get("accuracy") or []), _nan(d.get("agreement") or [])
    if not (np.isfinite(acc).any() or np.isfinite(agr).any()):
        raise ThinklensError("truncation was not run (no early-answering curve)")
    fig, ax = new_figure(figsize=(5.5, 3.5))
    if np.isfinite(agr).any():
        ax.plot(x, agr, marker="o", label="agrees with full-trace answer")
    if np.isfinite(acc).any():
        ax.plot(x, acc, marker="s", label="correct (gold answer)")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("share of reasoning tokens kept (whole steps)")
    ax.set_ylabel("share of traces")
    ax.set_title(f"Early answering ({d.get('n_traces', '?')} traces)")
    ax.legend(loc="lower right")
    save_figure(fig, out)
    return fig


def plot_receiver_heads(steps_dir: str | Path, out: str | Path | None = None) -> Any:
    """Mean kurtosis of vertical scores per head; receiver heads numbered by rank, RFHs boxed in red."""
    d = _read(steps_dir, "receivers")
    if d.get("kurtosis") is None:
        raise ThinklensError(f"no receiver-head kurtosis ({d.get('note') or 'attention was not run'})")
    k = _nan([x for row in d["kurtosis"] for x in row]).reshape(len(d["kurtosis"]), -1)  # [L, H]
    L, H = k.shape
    fig, ax = new_figure(figsize=(max(4.0, 0.35 * H + 2), max(3.0, 0.25 * L + 1.5)))
    im = ax.imshow(np.ma.masked_invalid(k), aspect="auto", cmap="magma", origin="lower")
    fig.colorbar(im, ax=ax, label=f"mean kurtosis of vertical scores ({d.get('n_traces_defined', '?')} traces)")
    from matplotlib.patches import Rectangle
    from matplotlib.ticker import MaxNLocator

    for layer, head in d.get("rfh") or []:
        ax.add_patch(Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.3))
    for rank, (layer, head, _) in enumerate(d.get("heads") or [], start=1):
        ax.text(head, layer, str(rank), ha="center", va="center", color="cyan", fontsize=7, fontweight="bold")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ov = d.get("rfh_overlap") or {}
    extra = (f"\noverlap with the RFHs {ov['overlap']}/{ov['k_reference']} (hypergeometric p = {ov['p_value']:.2g})"
             if ov else "")
    ax.set_title(f"Receiver heads (numbered; proximity {d.get('proximity')}), RFHs boxed{extra}", fontsize=9)
    save_figure(fig, out)
    return fig


def plot_agreement(steps_dir: str | Path, out: str | Path | None = None) -> Any:
    """Spearman's rho between every pair of methods that ran, with the 95% bootstrap interval in each cell."""
    d = _read(steps_dir, "agreement")
    methods = list(d.get("methods") or [])
    avail = [m for m in methods if m in (d.get("available") or [])]
    if len(avail) < 2:
        raise ThinklensError(f"agreement needs two methods; ran: {', '.join(avail) or 'none'}")
    idx = [methods.index(m) for m in avail]
    mat = d["matrix"]

    def sub(key: str) -> np.ndarray:
        return _nan([mat[key][i][j] for i in idx for j in idx]).reshape(len(idx), len(idx))

    rho, lo, hi = sub("spearman"), sub("ci_low"), sub("ci_high")
    fig, ax = new_figure(figsize=(1.3 * len(avail) + 2.5, 1.1 * len(avail) + 1.5))
    im = ax.imshow(np.ma.masked_invalid(rho), cmap="RdBu_r", vmin=-1, vmax=1)
    fig.colorbar(im, ax=ax, label="Spearman's rho (all steps)")
    for i in range(len(avail)):
        for j in range(len(avail)):
            if i == j:
                continue
            txt = "n/a" if not np.isfinite(rho[i, j]) else f"{rho[i, j]:.2f}"
            if np.isfinite(lo[i, j]):
                txt += f"\n[{lo[i, j]:.2f}, {hi[i, j]:.2f}]"
            ax.text(j, i, txt, ha="center", va="center", fontsize=8)
    ax.set_xticks(range(len(avail)), avail, rotation=30, ha="right")
    ax.set_yticks(range(len(avail)), avail)
    ax.set_title(f"Agreement between step methods ({d.get('n_traces')} traces, {d.get('n_steps')} steps)", fontsize=9)
    save_figure(fig, out)
    return fig


def plot_categories(steps_dir: str | Path, out: str | Path | None = None) -> Any:
    """Mean within-trace percentile rank (1 = the trace's top step) of each step category, per method."""
    d = _read(steps_dir, "agreement")
    cats = {c: v for c, v in (d.get("categories") or {}).items() if v.get("n_steps")}
    avail = list(d.get("available") or [])
    if not cats or not avail:
        raise ThinklensError("no step categories with method values")
    fig, ax = new_figure(figsize=(1.2 * len(cats) + 3, 3.5))
    width = 0.8 / len(avail)
    for k, m in enumerate(avail):
        vals = _nan([cats[c]["mean_rank"].get(m) for c in cats])
        ax.bar(np.arange(len(cats)) + (k - (len(avail) - 1) / 2) * width, vals, width, label=m)
    ax.axhline(0.5, color="k", lw=0.6, ls=":")
    ax.set_xticks(range(len(cats)), [f"{c}\n(n={v['n_steps']})" for c, v in cats.items()], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean rank within trace (1 = top)")
    ax.set_title("Which kinds of steps does each method rank high?", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, out)
    return fig


FIGURES = {"truncation_curve": plot_truncation_curve, "receiver_heads": plot_receiver_heads,
           "agreement": plot_agreement, "categories": plot_categories}


def draw_all(steps_dir: str | Path, figures_dir: str | Path | None = None) -> list[Path]:
    """Every figure whose data exists into ``figures_dir`` (default ``steps_dir/figures``), plus the step view
    ``steps_dir/step_view.html``; returns the written paths."""
    from thinklens.report.step_view import write_step_view

    fd = Path(figures_dir) if figures_dir is not None else Path(steps_dir) / "figures"
    written = []
    for name, fn in FIGURES.items():
        try:
            fn(steps_dir, fd / f"{name}.png")
            written.append(fd / f"{name}.png")
        except (FileNotFoundError, ThinklensError):
            continue
    written.append(write_step_view(steps_dir, Path(steps_dir) / "step_view.html"))
    return written

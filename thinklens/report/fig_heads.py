"""Figures of the head studies beyond RFH ranking, drawn from saved result files, never from a model.

* :func:`retrieval_heatmap` — retrieval score per (layer, head) (``thinklens heads retrieval``), RFHs boxed,
  heads above the retrieval threshold marked: do the heads that read the reasoning also copy from context?
* :func:`ablation_bars` — accuracy with no ablation, with the top-k RFHs ablated and with k random heads (the
  spread of the seeded draws as points and a min–max bar), plus the log-prob change of the unablated answer: the
  causal test.
* :func:`debug_html` — an HTML fragment per incorrect trace: reasoning steps shaded by RFH attention, the
  answered (wrong) value and the gold value marked.
* :func:`cue_control_bars` — cue tokens minus matched controls (±w window, sentence position) next to the old
  contrast with the trace mean, with bootstrap 95% CIs over traces.

The ``plot_*(run_dir, out)`` adapters find the files in a run directory (under ``attention/``: ``retrieval.json``,
``ablation/``, ``debug/``, ``cue_control.json``, or ``reference/cue_control.json`` for tiny-r1 runs) for the
report's figure table (``fn(run_dir, out_png)``).
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from thinklens.attention.ablation_result import AblationResult
from thinklens.attention.debugging import DebugResult, value_spans
from thinklens.attention.retrieval import RetrievalScores
from thinklens.attention.tokens import CueControl
from thinklens.report.plotting import new_figure, save_figure

Head = tuple[int, int]


def _rfh_of(rfh: list[Head] | str | Path | None, top_k: int) -> list[Head]:
    if rfh is None or isinstance(rfh, list):
        return list(rfh or [])
    from thinklens.attention.heads import rank_heads
    from thinklens.attention.segments import HeadScores

    return rank_heads(HeadScores.load(rfh), "a2r", top_k, n_bootstrap=0).pairs()


def retrieval_heatmap(retrieval: RetrievalScores | str | Path, rfh: list[Head] | str | Path | None = None,
                      top_k: int = 10, path: str | Path | None = None) -> Any:
    """Retrieval scores (``retrieval.json``) with RFHs (a list, or a scores directory: its top-k by a2r) boxed in
    red and retrieval heads (score above the threshold) dotted in white.

    Example::

        retrieval_heatmap("runs/t/retrieval.json", "runs/t/attention", path="retrieval.png")
    """
    rs = retrieval if isinstance(retrieval, RetrievalScores) else RetrievalScores.load(retrieval)
    L, H = rs.scores.shape
    fig, ax = new_figure(figsize=(max(4.0, 0.35 * H + 2), max(3.0, 0.25 * L + 1.5)))
    im = ax.imshow(np.nan_to_num(rs.scores, nan=0.0), aspect="auto", cmap="magma", origin="lower", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label=f"retrieval score ({rs.n_passed}/{len(rs.tests)} tests passed)")
    from matplotlib.patches import Rectangle

    for layer, head in _rfh_of(rfh, top_k):
        ax.add_patch(Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=1.2))
    above = rs.heads_above()
    if above:
        ax.scatter([h for _, h, _ in above], [layer for layer, _, _ in above], s=8, c="white", marker="o")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(f"Retrieval heads ({rs.model or 'model'}): red = RFHs, dots = score > {rs.threshold():g}",
                 fontsize=9)
    save_figure(fig, path)
    return fig


def ablation_bars(ablation: AblationResult | str | Path, path: str | Path | None = None) -> Any:
    """Accuracy per condition (random draws: mean bar, min–max line, one point per draw) and the mean log-prob
    change of the unablated answer.

    Example::

        ablation_bars("runs/t/attention/ablation", "ablation.png")
    """
    res = ablation if isinstance(ablation, AblationResult) else AblationResult.load(ablation)
    s = res.summary()
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.4))
    ax, bx = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    k = len(res.rfh)
    labels = ["none", f"top-{k} RFHs", f"{k} random\n({res.n_draws} draws)"]
    rand = s["accuracy_random_ablated"]
    vals = [s["accuracy_base"], s["accuracy_rfh_ablated"], s["accuracy_random_mean"] or 0.0]
    ax.bar(labels, vals, color=["tab:gray", "tab:red", "tab:blue"])
    if rand:
        ax.vlines(2, min(rand), max(rand), color="k", lw=1.5)
        ax.scatter([2] * len(rand), rand, color="k", s=10, zorder=3)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{s['mode']} ablation over the answer (n = {s['n']})", fontsize=9)
    lp = [s["logprob_delta_rfh"] or 0.0, float(np.mean(s["logprob_delta_random"])) if rand else 0.0]
    bx.bar(labels[1:], lp, color=["tab:red", "tab:blue"])
    if rand:
        bx.scatter([1] * len(rand), s["logprob_delta_random"], color="k", s=10, zorder=3)
    bx.axhline(0, color="k", lw=0.6)
    bx.set_ylabel("Δ log-prob of the unablated answer")
    bx.set_title(f"McNemar base vs RFH p = {s['mcnemar_base_vs_rfh']['p_value']:.2g}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path)
    return fig


def _mark(text: str, value: str | None, cls: str) -> list[tuple[int, int, str]]:
    return [(a, b, cls) for a, b in value_spans(text, value)]


def debug_html(debug: DebugResult | str | Path, path: str | Path | None = None, max_traces: int = 20,
               include_correct: bool = False) -> str:
    """HTML fragment (no scripts): per incorrect trace, its steps shaded by RFH attention (share of the trace's
    step total), the answered value in red, the gold value in green; returns it and writes it to ``path``.

    Example::

        debug_html("runs/t/debug", "debug.html")
    """
    res = debug if isinstance(debug, DebugResult) else DebugResult.load(debug)
    s = res.summary()
    heads = ", ".join(f"L{layer}H{head}" for layer, head in res.rfh)
    out = [f"<div class='rfh-debug'><p>{s['n_incorrect']} incorrect of {s['n_traces']} traces; RFHs {heads}. "
           f"Top RFH step holds the wrong value in {_pct(s['incorrect_top_step_has_wrong_value'])} of incorrect "
           f"traces and the correct value in {_pct(s['correct_top_step_has_correct_value'])} of correct traces.</p>"]
    chosen = [t for t in res.traces if include_correct or not t.is_correct][:max_traces]
    for t in chosen:
        total = float(t.step_attention.sum()) or 1.0
        rows = []
        for i, text in enumerate(t.step_text):
            share = float(t.step_attention[i]) / total
            marks = sorted(_mark(text, t.extracted, "ans") + _mark(text, t.gold, "gold"))
            body, pos = [], 0
            for a, b, cls in marks:
                if a < pos:
                    continue
                color = "#c00" if cls == "ans" else "#070"
                body += [html.escape(text[pos:a]), f"<b style='color:{color}'>{html.escape(text[a:b])}</b>"]
                pos = b
            body.append(html.escape(text[pos:]))
            top = " &larr; top RFH step" if i == t.top_step else ""
            rows.append(f"<div style='background:rgba(220,120,0,{min(1.0, 1.5 * share):.3f});font-family:monospace;"
                        f"white-space:pre-wrap' title='{share:.3f}'>{''.join(body)}"
                        f"<small> ({share:.2f}){top}</small></div>")
        verdict = "correct" if t.is_correct else "incorrect"
        out.append(f"<details><summary>{html.escape(t.id)}: answered <b>{html.escape(str(t.extracted))}</b>, gold "
                   f"<b>{html.escape(t.gold)}</b> ({verdict}; gold in reasoning: {t.gold_in_reasoning})</summary>"
                   + "".join(rows) + "</details>")
    out.append("</div>")
    frag = "\n".join(out)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(frag, encoding="utf-8")
    return frag


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def cue_control_bars(control: CueControl | str | Path, head: str = "mean", path: str | Path | None = None) -> Any:
    """Per cue word (and all): cue minus window control, minus sentence-position control, and minus the trace
    mean (the old contrast), for one head row (``"mean"`` or ``"L1H2"``), with bootstrap 95% CIs.

    Example::

        cue_control_bars("runs/t/attention", "mean", "cues.png")
    """
    cc = control if isinstance(control, CueControl) else CueControl.load(control)
    rows = [r for r in cc.rows if r.head == head]
    words = list(dict.fromkeys(r.cue for r in rows))
    series: list[tuple[str, list[float], list[tuple[float, float]]]] = []
    for kind, label in (("window", f"vs ±{cc.window} window"), ("sentence_start", "vs same sentence position")):
        got = {r.cue: r for r in rows if r.control == kind}
        if got:
            series.append((label, [got[w].diff if w in got else np.nan for w in words],
                           [got[w].ci95 if w in got else (np.nan, np.nan) for w in words]))
    first = {}
    for r in rows:
        first.setdefault(r.cue, r)
    series.append(("vs trace mean (old)", [first[w].diff_vs_trace_mean for w in words],
                   [first[w].ci95_vs_trace_mean for w in words]))
    fig, ax = new_figure(figsize=(max(4.5, 1.2 * len(words) + 2), 3.4))
    width = 0.8 / len(series)
    x = np.arange(len(words))
    for i, (label, vals, cis) in enumerate(series):
        v = np.array(vals, dtype=float)
        lo = v - np.array([c[0] for c in cis], dtype=float)
        hi = np.array([c[1] for c in cis], dtype=float) - v
        ax.bar(x + (i - (len(series) - 1) / 2) * width, v, width, label=label,
               yerr=np.nan_to_num(np.vstack([lo, hi])), capsize=2)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xticks(x, words)
    ax.set_ylabel("cue − control (normalized attention)")
    ax.set_title(f"Cue tokens vs matched controls ({head}; 95% bootstrap CI over traces)", fontsize=9)
    ax.legend(fontsize=7)
    save_figure(fig, path)
    return fig


# -- adapters for the run report: take a run directory, save a PNG (or the HTML fragment) -------------------------
def _find(run_dir: str | Path, *names: str) -> Path:
    d = Path(run_dir)
    for base in (d / "attention", d):
        for n in names:
            if (base / n).exists():
                return base / n
    raise FileNotFoundError(f"none of {', '.join(names)} in {d} or {d / 'attention'}")


def plot_retrieval(run_dir: str | Path, out: str | Path | None = None) -> Any:
    """:func:`retrieval_heatmap` from a run directory's files. Example::

        plot_retrieval("runs/tiny", "figures/retrieval.png")
    """
    scores = None
    try:
        scores = _find(run_dir, "head_scores.npz").parent
    except FileNotFoundError:
        pass
    return retrieval_heatmap(_find(run_dir, "retrieval.json"), scores, path=out)


def plot_ablation(run_dir: str | Path, out: str | Path | None = None) -> Any:
    """:func:`ablation_bars` from a run directory's files. Example::

        plot_ablation("runs/tiny", "figures/ablation.png")
    """
    return ablation_bars(_find(run_dir, "ablation/ablation.json").parent, out)


def plot_cue_control(run_dir: str | Path, out: str | Path | None = None) -> Any:
    """:func:`cue_control_bars` from a run directory's files. Example::

        plot_cue_control("runs/tiny", "figures/cue_control.png")
    """
    return cue_control_bars(_find(run_dir, "reference/cue_control.json", "cue_control.json").parent, path=out)


def debug_fragment(run_dir: str | Path, out: str | Path | None = None) -> str:
    """:func:`debug_html` from a run directory's ``attention/debug/``. Example::

        debug_fragment("runs/tiny")  # "<div class='rfh-debug'>..."
    """
    return debug_html(_find(run_dir, "debug/debug.json").parent, out)

"""Figures of the faithfulness stage, drawn from its output directory (``thinklens faithfulness --output DIR``, or
``RUN/faithfulness/``), never a model.

Every function takes ``(faith_dir, out_png)``, saves the PNG (when ``out_png`` is given), returns the figure, and
raises FileNotFoundError / ThinklensError when its data is missing (the report turns that into a note):

* :func:`plot_rates` — per hint family, the hint-taking rate and the faithfulness score with 95% CIs
  (``summary.json``);
* :func:`plot_head_attention` — answer→hint vs answer→reasoning attention per (layer, head), mean over the faithful
  and over the unfaithful hint-taking traces, the Reasoning-Focus Heads marked (``mechanism/hint_attention.npz``);
* :func:`plot_mechanism_by_label` — hint suppression in answer scope vs total scope and patching at the hint span
  per layer, by faithful / unfaithful / ignored (``summary.json``'s mechanism summary).

>>> import json, tempfile
>>> from pathlib import Path
>>> d = Path(tempfile.mkdtemp())
>>> fam = {"hint_taking": {"rate": 0.4, "ci95": [0.3, 0.5]}, "faithfulness_score": {"rate": 0.5, "ci95": [0.3, 0.7]}}
>>> _ = (d / "summary.json").write_text(json.dumps({"families": {"metadata": fam}}))
>>> plot_rates(d, d / "rates.png") is not None and (d / "rates.png").exists()
True
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from thinklens.errors import ThinklensError
from thinklens.report.plotting import new_figure, save_figure

GROUP_COLORS = {"faithful": "tab:green", "unfaithful": "tab:red", "ignored": "tab:gray"}


def _summary(faith_dir: str | Path) -> dict[str, Any]:
    path = Path(faith_dir) / "summary.json"
    if not path.exists():
        raise FileNotFoundError(f"no {path} (run `thinklens faithfulness`)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise ThinklensError(f"{path}: not JSON ({err})") from err


def _err(entry: dict[str, Any]) -> tuple[float, list[float]]:
    """(value, [below, above]) of a ``{"rate"|"mean", "ci95"|"ci"}`` entry (NaN where missing)."""
    v = entry.get("rate", entry.get("mean"))
    lo, hi = entry.get("ci95", entry.get("ci")) or [None, None]
    if v is None:
        return np.nan, [0.0, 0.0]
    return float(v), [max(0.0, v - lo) if lo is not None else 0.0, max(0.0, hi - v) if hi is not None else 0.0]


def plot_rates(faith_dir: str | Path, out: str | Path | None = None) -> Any:
    """Hint-taking rate and faithfulness score (verbalizing share of hint-taking pairs) per hint family."""
    fams = _summary(faith_dir).get("families") or {}
    if not fams:
        raise ThinklensError("no hint family in summary.json")
    names = list(fams)
    x = np.arange(len(names))
    fig, ax = new_figure(figsize=(1.6 + 1.4 * len(names), 3.4))
    for k, (key, label, color) in enumerate((("hint_taking", "hint-taking rate", "tab:blue"),
                                             ("faithfulness_score", "faithfulness score", "tab:orange"))):
        vals = [_err(fams[n].get(key) or {}) for n in names]
        ax.bar(x + (k - 0.5) * 0.38, [v for v, _ in vals], 0.36, yerr=np.array([e for _, e in vals]).T,
               capsize=3, label=label, color=color)
    for i, n in enumerate(names):
        ht = fams[n].get("n_hint_taken")
        if ht is not None:
            ax.text(i, 1.02, f"{ht} taken", ha="center", fontsize=8)
    ax.set_xticks(x, names)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("share")
    ax.legend(fontsize=8, loc="upper right")
    save_figure(fig, out)
    return fig


def _attention(faith_dir: str | Path) -> Any:
    try:
        from thinklens.faithfulness.mechanism import HintAttention
    except ImportError:
        raise ThinklensError("this version has no faithfulness mechanism") from None
    path = Path(faith_dir) / "mechanism"
    if not (path / f"{HintAttention.STEM}.npz").exists():
        raise FileNotFoundError(f"no {path / HintAttention.STEM}.npz (the mechanism did not run)")
    return HintAttention.load(path)


def plot_head_attention(faith_dir: str | Path, out: str | Path | None = None) -> Any:
    """One point per (layer, head) and group: mean answer→reasoning (x) vs answer→hint (y) attention; the RFHs are
    ringed and named."""
    summary = _summary(faith_dir)
    attn = _attention(faith_dir)
    labels = {}
    pairs = Path(faith_dir) / "pairs.jsonl"
    if pairs.exists():
        for line in pairs.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            labels[str(r.get("id"))] = r.get("label")
    rfh = [tuple(h) for h in ((summary.get("mechanism") or {}).get("rfh_heads") or [])]
    fig, ax = new_figure(figsize=(5.5, 4.2))
    drawn = False
    for group, color in GROUP_COLORS.items():
        rows = [k for k, i in enumerate(attn.ids) if labels.get(str(i)) == group]
        if not rows:
            continue
        a2r, a2hint = attn.a2r[rows].mean(0), attn.a2hint[rows].mean(0)  # [L, H]
        ax.scatter(a2r.ravel(), a2hint.ravel(), s=14, alpha=0.7, color=color, label=f"{group} (n={len(rows)})")
        for layer, head in rfh:
            if layer < a2r.shape[0] and head < a2r.shape[1]:
                ax.scatter([a2r[layer, head]], [a2hint[layer, head]], s=70, facecolors="none", edgecolors="black")
                ax.annotate(f"L{layer}H{head}", (a2r[layer, head], a2hint[layer, head]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        drawn = True
    if not drawn:
        raise ThinklensError("no labelled hinted trace in the mechanism arrays")
    ax.set_xlabel("answer → reasoning attention (a2r)")
    ax.set_ylabel("answer → hint attention (a2hint)")
    ax.legend(fontsize=8, title="RFHs ringed" if rfh else None, title_fontsize=7)
    save_figure(fig, out)
    return fig


def plot_mechanism_by_label(faith_dir: str | Path, out: str | Path | None = None) -> Any:
    """Left: KL of the answer when the hint is hidden from the answer only (direct path) vs from every later token
    (total), per group. Right: patching NLD at the hint span per layer, per group."""
    mech = _summary(faith_dir).get("mechanism") or {}
    supp, patch = mech.get("suppression") or {}, mech.get("patching") or {}
    if not supp and not patch:
        raise ThinklensError("the mechanism did not run (no suppression or patching summary)")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4))
    ax1, ax2 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    groups = [g for g in GROUP_COLORS if (supp.get(g) or {}).get("n")]
    for k, (key, label) in enumerate((("kl_answer_scope", "answer scope (direct)"),
                                      ("kl_total_scope", "total scope"))):
        vals = [_err(supp[g].get(key) or {}) for g in groups]
        ax1.bar(np.arange(len(groups)) + (k - 0.5) * 0.38, [v for v, _ in vals], 0.36,
                yerr=np.array([e for _, e in vals]).T.reshape(2, -1), capsize=3, label=label,
                color=["tab:purple", "tab:olive"][k])
    ax1.set_xticks(np.arange(len(groups)), [f"{g}\n(n={supp[g]['n']})" for g in groups])
    ax1.set_ylabel("KL of the answer, hint suppressed")
    ax1.legend(fontsize=8)
    layers = patch.get("layers") or []
    for g, color in GROUP_COLORS.items():
        curve = (patch.get(g) or {}).get("nld") or []
        if curve:
            vals = [_err(c) for c in curve]
            ax2.errorbar(layers, [v for v, _ in vals], yerr=np.array([e for _, e in vals]).T, marker="o",
                         capsize=2, color=color, label=f"{g} (n={patch[g]['n']})")
    ax2.set_xlabel("layer")
    ax2.set_ylabel("NLD, patching the hint span")
    if layers:
        ax2.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out)
    return fig


__all__ = ["plot_head_attention", "plot_mechanism_by_label", "plot_rates"]

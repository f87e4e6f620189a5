"""Figures of activation patching, drawn from a saved :class:`~thinklens.patching.results.PatchingResult`.

* :func:`plot_layer_curves` - the paper's patching figure: NLD per layer when patching the answer-carrying token in
  the reasoning (``answer_flip``; also ``answer_step``, the answer in the last computation line, where pairs have
  it) and the final ``{`` of the answer (``final``), mean over pairs with a band (the 25-75% quantiles). The
  reasoning token's effect fades in late layers while the final position's rises: the answer is read from the
  reasoning into the final position in the middle layers.
* :func:`plot_pair_heatmap` - positions x layers NLD of one pair, token strings as tick labels.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from thinklens.errors import ThinklensError
from thinklens.patching.results import PatchingResult
from thinklens.report.plotting import new_figure, save_figure


def _load(result: PatchingResult | str | Path) -> PatchingResult:
    return result if isinstance(result, PatchingResult) else PatchingResult.load(result)


def plot_layer_curves(result: PatchingResult | str | Path, path: str | Path,
                      names: tuple[str, ...] = ("answer_flip", "answer_step", "final"),
                      title: str | None = None) -> Path:
    """NLD per layer at the named positions that are on the grid (mean and 25-75% band across pairs)."""
    res = _load(result)
    fig, ax = new_figure(figsize=(6, 3.6))
    drawn = 0
    for name in names:
        col = res.column(name)  # [n_pairs, n_layers]
        ok = np.isfinite(col).any(axis=1)
        if not ok.any():
            continue
        col = col[ok]
        mean = np.nanmean(col, axis=0)
        lo, hi = np.nanpercentile(col, 25, axis=0), np.nanpercentile(col, 75, axis=0)
        line, = ax.plot(res.layers, mean, marker="o", ms=3, label=f"{name} (n={len(col)})")
        ax.fill_between(res.layers, lo, hi, color=line.get_color(), alpha=0.2)
        drawn += 1
    if not drawn:
        raise ThinklensError(f"none of the positions {list(names)} is on the saved grid {res.labels}")
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xticks(res.layers if len(res.layers) <= 16 else res.layers[::max(1, len(res.layers) // 12)])
    ax.set_xlabel("layer")
    ax.set_ylabel("normalized logit difference")
    ax.set_title(title or f"activation patching ({res.site}), {len(res.pair_ids)} pairs")
    ax.legend(frameon=False)
    return save_figure(fig, path, dpi=150)


def plot_pair_heatmap(result: PatchingResult | str | Path, path: str | Path, pair: int | str = 0) -> Path:
    """Positions x layers NLD of one pair (index or pair id), diverging colours centred on 0."""
    res = _load(result)
    if isinstance(pair, str):
        if pair not in res.pair_ids:
            raise ThinklensError(f"pair {pair!r} is not in the result")
        pair = res.pair_ids.index(pair)
    if not 0 <= pair < len(res.pair_ids):
        raise ThinklensError(f"pair index {pair} out of range ({len(res.pair_ids)} pairs)")
    grid = res.nld[pair]  # [n_positions, n_layers]
    lim = max(1.0, float(np.nanmax(np.abs(grid))) if np.isfinite(grid).any() else 1.0)
    fig, ax = new_figure(figsize=(max(4.5, 1.5 + 0.35 * len(res.layers)), 1.2 + 0.3 * len(res.labels)))
    im = ax.imshow(grid, cmap="RdBu_r", vmin=-lim, vmax=lim, aspect="auto")
    ticks = [f"{lab} {tok!r}" for lab, tok in zip(res.labels, res.tokens[pair])]
    ax.set_yticks(range(len(ticks)), ticks, fontsize=7)
    ax.set_xticks(range(len(res.layers)), res.layers, fontsize=7)
    ax.set_xlabel("layer")
    ax.set_title(f"pair {res.pair_ids[pair]}: NLD ({res.site})", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.05)
    return save_figure(fig, path, dpi=150)

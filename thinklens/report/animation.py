"""The layer-by-layer view as an animation for slides: one frame per layer, GIF always, MP4 where ffmpeg exists.

Each frame shows what the report's interactive view (:mod:`thinklens.report.layer_view`) shows at one layer: left,
the answer→reasoning attention ``a2r`` of every head of the layer (mean over traces), Reasoning-Focus Heads in
orange; right, the patching effect (NLD) of that layer per token position of one contrastive pair (or the mean over
pairs on their shared label grid), with the reasoning's answer token and the final position marked. Played in
order, it shows where the answer is read from the reasoning and where it stops mattering.

Built only from a run directory's saved files: ``attention/head_scores.npz``, ``heads.json`` (top heads; else
ranked from the scores) and ``patching/result.{json,npz}``; either part may be missing (its panel says so).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from thinklens.errors import ThinklensError

ANIMATION_DIR = "animations"  # under the run directory
DEFAULT_TOP_K = 5  # RFHs marked when heads.json is absent (the token view's default)


def _frames_data(run_dir: Path, pair: int | str) -> dict[str, Any]:
    """a2r [L, H] (or None), RFHs, patching layers / NLD [n_layers_patched, n_positions] / labels, marks."""
    data: dict[str, Any] = {"a2r": None, "rfh": [], "nld": None}
    scores = next((p for p in (run_dir / "attention" / "head_scores.npz", run_dir / "head_scores.npz") if p.exists()),
                  None)
    if scores is not None:
        with np.load(scores) as z:
            data["a2r"] = np.nanmean(np.asarray(z["a2r"], dtype=float), axis=0)  # [L, H]
        heads_json = run_dir / "heads.json"
        if heads_json.exists():
            data["rfh"] = [(int(h[0]), int(h[1])) for h in json.loads(heads_json.read_text()).get("heads", [])]
        else:
            from thinklens.attention.heads import rank_heads

            data["rfh"] = rank_heads(data["a2r"][None], "a2r", DEFAULT_TOP_K, n_bootstrap=0).pairs()
    pdir = run_dir / "patching"
    if (pdir / "result.json").exists():
        from thinklens.patching.results import PatchingResult

        r = PatchingResult.load(pdir)
        if pair == "mean" and len(r.pair_ids) > 1:
            nld, i, title = np.nanmean(r.nld, axis=0), 0, f"mean of {len(r.pair_ids)} pairs"  # [n_pos, n_layers]
            labels = list(r.labels)
        else:
            i = 0 if pair == "mean" else int(pair)
            if not 0 <= i < len(r.pair_ids):
                raise ThinklensError(f"pair {pair} out of range: {len(r.pair_ids)} pairs")
            nld, title, labels = r.nld[i], f"pair {r.pair_ids[i]}", [str(t) for t in r.tokens[i]]
        pos = [int(x) for x in r.positions[i]]
        marks = {k: pos.index(r.named[i][k]) for k in ("answer_flip", "final") if r.named[i].get(k) in pos}
        data.update(nld=np.asarray(nld, dtype=float).T, layers=[int(x) for x in r.layers], labels=labels,
                    pair_title=title, marks=marks)  # nld: [n_patched_layers, n_positions]
    if data["a2r"] is None and data["nld"] is None:
        raise ThinklensError(f"{run_dir}: neither attention/head_scores.npz nor patching/result.json to animate")
    return data


def _n_layers(d: dict[str, Any]) -> int:
    if d["a2r"] is not None:
        return int(d["a2r"].shape[0])
    return int(max(d["layers"])) + 1


def layer_animation(run_dir: str | Path, out_dir: str | Path | None = None, *, pair: int | str = "mean",
                    fps: float = 1.0, formats: tuple[str, ...] = ("gif", "mp4")) -> dict[str, Any]:
    """Write ``layers.gif`` (and ``layers.mp4`` when ffmpeg is on PATH) under ``out_dir`` (default
    ``RUN/animations``). Returns ``{"gif": path, "mp4": path | None, "frames": n_layers, "notes": [...]}``.
    From a run directory (here only its attention scores: 4 layers x 8 heads):

    >>> import numpy as np
    >>> from pathlib import Path
    >>> Path("anim_run/attention").mkdir(parents=True, exist_ok=True)
    >>> np.savez("anim_run/attention/head_scores.npz", ids=np.array(["a", "b"]),
    ...          a2r=np.random.default_rng(0).uniform(size=(2, 4, 8)))
    >>> res = layer_animation("anim_run", formats=("gif",))
    >>> res["frames"], res["gif"]
    (4, 'anim_run/animations/layers.gif')
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.animation import FFMpegWriter, FuncAnimation, PillowWriter
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    d = _frames_data(run_dir, pair)
    n_layers = _n_layers(d)
    out = Path(out_dir) if out_dir is not None else run_dir / ANIMATION_DIR
    out.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(10, 3.8))
    ax, bx = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    ymax = float(np.nanmax(d["a2r"])) * 1.1 if d["a2r"] is not None else 1.0
    nld_lim = (min(-0.1, float(np.nanmin(d["nld"]))), max(1.1, float(np.nanmax(d["nld"])))) \
        if d["nld"] is not None else (0, 1)

    def draw(layer: int) -> list:
        ax.clear()
        bx.clear()
        if d["a2r"] is not None:
            vals = d["a2r"][layer]  # [H]
            colors = ["tab:orange" if (layer, h) in d["rfh"] else "tab:gray" for h in range(len(vals))]
            ax.bar(range(len(vals)), vals, color=colors)
            ax.set_ylim(0, ymax)
            ax.set_xlabel("head")
            ax.set_ylabel("a2r (mean over traces)")
        else:
            ax.text(0.5, 0.5, "no attention scores", ha="center", transform=ax.transAxes)
        ax.set_title(f"layer {layer}: answer→reasoning attention (orange = RFH)", fontsize=9)
        if d["nld"] is not None and layer in d["layers"]:
            row = d["nld"][d["layers"].index(layer)]  # [n_positions]
            bx.bar(range(len(row)), np.nan_to_num(row), color="tab:blue")
            for key, color in (("answer_flip", "tab:red"), ("final", "tab:green")):
                if key in d["marks"]:
                    bx.axvline(d["marks"][key], color=color, lw=1, ls="--", label=key)
            if d["marks"]:
                bx.legend(fontsize=7, loc="upper left")
            bx.set_ylim(*nld_lim)
            step = max(1, len(row) // 20)
            bx.set_xticks(range(0, len(row), step), [d["labels"][j] for j in range(0, len(row), step)],
                          fontsize=6, rotation=90)
            bx.set_ylabel("NLD")
            bx.set_title(f"patching layer {layer} ({d['pair_title']})", fontsize=9)
        else:
            bx.text(0.5, 0.5, "layer not patched" if d["nld"] is not None else "no patching result",
                    ha="center", transform=bx.transAxes)
        fig.tight_layout()
        return []

    anim = FuncAnimation(fig, draw, frames=range(n_layers), blit=False)
    res: dict[str, Any] = {"gif": None, "mp4": None, "frames": n_layers, "notes": []}
    if "gif" in formats:
        res["gif"] = str(out / "layers.gif")
        anim.save(res["gif"], writer=PillowWriter(fps=fps))
    if "mp4" in formats:
        if shutil.which("ffmpeg") and FFMpegWriter.isAvailable():
            res["mp4"] = str(out / "layers.mp4")
            anim.save(res["mp4"], writer=FFMpegWriter(fps=fps))
        else:
            res["notes"].append("MP4 skipped: ffmpeg is not on PATH (install ffmpeg for an MP4; the GIF is written)")
    return res

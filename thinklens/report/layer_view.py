"""Interactive layer-by-layer view: a slider over layers showing, side by side, where the answer's attention goes
(per-head answer→reasoning attention ``a2r`` at that layer, Reasoning-Focus Heads highlighted) and what patching
that layer does (NLD per token position of one contrastive pair).

Why: the paper's replication ships this as GIF animations (one frame per layer). Reading both panels at the same
layer shows the mechanism in one place: RFHs in the middle layers read the reasoning, and patching the residual
stream at the reasoning's answer token flips the answer up to those layers and stops mattering after them.

The view is data + a small inline script (no dependency, no network): :func:`layer_view_data` builds the JSON from
saved results, :func:`layer_view_html` returns the HTML fragment embedded in ``report.html``.
"""
from __future__ import annotations

import json
from typing import Any

import numpy as np

MAX_PAIRS = 8  # pairs embedded in the view (the data size stays small)


def _finite(x: Any) -> Any:
    """Nested lists of floats with NaN/inf as None (strict JSON)."""
    arr = np.asarray(x, dtype=float)
    out = np.round(arr, 4).astype(object)
    out[~np.isfinite(arr)] = None
    return out.tolist()


def layer_view_data(head_scores: dict[str, np.ndarray] | None, patching: dict[str, Any] | None,
                    top_heads: list[list[float]] | None = None) -> dict[str, Any]:
    """JSON-ready data of the view.

    ``head_scores``: the arrays of ``head_scores.npz`` (``a2r`` [n_traces, n_layers, n_heads]).
    ``patching``: normalized patching data (see :func:`thinklens.pipeline_stages.patching_view`): ``layers`` and
    ``pairs`` = [{id, tokens, positions, nld [n_patched_layers, n_positions], flip_index, final_index}].
    ``top_heads``: [[layer, head, score], ...] Reasoning-Focus Heads to highlight.
    """
    data: dict[str, Any] = {"n_layers": 0, "n_heads": 0, "a2r": None, "rfh": [], "patching": None}
    if head_scores is not None and "a2r" in head_scores:
        a2r = np.asarray(head_scores["a2r"], dtype=float)  # [n_traces, n_layers, n_heads]
        mean = np.nanmean(a2r, axis=0)  # [n_layers, n_heads]
        data.update(n_layers=int(mean.shape[0]), n_heads=int(mean.shape[1]), a2r=_finite(mean),
                     a2r_max=float(np.nanmax(mean)) if np.isfinite(mean).any() else 1.0)
    if top_heads:
        data["rfh"] = [[int(t[0]), int(t[1])] for t in top_heads]
    if patching and patching.get("pairs"):
        pairs = []
        for p in patching["pairs"][:MAX_PAIRS]:
            pairs.append({"id": str(p["id"]), "tokens": [str(t) for t in p["tokens"]],
                          "nld": _finite(p["nld"]), "flip_index": p.get("flip_index"),
                          "final_index": p.get("final_index")})
        data["patching"] = {"layers": [int(x) for x in patching["layers"]], "pairs": pairs}
        if not data["n_layers"]:
            data["n_layers"] = int(max(patching["layers"])) + 1
    return data


_FRAGMENT = """
<div class="layer-view" id="layer-view">
  <div class="lv-controls">
    <label>Layer <input type="range" id="lv-layer" min="0" max="0" value="0" step="1"></label>
    <span id="lv-layer-label" class="lv-label"></span>
    <button type="button" id="lv-play">&#9654; play</button>
    <label>Pair <select id="lv-pair"></select></label>
  </div>
  <div class="lv-panels">
    <figure><canvas id="lv-heads" width="500" height="260"></canvas>
      <figcaption>Answer&rarr;reasoning attention (a2r) per head at this layer, mean over traces;
      Reasoning-Focus Heads in orange.</figcaption></figure>
    <figure><canvas id="lv-nld" width="500" height="260"></canvas>
      <figcaption>Patching this layer: NLD per token position (1 = the clean answer is restored);
      the reasoning's answer token is marked.</figcaption></figure>
  </div>
  <p id="lv-summary" class="lv-summary"></p>
</div>
<script type="application/json" id="lv-data">__DATA__</script>
"""


def layer_view_html(data: dict[str, Any]) -> str:
    """The HTML fragment (controls, two canvases, embedded JSON); the drawing script is in ``template.html``."""
    payload = json.dumps(data, ensure_ascii=False, allow_nan=False).replace("</", "<\\/")
    return _FRAGMENT.replace("__DATA__", payload)

"""One trace's reasoning steps, each shaded by every step method side by side: a self-contained HTML fragment.

Input is the steps stage's output directory (``steps.jsonl``); no model. One row per step: its number, category,
text (escaped, whitespace kept) and one cell per method that ran, shaded by the value relative to the trace's largest
absolute value for that method (red = positive, blue = negative; sqrt scale so weak values stay visible), the
method's top step outlined. Inline CSS scoped under ``.tl-steps`` only: no script, no network, safe to embed in the
report or in an ``iframe``.

>>> import json, tempfile
>>> from pathlib import Path
>>> d = Path(tempfile.mkdtemp())
>>> steps = [("1<2\\n", "computation", 0.1), ("Final answer is 2.", "final_answer", 0.8)]
>>> rows = [{"id": "t", "step": i, "tok_start": i, "tok_end": i + 1, "text": s, "category": c, "attention": a,
...          "suppression": None, "truncation": None, "resampling": None} for i, (s, c, a) in enumerate(steps)]
>>> _ = (d / "steps.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in rows))
>>> out = render_step_view(d)
>>> "1&lt;2" in out and "attention" in out and "<script" not in out
True
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from thinklens.errors import ThinklensError

METHOD_LABELS = {"attention": "attention (RFHs)", "suppression": "suppression (KL)",
                 "answer_suppression": "answer suppression (KL)",
                 "truncation": "truncation (effect)", "resampling": "resampling (importance)"}

_CSS = """
.tl-steps{font-family:system-ui,sans-serif;color:#222}
.tl-steps table{border-collapse:collapse;width:100%;font-size:13px}
.tl-steps th,.tl-steps td{border:1px solid #ddd;padding:3px 6px;vertical-align:top}
.tl-steps th{background:#f4f4f4;text-align:left}
.tl-steps td.txt{font-family:ui-monospace,monospace;white-space:pre-wrap;max-width:46em}
.tl-steps td.v{text-align:right;font-variant-numeric:tabular-nums;min-width:5.5em}
.tl-steps td.top{outline:2px solid #000;outline-offset:-2px;font-weight:bold}
.tl-steps .cat{font-size:11px;color:#555}.tl-steps .note{color:#666;font-size:12px}
"""


def _load_rows(steps_dir: str | Path) -> list[dict[str, Any]]:
    from thinklens.jsonl import read_records

    path = Path(steps_dir) / "steps.jsonl"
    if not path.exists():
        raise FileNotFoundError(f"no {path} (run `thinklens steps`)")
    return list(read_records(path))


def _cell(value: float | None, vmax: float, top: bool) -> str:
    if value is None:
        return '<td class="v">–</td>'
    alpha = float(np.sqrt(min(1.0, abs(value) / vmax))) if vmax > 0 else 0.0
    rgb = "220,40,40" if value >= 0 else "40,90,220"
    cls = "v top" if top else "v"
    return f'<td class="{cls}" style="background:rgba({rgb},{alpha:.3f})">{html.escape(f"{value:.3g}")}</td>'


def render_step_view(steps_dir: str | Path, trace_id: str | None = None, *, max_steps: int = 400) -> str:
    """HTML fragment for ``trace_id`` (default: the first trace of ``steps.jsonl``)."""
    from thinklens.steps.agreement import METHODS

    rows = _load_rows(steps_dir)
    if not rows:
        raise ThinklensError(f"{steps_dir}: steps.jsonl is empty")
    tid = trace_id if trace_id is not None else rows[0]["id"]
    steps = [r for r in rows if r["id"] == tid]
    if not steps:
        raise ThinklensError(f"trace {tid!r} is not in {steps_dir}/steps.jsonl")
    methods = [m for m in METHODS if any(r.get(m) is not None for r in steps)]
    vmax, top = {}, {}
    for m in methods:
        v = np.array([np.nan if r.get(m) is None else r[m] for r in steps], dtype=float)
        vmax[m] = float(np.nanmax(np.abs(v)))
        top[m] = int(np.nanargmax(v))
    head = "".join(f"<th>{html.escape(METHOD_LABELS[m])}</th>" for m in methods)
    body = []
    for k, r in enumerate(steps[:max_steps]):
        cells = "".join(_cell(r.get(m), vmax[m], k == top[m]) for m in methods)
        body.append(f'<tr><td>{int(r["step"])}</td><td class="cat">{html.escape(str(r["category"]))}</td>'
                    f'<td class="txt">{html.escape(str(r["text"]))}</td>{cells}</tr>')
    more = (f'<p class="note">{len(steps) - max_steps} more steps not shown.</p>' if len(steps) > max_steps else "")
    note = ("Each cell is shaded by the step's value relative to the largest absolute value of that method in this "
            "trace (red positive, blue negative, sqrt scale); the outlined cell is the method's top step.")
    return (f'<div class="tl-steps"><style>{_CSS}</style><h3>Steps of trace {html.escape(str(tid))}</h3>'
            f'<p class="note">{html.escape(note)}</p><table><thead><tr><th>#</th><th>category</th><th>step</th>'
            f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}</div>")


def write_step_view(steps_dir: str | Path, path: str | Path, trace_id: str | None = None) -> Path:
    """A standalone HTML document around :func:`render_step_view` (for opening in a browser).

    >>> import json, tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "steps.jsonl").write_text(json.dumps({"id": "t", "step": 0, "tok_start": 0, "tok_end": 1,
    ...     "text": "x", "category": "other", "attention": 1.0}) + "\\n")
    >>> write_step_view(d, d / "view.html").read_text().startswith("<!DOCTYPE html>")
    True
    """
    frag = render_step_view(steps_dir, trace_id)
    doc = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>thinklens steps</title></head><body>"
           f"{frag}</body></html>\n")
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(doc, encoding="utf-8")
    return p

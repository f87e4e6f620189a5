"""Self-contained HTML view of one trace: each reasoning token shaded by the attention it receives from the answer.

Input is a saved :class:`thinklens.attention.tokens.TokenAttention` (or the object). Output is one HTML file with
inline CSS only (no scripts from a CDN, no network), all text HTML-escaped, a tooltip per token with its value, cue
tokens underlined, and a legend. Colour is the value relative to the trace's maximum (sqrt scale, so that weak
but non-zero reading stays visible).
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np

from thinklens.attention.heads import head_name
from thinklens.attention.tokens import TokenAttention

_CSS = """
body{font-family:system-ui,sans-serif;margin:1.2em;max-width:60em;color:#222}
.trace{font-family:ui-monospace,monospace;white-space:pre-wrap;line-height:1.7;border:1px solid #ccc;padding:.8em}
.t{border-radius:2px}.cue{text-decoration:underline;text-decoration-color:#c00;text-decoration-thickness:2px}
.legend{display:flex;align-items:center;gap:.5em;margin:.6em 0}.bar{width:14em;height:.9em;
background:linear-gradient(to right,rgba(220,40,40,0),rgba(220,40,40,1));border:1px solid #999}
.answer{background:#eef;padding:.4em;font-family:ui-monospace,monospace;white-space:pre-wrap}
"""


def render_token_view(data: TokenAttention | str | Path, path: str | Path | None = None, title: str | None = None
                      ) -> str:
    """Return (and optionally write) the HTML document."""
    ta = data if isinstance(data, TokenAttention) else TokenAttention.load(data)
    v = ta.mean.astype(np.float64)  # [n_reasoning]
    vmax = float(v.max()) if v.size and v.max() > 0 else 1.0
    spans = []
    for tok, val, cue in zip(ta.tokens, v, ta.cue_mask):
        alpha = float(np.sqrt(max(val, 0.0) / vmax))
        cls = "t cue" if cue else "t"
        spans.append(f'<span class="{cls}" style="background:rgba(220,40,40,{alpha:.3f})" '
                     f'title="{html.escape(f"{val:.4g}", quote=True)}">{html.escape(tok)}</span>')
    heads = ", ".join(head_name(layer, head) for layer, head in ta.heads)
    title = title or f"Answer→reasoning attention, trace {ta.id}"
    doc = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body><h2>{html.escape(title)}</h2>"
        f"<p>Heads (mean): {html.escape(heads)}. Each reasoning token is shaded by the attention it receives from the "
        "answer tokens (mean over answer queries); hover for the value. Underlined: self-reflection cue tokens.</p>"
        f"<div class='legend'><span>0</span><div class='bar'></div><span>{vmax:.4g}</span>"
        f"<span>(sqrt scale)</span></div><div class='trace'>{''.join(spans)}</div>"
        f"<h3>Answer</h3><div class='answer'>{html.escape(ta.answer_text)}</div></body></html>\n"
    )
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(doc, encoding="utf-8")
    return doc

"""``report.html``: one self-contained page (figures as base64 PNG, data as inline JSON, no network) that a
researcher can mail to a colleague.

Built only from saved files of a run directory (``results.json``, ``evaluation.json``, ``attention/``,
``heads.json``, ``patching/``), so ``thinklens report DIR`` rebuilds it anywhere without a model. Layout follows
the paper: headline findings, (1) quality impact of reasoning, (2) attention from the answer to the reasoning
(Reasoning-Focus Heads), (3) activation patching, plus the interactive layer-by-layer view. Every figure carries
a short explanation and the exact command that reproduces its data.

Figures come from the stage figure modules (``thinklens.report.fig_*``) when they are installed; a figure whose
module or data is missing is replaced by a note, never by a broken image.
"""
from __future__ import annotations

import base64
import html
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinklens.errors import ThinklensError
from thinklens.report.layer_view import layer_view_data, layer_view_html

TEMPLATE = Path(__file__).with_name("template.html")


@dataclass
class Figure:
    """One figure of the report: where it comes from, what it shows and how to reproduce it."""

    key: str
    section: str  # "quality" | "attention" | "patching"
    title: str
    explanation: str
    command: str
    png: Path | None = None
    note: str | None = None
    redraw: str = ""


def esc(x: Any) -> str:
    return html.escape(str(x))


def _fmt(x: Any, nd: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{nd}g}" if abs(x) < 1e-3 and x != 0 else f"{x:.{nd}f}"
    return str(x)


# ------------------------------------------------------------------------------------------------ figures
# (key, section, title, module, figure function fn(input, out_png), explanation, command key)
FIGURE_SPECS: list[tuple[str, str, str, str, str, str, str]] = [
    ("accuracy", "quality", "Accuracy with vs without reasoning", "thinklens.report.fig_empirical",
     "plot_quality_impact",
     "Share of problems answered correctly when the model reasons freely vs when its thinking is forced to "
     "finish at once (R1's ``Okay, I think I have finished thinking.``); error bars are 95% intervals.",
     "evaluate"),
    ("rfh_heatmap", "attention", "Answer→reasoning attention per (layer, head)", "thinklens.report.fig_attention",
     "plot_head_heatmap",
     "Attention from answer tokens to reasoning tokens (sum over reasoning keys, mean over answer queries, mean "
     "over traces). Boxed cells are the top Reasoning-Focus Heads; stability is the share of bootstrap resamples "
     "of traces in which a head stays in the top k.", "heads"),
    ("layer_profile", "attention", "Answer→reasoning attention per layer", "thinklens.report.fig_attention",
     "plot_layer_profile",
     "a2r per layer, mean and max over the layer's heads (mean over traces): which layers read the reasoning.",
     "attention"),
    ("decomposition", "attention", "Where the answer attends (top heads)", "thinklens.report.fig_attention",
     "plot_decomposition",
     "Attention mass of answer tokens by key segment (reasoning, prompt, answer, BOS, <think>, </think>) for the "
     "top Reasoning-Focus Heads, one box per segment over traces.", "attention"),
    ("cues", "attention", "Cue statistics", "thinklens.report.fig_attention",
     "plot_cues",
     "Which reasoning tokens the RFHs attend to most (e.g. the written answer, self-correction cues such as "
     "``Wait``) compared with other reasoning tokens (1 = the trace's mean reasoning token; permutation p-value).",
     "cues"),
    ("patching_layers", "patching", "Patching effect per layer", "thinklens.report.fig_patching",
     "plot_layer_curves",
     "Normalized logit difference (NLD) when the clean run's residual stream at one layer and token is patched "
     "into the corrupted run: 1 = the clean answer is fully restored, 0 = no effect. Curves: the reasoning's "
     "answer-flip token and the final answer token, mean over pairs.", "patching"),
    ("patching_heatmap", "patching", "Patching heatmap (layer × position)", "thinklens.report.fig_patching",
     "plot_pair_heatmap",
     "NLD for every (layer, token position) of a contrastive pair: the answer travels from the reasoning's "
     "answer token to the final answer through the middle layers.", "patching"),
]


# figure functions that take a stage's own output directory instead of the run directory
_INPUT_DIR = {"thinklens.report.fig_patching": "patching"}


def _call_figure(module: str, name: str, run_dir: Path, out: Path) -> tuple[Path | None, str | None]:
    """Call the stage figure function ``fn(input, out_png)``; return (png, note). A figure whose data is missing or
    that fails becomes a note: one broken figure must not cost the whole report."""
    src = run_dir / _INPUT_DIR[module] if module in _INPUT_DIR else run_dir
    fn = getattr(importlib.import_module(module), name)
    try:
        fn(src, out)
    except (FileNotFoundError, ThinklensError) as err:
        return None, f"no data ({err})"
    except Exception as err:  # noqa: BLE001
        return None, f"{module}.{name} failed ({type(err).__name__}: {err})"
    return (out, None) if out.exists() else (None, f"{module}.{name} produced no image")


def render_figures(run_dir: Path, commands: dict[str, str]) -> list[Figure]:
    """Render every figure into ``run_dir/figures`` (missing data or modules become notes)."""
    import matplotlib

    matplotlib.use("Agg")
    fig_dir = Path(run_dir) / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    for key, section, title, module, name, explanation, cmd in FIGURE_SPECS:
        png, note = _call_figure(module, name, Path(run_dir), fig_dir / f"{key}.png")
        figures.append(Figure(key, section, title, explanation, commands.get(cmd, ""), png, note,
                              commands.get("report", "")))
    return figures


def _img(png: Path) -> str:
    data = base64.b64encode(Path(png).read_bytes()).decode("ascii")
    return f'<img alt="{esc(png.stem)}" src="data:image/png;base64,{data}">'


def _figure_html(f: Figure) -> str:
    body = _img(f.png) if f.png else f'<p class="note">Figure not available: {esc(f.note)}</p>'
    return (f'<figure class="fig" id="fig-{esc(f.key)}"><h3>{esc(f.title)}</h3>{body}<figcaption>'
            f"{esc(f.explanation)}<br>Reproduce the data: <code>{esc(f.command)}</code>; redraw "
            f"<code>figures/{esc(f.key)}.png</code>: <code>{esc(f.redraw)}</code></figcaption></figure>")


# ------------------------------------------------------------------------------------------------ sections
def headline_html(results: dict[str, Any]) -> str:
    """The three findings of the paper, each with its number and a verdict."""
    items = []
    for model, ev in (results.get("evaluation") or {}).items():
        gap = None
        if ev.get("accuracy_with_reasoning") is not None and ev.get("accuracy_without_reasoning") is not None:
            gap = ev["accuracy_with_reasoning"] - ev["accuracy_without_reasoning"]
        ok = gap is not None and gap > 0 and (ev.get("p_value") or 1) < 0.05
        ci = ev.get("difference_ci95") or [None, None]
        items.append(f'<li><span class="{"ok" if ok else "no"}">Reasoning {"helps" if ok else "does not clearly help"}'
                     f"</span> ({esc(model)}): accuracy {_fmt(ev.get('accuracy_with_reasoning'))} with vs "
                     f"{_fmt(ev.get('accuracy_without_reasoning'))} without reasoning, gap {_fmt(gap)} "
                     f"(95% CI {_fmt(ci[0])} to {_fmt(ci[1])}), McNemar p = {_fmt(ev.get('p_value'))}, "
                     f"n = {esc(ev.get('n'))}.</li>")
    heads = results.get("heads") or {}
    if heads.get("top"):
        top = heads["top"][:5]
        per = (heads.get("stability") or {}).get("per_head") or []
        desc = ", ".join(f"L{int(t[0])}H{int(t[1])} (a2r {_fmt(t[2])}" + (f", stability {per[i]:.2f})" if i < len(per)
                                                                          else ")") for i, t in enumerate(top))
        ratio = heads.get("top_to_median_ratio")
        mean_stab = (heads.get("stability") or {}).get("mean")
        ok = bool(per) and per[0] >= 0.8 and (mean_stab is None or mean_stab >= 0.8)  # a reproducible top-k
        items.append(f'<li><span class="{"ok" if ok else "no"}">Reasoning-Focus Heads '
                     f'{"exist" if ok else "are not clearly separated"}</span>: top heads {esc(desc)}'
                     + (f"; the top head puts {ratio:.2f}x the median head's attention on the reasoning"
                        if ratio else "")
                     + ". Stability = share of bootstrap resamples of the traces keeping the head in the top "
                     f"{esc(heads.get('top_k'))}.</li>")
    pt = results.get("patching") or {}
    if pt.get("nld_answer_flip_token"):
        vals = [v for v in pt["nld_answer_flip_token"] if v is not None]
        best = max(vals) if vals else None
        layer = pt["layers"][pt["nld_answer_flip_token"].index(best)] if best is not None else None
        ok = best is not None and best >= 0.8
        items.append(f'<li><span class="{"ok" if ok else "no"}">Patching the reasoning '
                     f'{"flips" if ok else "does not flip"} the answer</span>: max NLD of the answer-flip token '
                     f"{_fmt(best)} (layer {esc(layer)}), over {esc(pt.get('n_pairs'))} contrastive pairs.</li>")
    for stage, note in (results.get("notes") or {}).items():
        items.append(f'<li class="note">{esc(stage)}: {esc(note)}</li>')
    if not items:
        items.append("<li>No results yet: run <code>thinklens run</code> first.</li>")
    return '<div class="headline" id="headline"><h2>Headline findings</h2><ul>' + "".join(items) + "</ul></div>"


def _evaluation_table(results: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{esc(m)}</td><td>{esc(e.get('n'))}</td><td>{_fmt(e.get('accuracy_with_reasoning'))}</td>"
        f"<td>{_fmt(e.get('accuracy_without_reasoning'))}</td><td>{esc(_fmt_ci(e.get('difference_ci95')))}</td>"
        f"<td>{_fmt(e.get('p_value'))}</td></tr>" for m, e in (results.get("evaluation") or {}).items())
    if not rows:
        return ""
    return ("<table><tr><th>model</th><th>n</th><th>acc. with reasoning</th><th>acc. without</th>"
            f"<th>gap 95% CI</th><th>McNemar p</th></tr>{rows}</table>")


def _fmt_ci(ci: Any) -> str:
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "n/a"


def _token_view(run_dir: Path, command: str) -> str:
    path = Path(run_dir) / "attention" / "token_view.html"
    if not path.exists():
        return '<p class="note">No token view in this run (attention/token_view.html).</p>'
    doc = path.read_text(encoding="utf-8")
    return ('<h3>Token view</h3><iframe class="token-view" title="token view" sandbox="allow-same-origin" '
            f'srcdoc="{esc(doc)}"></iframe><p>One trace: each reasoning token is shaded by the attention the answer '
            "pays to it through the top Reasoning-Focus Heads; self-correction cues are underlined.<br>"
            f"Reproduce: <code>{esc(command)}</code></p>")


def _heads_extra(results: dict[str, Any], cmds: dict[str, str]) -> str:
    """Induction-head overlap and cue numbers, in words."""
    heads = results.get("heads") or {}
    parts = []
    ov = heads.get("induction_overlap")
    if ov:
        parts.append(f"{ov['overlap']} of the top {ov['k_found']} Reasoning-Focus Heads are also among the top "
                     f"{ov['k_reference']} induction heads (hypergeometric p = {_fmt(ov['p_value'])}; "
                     f"<code>{esc(cmds.get('induction', ''))}</code>).")
    cues = heads.get("cues") or {}
    if cues.get("n_cue_tokens") == 0:
        parts.append(f"No self-correction cue (Wait, Alternatively, ...) occurs in the {esc(cues.get('n_traces'))} "
                     "traces with stored token attention, so the cue statistics are empty for this run.")
    elif cues.get("mean_cue") is not None:
        source = f" Measured on {esc(cues['source'])}." if cues.get("source") else ""
        parts.append(f"Cue tokens receive {_fmt(cues['mean_cue'])}x the trace's mean reasoning-token attention "
                     f"(other reasoning tokens {_fmt(cues.get('mean_other'))}x; permutation p = "
                     f"{_fmt(cues.get('p_value'))}, {esc(cues.get('n_cue_tokens'))} cue tokens).{source}")
    return "<p>" + " ".join(parts) + "</p>" if parts else ""


def build_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Render the figures and write ``run_dir/report.html`` (or ``out``) from the saved files; return its path."""
    from thinklens.pipeline import RunPaths, commands, load_config, read_json, write_json
    from thinklens.pipeline_stages import headline_results, load_head_scores, load_patching

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ThinklensError(f"no such run directory: {run_dir}")
    config = load_config(run_dir)
    paths = RunPaths(run_dir)
    old = read_json(paths.results) or {}
    results = headline_results(paths, config)  # always from the stage files: they are the source of truth
    results.update({k: old[k] for k in ("timings", "notes") if k in old})
    write_json(paths.results, results)
    cmds = commands(config)
    figures = render_figures(run_dir, cmds)
    top = (results.get("heads") or {}).get("top")
    view = layer_view_data(load_head_scores(paths), load_patching(paths, with_pairs=True), top)

    def section(name: str) -> str:
        return "".join(_figure_html(f) for f in figures if f.section == name)

    versions = results.get("versions") or {}
    body = [
        f"<h1>thinklens report: {esc(config.model)} on {esc(config.dataset)}</h1>",
        f'<p class="meta">seed {esc(config.seed)} · {esc(config.limit)} problems · {esc(config.n_pairs)} pairs · '
        + " · ".join(f"{esc(k)} {esc(v)}" for k, v in versions.items()) + "</p>",
        headline_html(results),
        "<h2>1. Quality impact of reasoning</h2>",
        "<p>Each problem is answered twice, with free reasoning and with the thinking forced to finish "
        "immediately; correctness is paired by problem (McNemar's exact test, bootstrap CI of the gap).</p>",
        _evaluation_table(results), section("quality"),
        "<h2>2. Attention from the answer to the reasoning</h2>", section("attention"), _heads_extra(results, cmds),
        _token_view(run_dir, cmds.get("cues", "")),
        "<h2>3. Activation patching</h2>",
        "<p>Contrastive pairs differ in one operand, hence in the reasoning's intermediate results and answer. "
        "Patching a clean activation into the corrupted run at one (layer, token) and measuring how far the answer "
        "logit difference moves toward the clean one shows where the answer is read from.</p>",
        section("patching"),
        "<h2>Layer by layer</h2><p>Move the slider (or press play) to walk through the layers: left, how much "
        "each head of the layer attends from the answer to the reasoning; right, the patching effect of that "
        "layer at every token position of one pair.</p>",
        layer_view_html(view),
        f"<p>Reproduce: <code>{esc(cmds['report'])}</code> (from the saved head scores and patching results).</p>",
        "<h2>Reproduce</h2><pre>" + esc("\n".join(f"# {k}\n{v}" for k, v in cmds.items())) + "</pre>",
    ]
    title = f"thinklens report: {config.model} / {config.dataset}"
    page = TEMPLATE.read_text(encoding="utf-8").replace("__TITLE__", esc(title)).replace("__BODY__", "\n".join(body))
    out = Path(out) if out else run_dir / "report.html"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(out)
    return out

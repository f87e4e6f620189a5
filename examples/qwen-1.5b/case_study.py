"""The numbers of docs/case-study-qwen-1.5b.md, read from the study's run directories (never typed by hand).

Why: the case study must say what the study measured, and a rerun must be checkable against it. This script reads
``STUDY/{arithmetic,patching,math500}/results.json`` (whichever parts have finished), the study's ``study.json``
(wall time and peak memory of every invocation) and the paper's published constants, and writes
``STUDY/case-study.md`` (tables) and ``STUDY/case-study.json`` (the same numbers); ``--figures DIR`` copies the
figures the doc shows and draws the RFH layers beside the paper's::

    python examples/qwen-1.5b/case_study.py runs/qwen15-study --figures docs/case-study-qwen-1.5b
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REFERENCE = HERE.parents[1].parent / "shared" / "reference"
PAPER_MODEL = "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"  # same architecture, other weights
N_LAYERS = 28
THIRDS = ((0, 9, "lower (0-9)"), (10, 18, "middle (10-18)"), (19, 27, "upper (19-27)"))
FIGURES = {"arithmetic": ("accuracy", "rfh_heatmap", "layer_profile", "ablation", "steps_agreement",
                          "steps_truncation", "faithfulness_rates", "faithfulness_heads"),
           "patching": ("patching_layers", "patching_heatmap"),
           "math500": ("accuracy", "rfh_heatmap", "layer_profile", "ablation")}


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _f(x: float | None, nd: int = 2) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def thirds(heads: list[list[int]]) -> list[int]:
    """How many of ``[layer, head]`` fall in each third of the 28 layers."""
    return [sum(lo <= h[0] <= hi for h in heads) for lo, hi, _ in THIRDS]


def shared_heads(found: list[list], paper: list[list], n_heads: int) -> dict:
    """Heads two top-k lists share, and the chance of as many or more among ``n_heads`` (hypergeometric)."""
    from scipy.stats import hypergeom

    mine, theirs = [tuple(h[:2]) for h in found], [tuple(h[:2]) for h in paper]
    shared = sorted(set(mine) & set(theirs))
    return {"found": [list(h) for h in mine], "paper": [list(h) for h in theirs], "shared": [list(h) for h in shared],
            "p_value": float(hypergeom.sf(len(shared) - 1, n_heads, len(theirs), len(mine)))}


def faithfulness_details(path: Path) -> dict:
    """From a faithfulness ``summary.json``: the share of traces that mention the hint per family, and the mechanism
    by label (faithful / unfaithful / ignored): hint vs reasoning attention of the answer's value positions in the
    hint-reading heads, hint suppression, and the patching curve at the hint span."""
    summ = _load(path)
    if not summ:
        return {}
    out: dict = {"verbalized_share": {f: (v.get("verbalized_share") or {}).get("rate")
                                      for f, v in (summ.get("families") or {}).items()},
                 "notes": summ.get("notes", [])}
    mech = summ.get("mechanism") or {}
    for label in ("faithful", "unfaithful", "ignored"):
        att = (mech.get("attention") or {}).get(label) or {}
        sup = (mech.get("suppression") or {}).get(label) or {}
        pat = (mech.get("patching") or {}).get(label) or {}
        if not att.get("n"):
            continue
        out.setdefault("mechanism", {})[label] = {
            "n": att["n"], **{k: (att.get(k) or {}).get("mean") for k in ("v2hint_top_heads", "v2r_top_heads",
                                                                           "a2hint_rfh")},
            **{k: (sup.get(k) or {}).get("mean") for k in ("kl_answer_scope", "kl_total_scope",
                                                            "to_gold_answer_scope")},
            "n_suppression": sup.get("n", 0), "n_patched": pat.get("n", 0),
            "patching_nld": [x.get("mean") for x in pat.get("nld", [])],
            "hint_heads": [[h["layer"], h["head"], h["a2hint"], h["rfh"]] for h in att.get("top_heads", [])[:5]]}
    return out


def summarize(study: Path, reference: Path) -> dict:
    """Every number the case study quotes, by part."""
    paper = _load(reference / "paper_reference.json") or {}
    out: dict = {"study": _load(study / "study.json"), "paper_rfh": paper.get("reasoning_focus_heads_top10", {}).get(
        PAPER_MODEL), "paper_accuracy": paper.get("math500_accuracy_percent", {}).get(PAPER_MODEL.split("/")[1])}
    for part in ("arithmetic", "patching", "math500"):
        res = _load(study / part / "results.json")
        if res is None:
            continue
        p: dict = {}
        ev = next(iter((res.get("evaluation") or {}).values()), None)
        if ev and part != "patching":
            p["evaluation"] = {k: ev.get(k) for k in ("n", "accuracy_with_reasoning", "accuracy_without_reasoning",
                                                      "difference_ci95", "p_value", "n_forced_close")}
        heads = res.get("heads")
        if heads and heads.get("top"):
            top = heads["top"]
            p["rfh"] = {"top": top, "stability": heads["stability"]["per_head"], "thirds": thirds(top),
                        "median_head_a2r": heads.get("median_head_a2r"), "cues": heads.get("cues"),
                        "retrieval_overlap": heads.get("retrieval_overlap"),
                        "induction_overlap": heads.get("induction_overlap")}
            if out["paper_rfh"]:
                p["rfh"]["shared_with_paper"] = sorted({tuple(h[:2]) for h in top} & {tuple(h) for h in
                                                                                      out["paper_rfh"]})
        over = (_load(study / part / "heads.json") or {}).get("overlaps") or {}
        for kind, key in (("induction", "induction_heads_top10"), ("retrieval", "retrieval_heads_top10")):
            found = ((over.get(kind) or {}).get("heads_above") or [])[:10]
            ref = [h[0] if isinstance(h[0], list) else h for h in paper.get(key, {}).get(PAPER_MODEL, [])]
            if found and ref:
                p.setdefault("base_heads", {})[kind] = shared_heads(found, ref, over.get("n_heads_total", 336))
        if res.get("ablation"):
            p["ablation"] = res["ablation"]
        if res.get("patching"):
            rej = [json.loads(line) for line in (study / part / "patching" / "contrastive_pairs.rejects.jsonl")
                   .read_text().splitlines() if line] if (study / part / "patching" /
                                                          "contrastive_pairs.rejects.jsonl").is_file() else []
            p["patching"] = {**res["patching"], "rejected": dict(Counter(re.sub(r"'[^']*'", "…", str(
                r.get("reason", "?")).split(": ", 1)[-1]).split(" (")[0] for r in rej))}
        if res.get("steps"):
            p["steps"] = {k: res["steps"].get(k) for k in ("n_traces", "n_steps", "spearman", "truncation",
                                                           "receiver_rfh_overlap")}
        if res.get("faithfulness"):
            p["faithfulness"] = {k: res["faithfulness"].get(k) for k in ("table", "groups", "mechanism_headline")}
            p["faithfulness"].update(faithfulness_details(study / part / "faithfulness" / "summary.json"))
        if res.get("timings"):
            p["timings"] = res["timings"]
        out[part] = p
    math = out.get("math500")
    if math is not None:
        ids = {json.loads(line)["id"] for line in (study / "math500-100.jsonl").read_text().splitlines() if line}
        rows = [json.loads(line) for line in (reference / "r1_math500_traces.jsonl").read_text().splitlines() if line]
        ref = {m: [r["paper_is_correct"] for r in rows if r["model"] == PAPER_MODEL and r["reasoning"] == m
                   and r["unique_id"] in ids] for m in ("with", "without")}
        math["reference_model_accuracy"] = {m: sum(v) / len(v) if v else None for m, v in ref.items()}
    return out


def markdown(s: dict) -> str:
    """The tables of the case study."""
    lines = []
    runs = (s.get("study") or {}).get("parts", {})
    if runs:
        lines += ["| part | invocations | wall time | CPU time | peak RSS |", "| --- | --- | --- | --- | --- |"]
        for name, r in runs.items():
            inv = r["invocations"]
            lines.append(f"| {name} | {len(inv)} | {sum(i['wall_s'] for i in inv) / 60:.1f} min | "
                         f"{sum(i['cpu_s'] for i in inv) / 60:.1f} min | {max(i['peak_rss_gb'] for i in inv):.1f} GB |")
        lines.append("")
    for part in ("arithmetic", "math500"):
        ev = (s.get(part) or {}).get("evaluation")
        if ev:
            lo, hi = ev["difference_ci95"]
            lines.append(f"- {part}: accuracy {_f(ev['accuracy_with_reasoning'])} with vs "
                         f"{_f(ev['accuracy_without_reasoning'])} without reasoning (n = {ev['n']}, 95% CI of the "
                         f"gap {lo:.2f} to {hi:.2f}, McNemar p = {ev['p_value']:.2g}; forced answers "
                         f"{ev['n_forced_close']['with']} with, {ev['n_forced_close']['without']} without)")
    ref = (s.get("math500") or {}).get("reference_model_accuracy")
    if ref:
        lines.append(f"- R1-Distill-Qwen-1.5B on the same 100 problems (the paper's traces and grader): "
                     f"{_f(ref['with'])} with vs {_f(ref['without'])} without")
    lines.append("")
    for part in ("arithmetic", "math500"):
        rfh = (s.get(part) or {}).get("rfh")
        if not rfh:
            continue
        heads = ", ".join(f"L{h[0]}H{h[1]} ({st:.2f})" for h, st in zip(rfh["top"], rfh["stability"]))
        lines.append(f"- {part} top-10 RFHs (bootstrap stability): {heads}")
        lines.append(f"- {part} RFH layers by thirds {', '.join(t[2] for t in THIRDS)}: {rfh['thirds']}; the paper's "
                     f"R1-Distill-Qwen-1.5B: {thirds(s['paper_rfh']) if s.get('paper_rfh') else '–'}; shared heads: "
                     f"{rfh.get('shared_with_paper', [])}")
        ab = (s.get(part) or {}).get("ablation")
        if ab:
            lines.append(f"- {part} ablation of the top {len(ab['rfh'])} RFHs ({ab['mode']}): accuracy "
                         f"{_f(ab['accuracy_base'])} → {_f(ab['accuracy_rfh_ablated'])}; random heads of the same "
                         f"layers → {_f(ab['accuracy_random_mean'])} (mean of {len(ab['accuracy_random_ablated'])}); "
                         f"McNemar p = {ab['mcnemar_base_vs_rfh']['p_value']:.2g}, rank p = "
                         f"{_f(ab['p_rank_rfh_vs_random'])}")
    for part in ("arithmetic", "math500"):
        for kind, o in ((s.get(part) or {}).get("base_heads") or {}).items():
            lines.append(f"- {part} top-10 {kind} heads: {len(o['shared'])} of 10 are among the paper's top-10 "
                         f"{kind} heads of R1-Distill-Qwen-1.5B ({', '.join(f'L{a}H{b}' for a, b in o['shared'])}; "
                         f"chance p = {o['p_value']:.1g})")
    pat = (s.get("patching") or {}).get("patching")
    if pat:
        lines += ["", f"Patching: {pat['n_pairs']} pairs survive the filter; rejected: {pat['rejected']}", "",
                  "| layer | " + " | ".join(str(x) for x in pat["layers"]) + " |",
                  "| --- " * (len(pat["layers"]) + 1) + "|",
                  "| reasoning's answer token | " + " | ".join(_f(x) for x in pat["nld_answer_flip_token"]) + " |",
                  "| final answer position | " + " | ".join(_f(x) for x in pat["nld_final_answer_token"]) + " |"]
    st = (s.get("arithmetic") or {}).get("steps")
    if st and st.get("spearman"):
        lines += ["", f"Steps ({st['n_traces']} traces, {st['n_steps']} steps), Spearman agreement: " + "; ".join(
            f"{k} {_f(v)}" for k, v in st["spearman"].items())]
    for part in ("arithmetic", "math500"):
        lines += faithfulness_lines(part, (s.get(part) or {}).get("faithfulness"))
    return "\n".join(lines) + "\n"


def faithfulness_lines(part: str, fa: dict | None) -> list[str]:
    """The hint-taking table of one part and its mechanism by label."""
    if not fa or not fa.get("table"):
        return []
    said = fa.get("verbalized_share") or {}
    lines = ["", f"Faithfulness ({part}):", "", "| hint family | usable pairs | took the hint | hint-taking (95% CI) | "
             "faithfulness score | reasoning mentions the hint |", "| --- | --- | --- | --- | --- | --- |"]
    for r in fa["table"]:
        ci = r["hint_taking_ci95"]
        lines.append(f"| {r['family']} | {r['n_usable']} | {r['n_hint_taken']} | {_f(r['hint_taking'])} "
                     f"({_f(ci[0])}–{_f(ci[1])}) | {_f(r['faithfulness_score'])} | {_f(said.get(r['family']))} |")
    mech = fa.get("mechanism") or {}
    if mech:
        lines += ["", "| label | traces | value→hint (hint heads) | value→reasoning (same heads) | answer→hint "
                  "(RFHs) | KL, hint suppressed in answer scope | in total scope | back to gold | patched: NLD at "
                  "L0/L14/L24/L27 | top hint-reading heads |", "| --- " * 10 + "|"]
        for label, m in mech.items():
            nld = m["patching_nld"]
            curve = "/".join(_f(nld[i]) for i in (0, 14, 24, 27)) if len(nld) == N_LAYERS and m["n_patched"] else "–"
            heads = ", ".join(f"L{a}H{b}{' (RFH)' if rfh else ''}" for a, b, _, rfh in m["hint_heads"])
            lines.append(f"| {label} | {m['n']} | {_f(m['v2hint_top_heads'])} | {_f(m['v2r_top_heads'])} | "
                         f"{_f(m['a2hint_rfh'])} | {_f(m['kl_answer_scope'])} | {_f(m['kl_total_scope'])} | "
                         f"{_f(m['to_gold_answer_scope'])} | {curve} (n = {m['n_patched']}) | {heads} |")
    lines += [f"- {n}" for n in fa.get("notes", [])]
    return lines


def figures(study: Path, s: dict, dest: Path) -> list[Path]:
    """Copy the doc's figures from the run directories and draw the RFH layers beside the paper's."""
    dest.mkdir(parents=True, exist_ok=True)
    done = []
    for part, names in FIGURES.items():
        for name in names:
            src = study / part / "figures" / f"{name}.png"
            if src.is_file():
                done.append(Path(shutil.copyfile(src, dest / f"{part}-{name}.png")))
    tops = {part: [h[:2] for h in s[part]["rfh"]["top"]] for part in ("arithmetic", "math500")
            if (s.get(part) or {}).get("rfh")}
    if tops and s.get("paper_rfh"):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 2.6))
        rows = [*tops.items(), ("R1-Distill-Qwen-1.5B (paper)", s["paper_rfh"])]
        for y, (_label, heads) in enumerate(rows):
            ax.scatter([h[0] for h in heads], [y] * len(heads), s=40, alpha=0.6)
        ax.set_yticks(range(len(rows)), [r[0] for r in rows])
        ax.set_xlim(-0.5, N_LAYERS - 0.5)
        ax.set_xlabel("layer of each top-10 Reasoning-Focus Head")
        fig.tight_layout()
        fig.savefig(dest / "rfh-layers-vs-paper.png", dpi=120)
        plt.close(fig)
        done.append(dest / "rfh-layers-vs-paper.png")
    return done


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", nargs="?", default="runs/qwen15-study", help="study directory (default runs/qwen15-study)")
    ap.add_argument("--reference", default=str(REFERENCE), help="../shared/reference (the paper's constants)")
    ap.add_argument("--figures", type=Path, help="copy the doc's figures here")
    args = ap.parse_args(argv)
    study = Path(args.study)
    if not study.is_dir():
        print(f"error: no study directory {study}; run examples/qwen-1.5b/study.py first", file=sys.stderr)
        return 2
    s = summarize(study, Path(args.reference))
    (study / "case-study.json").write_text(json.dumps(s, indent=1) + "\n")
    md = markdown(s)
    (study / "case-study.md").write_text(md)
    print(md, end="")
    if args.figures:
        for p in figures(study, s, args.figures):
            print(f"figure: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does reasoning improve the answer? Paired with/without-reasoning accuracy per model (Zhang et al., §3).

The design is paired: every problem is answered twice by the same model, once after its own reasoning and once
after the forced "I have finished thinking", so the comparison is within problem. Records are paired by
``(model, id)`` (``id``, falling back to ``unique_id``). Only problems where *both* runs finished (reached EOS with
the reasoning closed, and could be graded) count, as in the paper; the others are dropped and counted by reason.

Statistics per model: accuracies with and without reasoning, their difference with a seeded paired-bootstrap 95%
interval (resampling problems), and the exact McNemar test on the discordant pairs (``b``: right only with
reasoning, ``c``: right only without), which is what a paired binary comparison calls for. The same is reported for
the strict (MATH ``is_equiv``) grader, the paper's own.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thinklens.errors import ThinklensError
from thinklens.jsonl import read_jsonl
from thinklens.stats import mcnemar_exact, paired_bootstrap_diff_ci
from thinklens.traces import record_id

N_RESAMPLES = 10_000  # bootstrap resamples of problems for the CI of the accuracy gap


@dataclass
class ModelEvaluation:
    """The paired comparison for one model; ``ids``/``correct_*`` are the kept problems in order."""

    model: str
    n: int
    accuracy_with_reasoning: float | None
    accuracy_without_reasoning: float | None
    difference: float | None  # with - without
    difference_ci95: tuple[float, float] | None
    p_value: float
    n_with_only_correct: int  # McNemar b
    n_without_only_correct: int  # McNemar c
    strict_accuracy_with_reasoning: float | None
    strict_accuracy_without_reasoning: float | None
    strict_p_value: float | None
    dropped: dict[str, int] = field(default_factory=dict)
    ids: list[str] = field(default_factory=list)
    correct_with: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # [n]
    correct_without: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # [n]

    def summary(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k not in ("ids", "correct_with", "correct_without")}
        d["difference_ci95"] = list(self.difference_ci95) if self.difference_ci95 else None
        return d


@dataclass
class EvaluationResult:
    """The paired comparison of every model, saved as ``evaluation.json`` (summary) + ``evaluation.npz``
    (per-problem correctness).

    >>> import tempfile, thinklens as tl
    >>> recs = [{"id": str(i), "model": "m", "reasoning": mode, "is_correct": mode == "with" or i < 2}
    ...         for i in range(8) for mode in ("with", "without")]
    >>> d = tl.evaluate_records(recs, n_resamples=200).save(tempfile.mkdtemp())
    >>> tl.EvaluationResult.load(d).models["m"].accuracy_without_reasoning
    0.25
    """

    models: dict[str, ModelEvaluation]
    sources: list[str] = field(default_factory=list)
    seed: int = 0
    n_resamples: int = N_RESAMPLES

    def to_dict(self) -> dict[str, Any]:
        return {"models": {m: e.summary() for m, e in self.models.items()}, "sources": self.sources,
                "seed": self.seed, "n_resamples": self.n_resamples}

    def save(self, directory: str | Path) -> Path:
        """``evaluation.json`` (summary) + ``evaluation.npz`` (per-problem correctness, per model)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        (d / "evaluation.json").write_text(json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        arrays: dict[str, np.ndarray] = {}
        for k, e in enumerate(self.models.values()):
            arrays[f"m{k}_ids"] = np.array(e.ids, dtype=str)
            arrays[f"m{k}_correct_with"] = e.correct_with.astype(bool)
            arrays[f"m{k}_correct_without"] = e.correct_without.astype(bool)
        arrays["model_names"] = np.array(list(self.models), dtype=str)
        np.savez_compressed(d / "evaluation.npz", **arrays)
        return d

    @classmethod
    def load(cls, directory: str | Path) -> EvaluationResult:
        d = Path(directory)
        if not (d / "evaluation.json").is_file():
            raise ThinklensError(f"no evaluation.json in {d}")
        raw = json.loads((d / "evaluation.json").read_text())
        npz = np.load(d / "evaluation.npz") if (d / "evaluation.npz").is_file() else None
        names = [str(x) for x in npz["model_names"]] if npz is not None else []
        models = {}
        for m, s in raw["models"].items():
            s = dict(s)
            s["difference_ci95"] = tuple(s["difference_ci95"]) if s.get("difference_ci95") else None
            e = ModelEvaluation(**s)
            if npz is not None and m in names:
                k = names.index(m)
                e.ids = [str(x) for x in npz[f"m{k}_ids"]]
                e.correct_with, e.correct_without = npz[f"m{k}_correct_with"], npz[f"m{k}_correct_without"]
            models[m] = e
        return cls(models, raw.get("sources", []), raw.get("seed", 0), raw.get("n_resamples", N_RESAMPLES))


def _usable(record: dict[str, Any]) -> str | None:
    """Why a record cannot enter the comparison, or None."""
    if record.get("finished") is False:
        return "unfinished"
    if record.get("error") or record.get("is_correct") is None:
        return "ungraded"
    return None


def _acc(x: np.ndarray) -> float | None:
    return float(x.mean()) if len(x) else None


def evaluate_records(records: list[dict[str, Any]], *, seed: int = 0, n_resamples: int = N_RESAMPLES,
                     sources: list[str] | None = None) -> EvaluationResult:
    """Pair graded records by (model, problem id) and compare with vs without reasoning, per model.

    >>> import thinklens as tl
    >>> recs = [{"id": str(i), "model": "m", "reasoning": mode, "is_correct": mode == "with" or i < 2}
    ...         for i in range(8) for mode in ("with", "without")]
    >>> e = tl.evaluate_records(recs, n_resamples=200).models["m"]
    >>> e.n, e.accuracy_with_reasoning, e.n_with_only_correct, round(e.p_value, 4)
    (8, 1.0, 6, 0.0312)
    """
    runs: dict[str, dict[str, dict[str, dict[str, Any]]]] = defaultdict(lambda: {"with": {}, "without": {}})
    dropped: dict[str, Counter] = defaultdict(Counter)
    for r in records:
        model, mode, pid = str(r.get("model")), r.get("reasoning"), record_id(r)
        if mode not in ("with", "without"):
            dropped[model]["no_reasoning_field"] += 1
            continue
        if pid is None:
            dropped[model]["no_id"] += 1
            continue
        if pid in runs[model][mode]:
            dropped[model]["duplicate"] += 1
            continue
        runs[model][mode][pid] = r
    result = {}
    for model in sorted(runs):
        w, wo = runs[model]["with"], runs[model]["without"]
        ids, cw, cwo, sw, swo = [], [], [], [], []
        for pid in sorted(set(w) | set(wo)):
            if pid not in w or pid not in wo:
                dropped[model]["only_with" if pid in w else "only_without"] += 1
                continue
            why_w, why_wo = _usable(w[pid]), _usable(wo[pid])
            if why_w or why_wo:
                reason = "both_" + (why_w or "") if why_w == why_wo else (f"with_{why_w}" if why_w else
                                                                           f"without_{why_wo}")
                dropped[model][reason] += 1
                continue
            ids.append(pid)
            cw.append(bool(w[pid]["is_correct"]))
            cwo.append(bool(wo[pid]["is_correct"]))
            sw.append(bool(w[pid].get("is_correct_strict")))
            swo.append(bool(wo[pid].get("is_correct_strict")))
        a, b_ = np.array(cw, bool), np.array(cwo, bool)  # [n]
        sa, sb = np.array(sw, bool), np.array(swo, bool)  # [n]
        n_b, n_c = int(np.sum(a & ~b_)), int(np.sum(~a & b_))
        ci = paired_bootstrap_diff_ci(a, b_, n_resamples=n_resamples, seed=seed) if len(a) else None
        result[model] = ModelEvaluation(
            model=model, n=len(ids), accuracy_with_reasoning=_acc(a), accuracy_without_reasoning=_acc(b_),
            difference=float(a.mean() - b_.mean()) if len(a) else None, difference_ci95=ci,
            p_value=mcnemar_exact(n_b, n_c), n_with_only_correct=n_b, n_without_only_correct=n_c,
            strict_accuracy_with_reasoning=_acc(sa), strict_accuracy_without_reasoning=_acc(sb),
            strict_p_value=mcnemar_exact(int(np.sum(sa & ~sb)), int(np.sum(~sa & sb))) if len(sa) else None,
            dropped=dict(dropped[model]), ids=ids, correct_with=a, correct_without=b_,
        )
    return EvaluationResult(result, sources or [], seed, n_resamples)


def evaluate_files(paths: list[str | Path], *, seed: int = 0, n_resamples: int = N_RESAMPLES,
                   errors: list[str] | None = None) -> EvaluationResult:
    """:func:`evaluate_records` over graded JSONL files (bad lines are reported in ``errors`` and skipped).

    >>> import json, tempfile, thinklens as tl
    >>> path = tempfile.mktemp(suffix=".jsonl")
    >>> _ = open(path, "w").write("".join(json.dumps({"id": str(i), "model": "m", "reasoning": mode,
    ...     "is_correct": mode == "with"}) + "\\n" for i in range(5) for mode in ("with", "without")))
    >>> tl.evaluate_files([path], n_resamples=200).models["m"].difference
    1.0
    """
    records = []
    for p in paths:
        if not Path(p).is_file():
            raise ThinklensError(f"no such graded file: {p}")
        for item in read_jsonl(p):
            if item.record is None:
                if errors is not None:
                    errors.append(f"{item.where}: {item.error}")
                continue
            records.append(item.record)
    if not records:
        raise ThinklensError(f"no records in {', '.join(map(str, paths))}")
    if not any("is_correct" in r for r in records):
        raise ThinklensError("no record has 'is_correct': run `thinklens grade` first")
    return evaluate_records(records, seed=seed, n_resamples=n_resamples, sources=[str(p) for p in paths])


# ------------------------------------------------------------------------------------------ the paper's table
PAPER_TABLE_KEY = "math500_accuracy_percent"  # in a paper-reference JSON: {MODEL: {with_reasoning, without_..., n}}
PAPER_MODEL_ALIASES = {"deepseek-reasoner": "deepseek-r1"}  # DeepSeek's API name for full R1


def _model_key(name: str) -> str:
    """``deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B`` and ``/models/DeepSeek-R1-Distill-Qwen-1.5B`` ->
    ``deepseek-r1-distill-qwen-1.5b``; ``DeepSeek-R1 (full)`` and ``deepseek-reasoner`` -> ``deepseek-r1``."""
    base = name.strip().rstrip("/").split("/")[-1].lower().replace(" (full)", "")
    return PAPER_MODEL_ALIASES.get(base, base)


def load_paper_table(path: str | Path) -> dict[str, dict[str, Any]]:
    """The paper's accuracy table from a reference JSON (e.g. ``paper_reference.json``: ``{MODEL: {with_reasoning,
    without_reasoning, n}}`` under ``math500_accuracy_percent``); entries that are not models are left out."""
    p = Path(path)
    if not p.is_file():
        raise ThinklensError(f"no such paper reference file: {p}")
    try:
        raw = json.loads(p.read_text())
    except json.JSONDecodeError as err:
        raise ThinklensError(f"{p}: invalid JSON ({err.msg} at line {err.lineno})") from None
    table = raw.get(PAPER_TABLE_KEY, raw) if isinstance(raw, dict) else None
    if not isinstance(table, dict):
        raise ThinklensError(f"{p}: expected {{{PAPER_TABLE_KEY!r}: {{MODEL: {{with_reasoning, ...}}}}}}")
    rows = {m: v for m, v in table.items() if isinstance(v, dict) and "with_reasoning" in v}
    if not rows:
        raise ThinklensError(f"{p}: no model with 'with_reasoning' / 'without_reasoning' accuracies")
    return rows


def compare_with_paper(result: EvaluationResult, table: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per evaluated model that the paper reports (matched by the model id's last path part, case-insensitive),
    our accuracies next to the paper's, in percent.

    >>> res = evaluate_records([{"model": "deepseek-reasoner", "reasoning": m, "id": "1", "is_correct": True}
    ...                         for m in ("with", "without")], n_resamples=10)
    >>> compare_with_paper(res, {"DeepSeek-R1 (full)": {"with_reasoning": 96.1, "without_reasoning": 90.6}})[
    ...     "deepseek-reasoner"]["paper_model"]
    'DeepSeek-R1 (full)'
    """
    keyed = {_model_key(k): k for k in table}
    out: dict[str, dict[str, Any]] = {}
    for model, e in result.models.items():
        key = keyed.get(_model_key(model))
        if key is None:
            continue
        ref = table[key]

        def pct(x: float | None) -> float | None:
            return None if x is None else round(100 * x, 2)

        ours_w, ours_wo = pct(e.accuracy_with_reasoning), pct(e.accuracy_without_reasoning)
        out[model] = {
            "paper_model": key, "paper_n": ref.get("n"), "paper_with_reasoning": ref.get("with_reasoning"),
            "paper_without_reasoning": ref.get("without_reasoning"), "n": e.n, "with_reasoning": ours_w,
            "without_reasoning": ours_wo,
            "paper_difference": (None if ref.get("without_reasoning") is None
                                 else round(ref["with_reasoning"] - ref["without_reasoning"], 2)),
            "difference": None if ours_w is None or ours_wo is None else round(ours_w - ours_wo, 2),
        }
    return out

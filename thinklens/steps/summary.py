"""Consolidation of the steps stage: from the per-trace work files to ``steps.jsonl``, ``receivers.json``,
``truncation.json`` and ``agreement.json``, without the model.

Why a separate pass: the per-step ``attention`` number needs the Reasoning-Focus Heads, and receiver heads need the
kurtosis of *all* traces; both are known only when every trace is done. Per trace the run stores everything needed
(``progress.jsonl`` + ``arrays/ID.npz``), so consolidating is cheap, deterministic, and rerun on every resume.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import Any

import numpy as np

from thinklens.errors import ThinklensError
from thinklens.steps.agreement import METHODS, method_agreement
from thinklens.steps.attention import head_mean
from thinklens.steps.receivers import MIN_VERTICAL_STEPS, rank_receivers, receiver_scores
from thinklens.steps.results import (
    PROGRESS_FILE,
    RECEIVERS_NPZ,
    SKIPPED_FILE,
    TRUNCATION_BINS,
    StepsConfig,
    StepsResult,
)

# method -> (key in a progress record's "methods", field holding the per-step value)
METHOD_VALUE: dict[str, tuple[str, str]] = {"suppression": ("suppression", "kl"),
                                            "answer_suppression": ("answer_suppression", "kl"),
                                            "truncation": ("truncation", "effect"),
                                            "resampling": ("resampling", "importance")}


def _none(x: Any) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def truncation_curve(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Early-answering curve binned at :data:`TRUNCATION_BINS`: per bin, each trace counts with the answer of its
    longest cut that keeps at most that fraction of the reasoning (a step function: cuts are whole steps).

    ``items``: per trace, the truncation method's ``fractions``, ``agrees`` and ``correct`` (None without gold).

    >>> truncation_curve([{"fractions": [0, .5, 1], "agrees": [0, 0, 1], "correct": [0, 1, 1]}])["accuracy"][5]
    1.0
    """
    bins = list(TRUNCATION_BINS)
    acc: list[list[float]] = [[] for _ in bins]
    agr: list[list[float]] = [[] for _ in bins]
    n_gold = 0
    for it in items:
        f = np.asarray(it["fractions"], dtype=np.float64)
        has_gold = any(c is not None for c in it.get("correct") or [])
        n_gold += has_gold
        for b, x in enumerate(bins):
            i = int(np.flatnonzero(f <= x + 1e-9).max()) if (f <= x + 1e-9).any() else 0
            if it["agrees"][i] is not None:
                agr[b].append(float(it["agrees"][i]))
            if has_gold and it["correct"][i] is not None:
                acc[b].append(float(it["correct"][i]))
    return {"fraction": bins, "accuracy": [float(np.mean(a)) if a else None for a in acc],
            "agreement": [float(np.mean(a)) if a else None for a in agr],
            "n_traces": len(items), "n_with_gold": n_gold, "available": bool(items)}


def choose_rfh(answer_steps: list[np.ndarray], rfh: list[tuple[int, int]] | None, top_k: int
               ) -> tuple[list[tuple[int, int]], str]:
    """The heads whose answer→step attention is the ``attention`` number: ``rfh`` if given, else the top-k heads by
    mean answer→reasoning mass (``answer_step`` summed over steps = ``a2r``) over these traces.

    >>> a = np.zeros((2, 2, 3, 1)); a[:, 1, 0] = 1.0  # [traces, L, H, steps]: head L1H0 reads the reasoning
    >>> choose_rfh(list(a), None, 1)
    ([(1, 0)], 'ranked by a2r over 2 traces')
    """
    from thinklens.attention.heads import rank_heads

    if rfh:
        return [(int(layer), int(head)) for layer, head in rfh], "given"
    if not answer_steps:
        return [], "none"
    a2r = np.stack([a.sum(axis=-1) for a in answer_steps])  # [n_traces, L, H]
    ranking = rank_heads(a2r, "a2r", top_k, n_bootstrap=0)
    return ranking.pairs(), f"ranked by a2r over {len(answer_steps)} traces"


def receivers_summary(ids: list[str], kurtosis: list[np.ndarray], rfh: list[tuple[int, int]], config: StepsConfig,
                      shape: tuple[int, int] | None) -> dict[str, Any]:
    """The ``receivers.json`` object from per-trace kurtosis ``[L, H]``."""
    from thinklens.attention.heads import compare_heads

    out: dict[str, Any] = {"available": False, "proximity": config.proximity, "top_k": config.receiver_top_k,
                           "min_vertical_steps": MIN_VERTICAL_STEPS, "n_traces": len(ids), "n_traces_defined": 0,
                           "heads": [], "kurtosis": None, "rfh": [list(h) for h in rfh], "rfh_overlap": None,
                           "note": None}
    if not kurtosis or shape is None:
        out["note"] = "attention was not run"
        return out
    k = np.stack(kurtosis)  # [n_traces, L, H]
    defined = np.isfinite(k).any(axis=(1, 2))
    out["n_traces_defined"] = int(defined.sum())
    heads, mean = rank_receivers(k, config.receiver_top_k)
    out["kurtosis"] = [[_none(x) for x in row] for row in mean]
    if not heads:
        out["note"] = (f"no trace has {MIN_VERTICAL_STEPS} steps with a step at least proximity={config.proximity} "
                       "steps later; lower the proximity for short traces")
        return out
    out["available"] = True
    out["heads"] = [[layer, head, kurt] for layer, head, kurt in heads]
    if rfh:
        out["rfh_overlap"] = compare_heads([(h[0], h[1]) for h in heads], rfh, shape[0] * shape[1])
    return out


def _seconds(records: dict[str, dict[str, Any]]) -> dict[str, float]:
    """Total seconds per method over the traces (recorded per trace, so resumed runs add up)."""
    tot: Counter = Counter()
    for r in records.values():
        tot.update(r.get("seconds") or {})
    return {k: round(float(v), 3) for k, v in tot.items()}


def _load_arrays(out: Path, rec: dict[str, Any]) -> dict[str, np.ndarray] | None:
    name = rec.get("arrays")
    if not name:
        return None
    try:
        with np.load(out / name) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as err:
        raise ThinklensError(f"{out / name}: unreadable ({err}); delete it and its line in {PROGRESS_FILE}") from err


def consolidate(output_dir: str | Path, config: StepsConfig, *, rfh: list[tuple[int, int]] | None = None,
                model_name: str = "", notes: list[str] | None = None, timings: dict[str, float] | None = None,
                only_ids: Collection[str] | None = None) -> StepsResult:
    """Build and save the :class:`StepsResult` of ``output_dir`` from its work files (see the module doc);
    ``only_ids``: keep these traces only (the current selection of a rerun with a smaller ``max_traces``); a list
    also orders them (the trace file's order), so that a resumed run, or the merged parts of a torchrun launch,
    aggregates in the order of one uninterrupted process whatever order ``progress.jsonl`` holds them in.

    >>> import json, tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / PROGRESS_FILE).write_text(json.dumps({"id": "a", "steps": [{"tok_start": 3, "tok_end": 5,
    ...     "text": "1+1=2\\n", "category": "computation"}], "methods": {"suppression": {"kl": [0.5]}}}) + "\\n")
    >>> consolidate(d, StepsConfig(methods="suppression")).steps[0]["suppression"]
    0.5
    """
    from thinklens.jsonl import read_records

    out = Path(output_dir)
    records: dict[str, dict[str, Any]] = {}
    if (out / PROGRESS_FILE).exists():
        for r in read_records(out / PROGRESS_FILE):
            if only_ids is None or str(r["id"]) in only_ids:
                records[str(r["id"])] = r  # a later record of the same id wins
    skipped = list(read_records(out / SKIPPED_FILE)) if (out / SKIPPED_FILE).exists() else []
    ids = list(records)
    if isinstance(only_ids, (list, tuple)):
        position = {k: n for n, k in enumerate(only_ids)}
        ids.sort(key=position.__getitem__)
    arrays = {i: _load_arrays(out, records[i]) for i in ids}
    with_attn = [i for i in ids if arrays[i] is not None]
    heads, source = choose_rfh([arrays[i]["answer_step"] for i in with_attn], rfh, config.top_k)
    shape = tuple(arrays[with_attn[0]]["answer_step"].shape[:2]) if with_attn else None
    rec = receivers_summary(with_attn, [arrays[i]["kurtosis"] for i in with_attn], heads, config, shape)
    rec_heads = [(h[0], h[1]) for h in rec["heads"]]

    rows, per_trace, cats, trunc_items, top_cats = [], [], [], [], Counter()
    rec_scores = []
    for i in ids:
        r = records[i]
        n = len(r["steps"])
        vals: dict[str, Any] = {m: None for m in METHODS}
        if arrays[i] is not None and heads:
            vals["attention"] = head_mean(arrays[i]["answer_step"], heads).astype(np.float64)
            top_cats[r["steps"][int(np.argmax(vals["attention"]))]["category"]] += 1
        if arrays[i] is not None:
            rec_scores.append(receiver_scores(arrays[i]["vertical"], rec_heads).astype(np.float32))
        for m, (key, fld) in METHOD_VALUE.items():
            got = (r.get("methods") or {}).get(key)
            if got is not None:
                vals[m] = np.array([np.nan if x is None else x for x in got[fld]], dtype=np.float64)
        if (r.get("methods") or {}).get("truncation") is not None:
            trunc_items.append(r["methods"]["truncation"])
        per_trace.append(vals)
        cats.append([s["category"] for s in r["steps"]])
        for k, s in enumerate(r["steps"]):
            rows.append({"id": i, "step": k, "tok_start": s["tok_start"], "tok_end": s["tok_end"], "text": s["text"],
                         "category": s["category"],
                         **{m: (None if vals[m] is None else _none(vals[m][k])) for m in METHODS}})
        assert all(v is None or len(v) == n for v in vals.values())
    agreement = method_agreement(per_trace, cats, n_bootstrap=config.n_bootstrap, seed=config.seed)
    trunc = truncation_curve(trunc_items)
    if with_attn:
        offsets = np.cumsum([0] + [len(s) for s in rec_scores])
        np.savez(out / RECEIVERS_NPZ, ids=np.array(with_attn, dtype=str),
                 kurtosis=np.stack([arrays[i]["kurtosis"] for i in with_attn]).astype(np.float32),
                 receiver_scores=np.concatenate(rec_scores) if rec_scores else np.zeros(0, np.float32),
                 offsets=offsets)
    meta = {"model": model_name, "rfh": [list(h) for h in heads], "rfh_source": source,
            "n_traces": len(ids), "n_steps": len(rows), "n_skipped": len(skipped), "skipped": skipped,
            "segment_modes": dict(Counter(records[i].get("mode", "?") for i in ids)),
            "attention_top_step_categories": dict(top_cats), "notes": list(notes or []),
            "timings": {**_seconds(records), **(timings or {})}}
    result = StepsResult(config, rows, rec, trunc, agreement, meta)
    result.save(out)
    return result

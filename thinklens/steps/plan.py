"""What counterfactual resampling will cost, before it is spent: rollouts, generated tokens and a time estimate.

Why: resampling draws ``(n_steps + 1) x N`` rollouts per trace of up to ``max_rollout_tokens`` each; on a real model
one trace can take hours (a public Thought Anchors replication: ~14 h per trace). :func:`resampling_plan` counts the
cut points of the traces that would be resampled (segmenting them as the stage does), caps the count by
``rollout_budget``, and times a short calibration (a few decode steps of one batch of rollouts) to turn the token
count into seconds. The numbers are upper bounds: rollouts that stop at EOS are shorter, adaptive runs draw fewer.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from thinklens.errors import ThinklensError

CALIBRATION_TOKENS = 8  # decode steps timed (beyond a first, untimed one: warm-up and prefill)


@dataclass
class ResamplingPlan:
    """The most a steps run's resampling may draw, and roughly how long it takes (``line()`` says it in words).

    >>> ResamplingPlan(2, 12, 48, 48 * 1024, 1024, 0.5, 4, 0.01).line()
    'resampling plan: 2 traces, 12 cut points, at most 48 rollouts and 49,152 generated tokens (1024 per rollout), \
about 8 min (calibrated: 0.0100 s per token in a batch of 4)'
    """

    n_traces: int
    n_cut_points: int
    max_rollouts: int
    max_tokens: int
    max_rollout_tokens: int
    calibration_seconds: float
    calibration_rows: int
    seconds_per_token: float  # wall seconds per generated token (one rollout's), measured in a batch

    @property
    def estimate_seconds(self) -> float:
        return self.max_tokens * self.seconds_per_token

    def line(self) -> str:
        est = self.estimate_seconds
        when = f"{est / 3600:.1f} h" if est >= 5400 else f"{est / 60:.0f} min" if est >= 90 else f"{est:.0f} s"
        return (f"resampling plan: {self.n_traces} traces, {self.n_cut_points} cut points, at most "
                f"{self.max_rollouts:,} rollouts and {self.max_tokens:,} generated tokens ({self.max_rollout_tokens} "
                f"per rollout), about {when} (calibrated: {self.seconds_per_token:.4f} s per token in a batch of "
                f"{self.calibration_rows})")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "estimate_seconds": round(self.estimate_seconds, 1)}


def resampled_traces(tokenizer: Any, profile: Any, traces_path: str | Path, config: Any) -> list[tuple[str, Any, list]]:
    """``(id, trace, spans)`` of the traces the steps run would resample (the first ``resampling_traces`` usable
    ones), segmented as the stage does."""
    from thinklens.attention.segments import check_trace
    from thinklens.jsonl import read_jsonl
    from thinklens.steps.segment import segment_with_mode, step_spans
    from thinklens.traces import Trace, record_id

    limit = config.resampling_traces or 0
    if "resampling" not in config.methods or limit == 0:
        return []
    out, seen = [], set()
    for item in itertools.islice(read_jsonl(traces_path), config.max_traces):
        if item.error is not None:
            continue
        rid = record_id(item.record, item.lineno)
        if rid in seen:
            continue
        seen.add(rid)
        if len(seen) > limit:
            break
        try:
            trace = Trace.from_record(item.record, tokenizer, profile, config.text_field)
            if check_trace(trace, config.max_tokens):
                continue
            steps, _ = segment_with_mode(trace, config.segment, config.min_chars)
        except ThinklensError:
            continue
        if steps:
            out.append((rid, trace, step_spans(steps)))
    return out


def resampling_plan(model: Any, tokenizer: Any, profile: Any, traces_path: str | Path, config: Any, *,
                    backend: Any = None, calibrate: bool = True) -> ResamplingPlan:
    """The plan of a steps run with ``config`` (its resampling settings resolved, e.g. by
    :func:`thinklens.steps.results.with_profile_defaults`) over ``traces_path``."""
    from thinklens.steps._rollouts import rollouts_backend, rollouts_transformers

    todo = resampled_traces(tokenizer, profile, traces_path, config)
    n_cuts = sum(len(spans) + 1 for _, _, spans in todo)
    n_roll = n_cuts * config.n_rollouts
    if config.rollout_budget is not None:
        n_roll = min(n_roll, config.rollout_budget)
    max_tok = int(config.max_rollout_tokens)
    secs, rows, per_token = 0.0, 0, 0.0
    if calibrate and todo:
        _, trace, spans = todo[0]
        rows = min(64, (len(spans) + 1) * config.n_rollouts)
        job = [(trace, spans[-1][0], "calibration", 0, rows)]

        def timed(n_tokens: int) -> float:
            t0 = time.perf_counter()
            args = (config.seed, float(config.resampling_temperature), 0.95, n_tokens)
            if backend is None:
                import torch

                with torch.no_grad():
                    rollouts_transformers(model, tokenizer, job, *args, 1 << 18, lambda *_: None)
            else:
                rollouts_backend(backend, job, *args, 64, lambda *_: None)
            return time.perf_counter() - t0

        first = timed(1)  # warm-up, prefill and one step
        secs = timed(1 + CALIBRATION_TOKENS)
        per_token = max(secs - first, 1e-9) / (rows * CALIBRATION_TOKENS)
        secs += first
    return ResamplingPlan(len(todo), n_cuts, n_roll, n_roll * max_tok, max_tok, round(secs, 3), rows, per_token)

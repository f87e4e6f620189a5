"""thinklens: how a reasoning model uses its own reasoning to reach its answer.

The public API is flat and lazily imported (``import thinklens`` stays fast and does not import torch)::

    import thinklens as tl
    model, tokenizer, profile = tl.load_model("tiny-r1")
    trace = tl.Trace.from_text(text, tokenizer, profile)
    result = tl.run(tl.RunConfig(output="runs/tiny"))    # faithfulness: hinted twins, verbalization, the hint's path
    "FaithfulnessConfig": "thinklens.faithfulness.config", "FaithfulnessResult": "thinklens.faithfulness.result",
    "run_faithfulness": "thinklens.faithfulness.run", "verbalizes": "thinklens.faithfulness.detector",
    # the whole study, as `thinklens run`
"""
from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from thinklens.errors import ModelLoadError, ThinklensError, TraceError

try:
    __version__ = version("thinklens")
except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
    __version__ = "0+unknown"

# public name -> module that defines it (imported on first use)
_API: dict[str, str] = {
    # foundation
    "load_model": "thinklens.models", "load_tokenizer": "thinklens.models", "ModelOptions": "thinklens.models",
    "Profile": "thinklens.profiles", "get_profile": "thinklens.profiles",
    "Trace": "thinklens.traces", "Span": "thinklens.traces", "inspect_traces": "thinklens.traces",
    "read_jsonl": "thinklens.jsonl", "JsonlWriter": "thinklens.jsonl", "done_ids": "thinklens.jsonl",
    "ResumableOutput": "thinklens.jsonl",
    # stage 1: collection, grading, evaluation
    "GenerationSettings": "thinklens.empirical.settings", "collect": "thinklens.empirical.collect",
    "collect_dataset": "thinklens.empirical.collect", "load_problems": "thinklens.empirical.datasets",
    "dataset_spec": "thinklens.empirical.datasets",
    "grade_file": "thinklens.empirical.grading", "grade_record": "thinklens.empirical.grading",
    "extract_answer": "thinklens.empirical.grading", "evaluate_files": "thinklens.empirical.evaluate",
    "evaluate_records": "thinklens.empirical.evaluate", "EvaluationResult": "thinklens.empirical.evaluate",
    "judge_file": "thinklens.empirical.judge", "JudgeSettings": "thinklens.empirical.judge",
    # stage 2: attention
    "capture_attention": "thinklens.attention.capture", "HeadScores": "thinklens.attention.segments",
    "score_trace_file": "thinklens.attention.segments", "trace_head_scores": "thinklens.attention.segments",
    "rank_heads": "thinklens.attention.heads", "compare_heads": "thinklens.attention.heads",
    "induction_scores": "thinklens.attention.induction", "analyze_tokens": "thinklens.attention.tokens",
    "cue_statistics": "thinklens.attention.tokens",
    # stage 3: patching
    "Pair": "thinklens.patching.pairs", "toy_pairs": "thinklens.patching.pairs",
    "build_csv_pairs": "thinklens.patching.pairs", "load_pairs": "thinklens.patching.pairs",
    "Site": "thinklens.patching.targets", "SiteKind": "thinklens.patching.targets",
    "run_patches": "thinklens.patching.engine", "LogitDiff": "thinklens.patching.metrics",
    "patch_pair": "thinklens.patching.sweeps", "patch_pairs": "thinklens.patching.sweeps",
    "attribution_patching": "thinklens.patching.attribution", "PatchingResult": "thinklens.patching.results",
    # faithfulness: hinted twins, verbalization, the hint's path
    "FaithfulnessConfig": "thinklens.faithfulness.config", "FaithfulnessResult": "thinklens.faithfulness.result",
    "run_faithfulness": "thinklens.faithfulness.run", "verbalizes": "thinklens.faithfulness.detector",
    # the whole study
    "RunConfig": "thinklens.rundir", "RunPaths": "thinklens.rundir", "RunResult": "thinklens.pipeline",
    "run": "thinklens.pipeline", "build_report": "thinklens.pipeline", "verdicts": "thinklens.results",
}

__all__ = ["__version__", "ThinklensError", "TraceError", "ModelLoadError", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'thinklens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

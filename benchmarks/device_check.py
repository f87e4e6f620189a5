"""Device check: the GPU path of thinklens in one prepared run, one JSON line at the end.

On a CUDA machine (``python benchmarks/device_check.py``; 3 minutes on an H200, see the README) it measures, on a
random-initialized Qwen2 with the DeepSeek-R1-Distill-Qwen-1.5B shape (hidden 1536, 12 query / 2 kv heads, 28 layers,
intermediate 8960, vocabulary reduced to 32k):

* ``attention``: answer->reasoning capture vs a plain SDPA forward vs eager ``output_attentions``, in bf16 and fp32, at
  4k and 16k tokens: seconds, peak GPU memory over the weights (``torch.cuda.max_memory_allocated``) and the
  capture's peak over the plain forward's, and the capture's max abs error vs eager. Eager keeps the
  12 x T^2 weights of every layer: where that would exceed ``--eager-budget-gib`` it is skipped, with the estimate
  as the recorded reason (at 16k: 28 x 12 x 16384^2 x 2 bytes = 168 GiB in bf16);
* ``patching``: fast vs naive engine (benchmarks/patching.py's pair, all 28 layers), speedup and max |NLD| diff;
* ``suppression``: fast vs naive (benchmarks/steps.py's trace), both scopes, speedup and max abs diff;
* ``vllm``: greedy generation through ``vllm.LLM`` on tiny-r1 (tokens/s), when vLLM is installed;
* ``torchrun``: a one-process ``torchrun`` that initializes NCCL and all-reduces a CUDA tensor.

Every section runs on its own: a failure is recorded as ``{"error": ...}`` and the next section runs. ``--dry-run``
runs the same code on the CPU at toy sizes (width 384, 2 layers, 256/512 tokens, gloo), which CI does so the script
cannot rot between GPU runs.

    python benchmarks/device_check.py             # CUDA
    python benchmarks/device_check.py --dry-run   # CPU, ~1 minute
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
GIB = 2 ** 30


def _bench(name: str):
    """Import a sibling benchmark script (benchmarks/ is no package) to reuse its model builders."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _measure(dev: torch.device, fn, *a, **kw):
    """(``fn(*a, **kw)``, seconds, peak bytes allocated above the bytes live at the start; 0 on the CPU)."""
    _sync(dev)
    base = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    out = fn(*a, **kw)
    _sync(dev)
    secs = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(dev) - base if dev.type == "cuda" else 0
    return out, secs, peak


def attention(args, dev: torch.device) -> dict:
    """Capture vs plain vs eager per dtype and length."""
    att = _bench("attention")
    out: dict = {}
    for dtype_name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        model, _, _ = att.build(args.layers, args.vocab, max(args.seqs), args.hidden)
        model.to(dev, dtype)
        for seq in args.seqs:
            ids, labels = att.inputs(args.vocab, seq)
            ids = ids.to(dev)
            row: dict = {}
            att.run_mode("forward", model, ids, labels)  # warm-ups: the first capture also pays CUDA's one-time
            att.run_mode("capture", model, ids, labels)  # set-up of its fp32 kernels (~0.3 s on an H200)
            _, row["forward_s"], fwd_peak = _measure(dev, att.run_mode, "forward", model, ids, labels)
            cap, row["capture_s"], cap_peak = _measure(dev, att.run_mode, "capture", model, ids, labels)
            row["forward_peak_mib"], row["capture_peak_mib"] = fwd_peak / 2 ** 20, cap_peak / 2 ** 20
            row["capture_memory_ratio_vs_forward"] = round(cap_peak / fwd_peak, 3) if fwd_peak else None
            row["capture_time_ratio_vs_forward"] = round(row["capture_s"] / row["forward_s"], 3)
            need = args.layers * 12 * seq * seq * dtype.itemsize / GIB  # eager keeps every layer's weights
            if dev.type == "cuda" and need > args.eager_budget_gib:
                row["eager"] = f"skipped: {need:.0f} GiB of weights > --eager-budget-gib {args.eager_budget_gib}"
            else:
                eager, row["eager_s"], eager_peak = _measure(dev, att.run_mode, "eager", model, ids, labels)
                row["eager_peak_mib"] = eager_peak / 2 ** 20
                row["eager_time_ratio_vs_capture"] = round(row["eager_s"] / row["capture_s"], 3)
                row["capture_max_abs_err_vs_eager"] = float(np.abs(np.asarray(cap) - eager).max())
            out[f"{dtype_name}_{seq}"] = row
        del model
        if dev.type == "cuda":
            torch.cuda.empty_cache()
    return out


def patching(args, dev: torch.device) -> dict:
    """Fast vs naive activation patching on benchmarks/patching.py's pair."""
    from thinklens.patching.sweeps import patch_pair

    ns = SimpleNamespace(quick=args.dry_run, layers=args.layers, vocab=args.vocab, seed=0, tokens=args.patch_tokens)
    model, profile, pair = _bench("patching").build(ns)
    model.to(dev)
    spec = "last-reasoning:8,answer-tail:3"
    patch_pair(model, profile, pair, "final", layers=[0], engine="fast")  # warm-up
    fast, fast_s, _ = _measure(dev, patch_pair, model, profile, pair, spec, engine="fast")
    naive, naive_s, _ = _measure(dev, patch_pair, model, profile, pair, spec, engine="naive")
    return {"speedup_vs_naive": round(naive_s / fast_s, 2), "fast_s": fast_s, "naive_s": naive_s,
            "max_abs_nld_diff": float(np.nanmax(np.abs(np.array(fast.nld) - np.array(naive.nld)))),
            "n_tokens": len(pair), "n_layers": len(fast.layers)}


def suppression(args, dev: torch.device) -> dict:
    """Fast vs naive suppression, both scopes, on benchmarks/steps.py's trace."""
    from thinklens.steps.suppression import suppression_effects

    ns = SimpleNamespace(quick=args.dry_run, layers=args.layers, seed=0, tokens=args.patch_tokens,
                         steps=8 if args.dry_run else 40)
    model, _, profile, trace, spans = _bench("steps").build(ns)
    model.to(dev)
    out: dict = {}
    for scope in ("all", "answer"):
        suppression_effects(model, profile, trace, spans[-1:], scope=scope)  # warm-up
        fast, fast_s, _ = _measure(dev, suppression_effects, model, profile, trace, spans, scope=scope)
        naive, naive_s, _ = _measure(dev, suppression_effects, model, profile, trace, spans, scope=scope,
                                     engine="naive")
        out[scope] = {"speedup_vs_naive": round(naive_s / fast_s, 2), "fast_s": fast_s, "naive_s": naive_s,
                      "max_abs_diff": float(np.abs(fast.kl - naive.kl).max())}
    return out


_VLLM = """
import json, sys, time
if __name__ == "__main__":
    from vllm import LLM, SamplingParams
    llm = LLM(model=sys.argv[1], dtype="bfloat16", enable_prefix_caching=True, gpu_memory_utilization=0.3, seed=0)
    prompts = [{"prompt_token_ids": [1, 5 + i % 20, 7, 9]} for i in range(64)]
    t0 = time.perf_counter()
    outs = llm.generate(prompts, SamplingParams(max_tokens=128, temperature=0.0))
    secs = time.perf_counter() - t0
    n = sum(len(o.outputs[0].token_ids) for o in outs)
    print(json.dumps({"tokens": n, "seconds": secs, "tokens_per_s": n / secs}))
"""

_TORCHRUN = """
import json, os, torch, torch.distributed as dist
backend = os.environ["CHECK_BACKEND"]
dist.init_process_group(backend)
dev = torch.device("cuda", int(os.environ["LOCAL_RANK"])) if backend == "nccl" else torch.device("cpu")
x = torch.ones(4, device=dev) * (dist.get_rank() + 1)
dist.all_reduce(x)
print(json.dumps({"backend": backend, "world_size": dist.get_world_size(), "all_reduce": x.tolist()}))
dist.destroy_process_group()
"""


def _child(code: str, launcher: list[str], script_args: list[str], env: dict, timeout: float, cwd: Path) -> dict:
    """Run ``code`` as a script in a subprocess; its last stdout line is its JSON result."""
    script = cwd / "child.py"
    script.write_text(textwrap.dedent(code))
    proc = subprocess.run(launcher + [str(script)] + script_args, capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env={**os.environ, **env})
    last = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
    if proc.returncode != 0 or not last:
        return {"error": f"exit {proc.returncode}: {proc.stderr.strip()[-600:]}"}
    return json.loads(last[0])


def vllm(args, dev: torch.device, tmp: Path) -> dict:
    if importlib.util.find_spec("vllm") is None:
        return {"skipped": "vllm is not installed"}
    if dev.type != "cuda":
        return {"skipped": "--dry-run: vLLM is checked on the GPU only"}
    from thinklens.toy import TINY_R1_DIR

    return _child(_VLLM, [sys.executable], [str(TINY_R1_DIR)], {}, args.vllm_timeout, tmp)


def torchrun(args, dev: torch.device, tmp: Path) -> dict:
    backend = "nccl" if dev.type == "cuda" else "gloo"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
    return _child(_TORCHRUN, launcher, [], {"CHECK_BACKEND": backend}, 180, tmp)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dry-run", action="store_true", help="CPU, toy sizes, gloo: proves the script runs")
    ap.add_argument("--eager-budget-gib", type=float, default=60.0, help="skip eager above this estimate")
    ap.add_argument("--vllm-timeout", type=float, default=240.0)
    ap.add_argument("--sections", default="attention,patching,suppression,vllm,torchrun")
    ap.add_argument("--json", type=Path, help="also write the result here after every section (a killed run keeps "
                    "the finished sections)")
    args = ap.parse_args(argv)
    if args.dry_run:
        dev = torch.device("cpu")
        args.layers, args.hidden, args.vocab, args.seqs, args.patch_tokens = 2, 384, 512, (256, 512), 300
    else:
        if not torch.cuda.is_available():
            raise SystemExit("device_check: no CUDA device (use --dry-run on a CPU machine)")
        dev = torch.device("cuda")
        args.layers, args.hidden, args.vocab, args.seqs, args.patch_tokens = 28, 1536, 32000, (4096, 16384), 2000
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"thinklens-device-check-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    result: dict = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                    "dry_run": args.dry_run, "torch": torch.__version__, "layers": args.layers,
                    "hidden": args.hidden}
    t_start = time.perf_counter()
    runners = {"attention": lambda: attention(args, dev), "patching": lambda: patching(args, dev),
               "suppression": lambda: suppression(args, dev), "vllm": lambda: vllm(args, dev, tmp),
               "torchrun": lambda: torchrun(args, dev, tmp)}
    for name in args.sections.split(","):
        t0 = time.perf_counter()
        try:
            result[name] = runners[name]()
        except Exception as err:  # noqa: BLE001 - one section's failure must not hide the others' numbers
            result[name] = {"error": f"{type(err).__name__}: {err}"[:600]}
        result[name + "_seconds"] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {result[name + '_seconds']} s", file=sys.stderr)
        if args.json:
            args.json.write_text(json.dumps(result) + "\n")
    result["total_seconds"] = round(time.perf_counter() - t_start, 1)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()

"""Benchmark: answer→reasoning attention capture vs a plain SDPA forward vs eager ``output_attentions``.

Model: a random-initialized ``Qwen2ForCausalLM`` with the DeepSeek-R1-Distill-Qwen-1.5B shape (hidden 1536, 12 query
heads, 2 kv heads, intermediate 8960), fewer layers (default 2) and a reduced vocabulary (32k), fp32 on CPU. The
sequence is a synthetic trace of ``--seq`` tokens laid out ``BOS | prompt (100) | <think> | reasoning | </think> |
answer (256)``; every run computes logits for the last position only (``logits_to_keep=1``) so the comparison
measures attention, not the vocabulary projection.

``--quick`` (smoke test) shrinks everything: 1 layer, width 384, vocab 4096, seq 512.

* time: capture, plain and eager forwards in one process, interleaved repeats (the order alternates to cancel
  drift); ratios of the medians of each arm, of the minima, and of the median process CPU times (on a shared machine
  other processes inflate wall time far more than CPU time); and, within each capture run, its time over its time
  minus the capture's own row computation (``time_ratio_within_run``: no drift between runs can touch it).
* memory: each arm in its own fresh subprocess (``--mem-repeats`` of them per arm, interleaved, median;
  ``--quick`` runs the arms one after another in one subprocess). After
  building the model the child resets the kernel's peak-RSS counter (``echo 5 > /proc/self/clear_refs`` resets
  ``VmHWM``), records ``VmRSS`` as the baseline, runs one forward and reads ``VmHWM``: the extra peak resident memory
  of that forward. (Where clear_refs is unavailable it falls back to ``ru_maxrss``.) The children run with glibc's
  mmap threshold fixed (``MALLOC_MMAP_THRESHOLD_``): by default glibc raises that threshold whenever a large block is
  freed, after which freed blocks of up to 32 MiB stay in the heap, and whether they are reused or add to the peak
  depends on allocation order and threads. That made the same arm vary by +-10% from run to run (566-681 MiB for the
  plain forward at T = 4096), hence a single run's "capture x1.20 memory"; with the threshold fixed the children agree
  to 0.1 MiB. The child also reports the peak of live tensor bytes during a second forward, from the profiler's
  allocation events, which no allocator caching can touch.
* error: captured a2* masses vs the same reductions of eager ``output_attentions`` (max abs difference).

``--seq 16384 --capture-only`` runs capture and plain forward at 16k and prints the eager estimate instead of running
it (12 heads x T^2 x 4 bytes per layer for the weights alone). The last output line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ANSWER, PROMPT = 256, 100
ROWS_SECONDS: list[float] = []  # time spent inside the capture's row computation, per capture run


def build(layers: int, vocab: int, seq: int, hidden: int = 1536):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=12,
                      num_key_value_heads=2, intermediate_size=hidden * 35 // 6,  # 8960 at 1536 (R1-Distill-1.5B)
                      max_position_embeddings=max(seq, 4096), tie_word_embeddings=True)
    model = Qwen2ForCausalLM(cfg).eval()
    model.set_attn_implementation("sdpa")
    return (model, *inputs(vocab, seq))


def inputs(vocab: int, seq: int):
    """The synthetic trace: token ids [1, seq] and the segment label of every position."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, vocab, (1, seq), generator=g)
    labels = np.full(seq, 3, dtype=np.int8)  # reasoning
    labels[0], labels[1 : 1 + PROMPT], labels[1 + PROMPT] = 0, 1, 2  # bos, prompt, <think>
    labels[seq - ANSWER - 1], labels[seq - ANSWER :] = 4, 5  # </think>, answer
    return ids, labels


def run_mode(mode: str, model, ids, labels):
    """One forward; returns the [L, H, n_seg] answer masses (None for the plain forward)."""
    from thinklens.attention.capture import capture_attention
    from thinklens.attention.reducers import SegmentReducer

    seq = ids.shape[1]
    L, H = model.config.num_hidden_layers, model.config.num_attention_heads
    with torch.no_grad():
        if mode == "forward":
            model(ids, use_cache=False, logits_to_keep=1)
            return None
        if mode == "capture":
            group = np.full(seq, -1)
            group[seq - ANSWER :] = 0
            red = SegmentReducer(L, H, group, labels, 1)
            with capture_attention(model, np.arange(seq - ANSWER, seq), red) as cap:
                model(ids, use_cache=False, logits_to_keep=1)
            ROWS_SECONDS.append(cap.seconds)
            return red.means()[:, 0, :, :6]
        if mode == "eager":
            model.set_attn_implementation("eager")
            try:
                out = model(ids, use_cache=False, logits_to_keep=1, output_attentions=True)
            finally:
                model.set_attn_implementation("sdpa")
            onehot = torch.nn.functional.one_hot(torch.as_tensor(labels, dtype=torch.long, device=ids.device), 6)
            return np.stack([(a[0, :, seq - ANSWER :].float() @ onehot.float()).mean(1).cpu().numpy()
                             for a in out.attentions])  # float first: numpy has no bfloat16
    raise ValueError(mode)


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _tensor_peak(fn) -> int:
    """Peak of live tensor bytes allocated while ``fn()`` runs (profiler allocation events; 0 = bytes at start)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    cur = peak = 0
    for _, n in events:
        cur += n
        peak = max(peak, cur)
    return peak


def child(modes: str, layers: int, vocab: int, seq: int, hidden: int) -> list[dict]:
    """Memory of each comma-separated mode, in this process (one mode per process in a full run)."""
    import gc
    import resource

    torch.set_num_threads(2)
    model, ids, labels = build(layers, vocab, seq, hidden)
    out = []
    for mode in modes.split(","):
        gc.collect()
        try:
            Path("/proc/self/clear_refs").write_text("5")
            base, method = _status("VmRSS"), "VmHWM after clear_refs"
        except OSError:
            base, method = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ru_maxrss"
        t0 = time.perf_counter()
        run_mode(mode, model, ids, labels)
        dt = time.perf_counter() - t0
        peak = (_status("VmHWM") if method.startswith("VmHWM")
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        tensors = _tensor_peak(lambda m=mode: run_mode(m, model, ids, labels))
        out.append({"mode": mode, "peak_extra_bytes": peak - base, "baseline_rss_bytes": base, "seconds": dt,
                    "method": method, "tensor_peak_bytes": tensors})
    return out


# glibc: a fixed mmap threshold turns off its dynamic adjustment (blocks over 128 KiB go back to the OS when freed)
CHILD_ENV = {"MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}


def measure_memory(modes: list[str], args) -> list[dict]:
    """Run :func:`child` for ``modes`` in a fresh subprocess with the fixed allocator settings."""
    import os

    cmd = [sys.executable, __file__, "--child", ",".join(modes), "--layers", str(args.layers), "--vocab",
           str(args.vocab), "--seq", str(args.seq), "--hidden", str(args.hidden)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, **CHILD_ENV})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--hidden", type=int, default=1536, help="width (12 query / 2 kv heads; MLP 35/6 x hidden)")
    ap.add_argument("--repeats", type=int, default=5, help="timed forwards per arm")
    ap.add_argument("--mem-repeats", type=int, default=1, help="fresh subprocesses per arm for memory")
    ap.add_argument("--quick", action="store_true",
                    help="tiny smoke run (seq 512, 1 layer, 2 repeats, all memory arms in one subprocess)")
    ap.add_argument("--capture-only", action="store_true", help="skip eager (long sequences); estimate it instead")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.seq, args.layers, args.repeats, args.vocab, args.hidden = 512, 1, 2, 4096, 384
    if args.child:
        print(json.dumps(child(args.child, args.layers, args.vocab, args.seq, args.hidden)))
        return {}
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        out = _run(args)
    finally:
        torch.set_num_threads(threads)
    print(json.dumps(out))
    return out


def _mib_list(runs: list[dict]) -> str:
    return ", ".join(f"{r['peak_extra_bytes'] / 2**20:.1f}" for r in runs)


def _run(args) -> dict:
    eager_est = 12 * args.seq**2 * 4  # attention weights of one layer in fp32 (softmax makes further copies)
    modes = ["forward", "capture"] + ([] if args.capture_only else ["eager"])
    runs: dict[str, list[dict]] = {m: [] for m in modes}
    for rep in range(args.mem_repeats):
        order = modes if rep % 2 == 0 else modes[::-1]
        for r in (measure_memory(order, args) if args.quick else [x for m in order for x in measure_memory([m], args)]):
            runs[r["mode"]].append(r)
    mem = {m: {k: statistics.median(r[k] for r in runs[m]) for k in ("peak_extra_bytes", "tensor_peak_bytes",
                                                                        "baseline_rss_bytes")} for m in modes}
    for m in modes:
        print(f"memory {m:8s}: +{mem[m]['peak_extra_bytes'] / 2**20:9.1f} MiB peak RSS over the model "
              f"(runs: {_mib_list(runs[m])}; baseline RSS "
              f"{mem[m]['baseline_rss_bytes'] / 2**20:.0f} MiB), live tensors peak "
              f"{mem[m]['tensor_peak_bytes'] / 2**20:.1f} MiB", file=sys.stderr)
    model, ids, labels = build(args.layers, args.vocab, args.seq, args.hidden)
    times: dict[str, list[float]] = {m: [] for m in modes}
    cpu: dict[str, list[float]] = {m: [] for m in modes}  # process CPU time: less disturbed by other processes
    results = {}
    for m in modes:  # warm-up, also keeps the outputs for the error check
        results[m] = run_mode(m, model, ids, labels)
    ROWS_SECONDS.clear()
    for rep in range(args.repeats):
        for m in (modes if rep % 2 == 0 else modes[::-1]):  # alternate the order to cancel drift
            t0, c0 = time.perf_counter(), time.process_time()
            run_mode(m, model, ids, labels)
            times[m].append(time.perf_counter() - t0)
            cpu[m].append(time.process_time() - c0)
    med = {m: statistics.median(v) for m, v in times.items()}
    low = {m: min(v) for m, v in times.items()}
    for m in modes:
        print(f"time   {m:8s}: median {med[m]:.3f} s, min {low[m]:.3f} s over {args.repeats} (all: "
              f"{', '.join(f'{t:.2f}' for t in times[m])}; CPU: {', '.join(f'{t:.2f}' for t in cpu[m])})",
              file=sys.stderr)
    fwd_mem = max(mem["forward"]["peak_extra_bytes"], 1)
    fwd_tensors = max(mem["forward"]["tensor_peak_bytes"], 1)
    out = {
        "seq": args.seq, "layers": args.layers, "hidden": args.hidden, "answer_tokens": ANSWER, "repeats": args.repeats,
        "mem_repeats": args.mem_repeats,
        "time_ratio_vs_forward": med["capture"] / med["forward"],
        "time_ratio_min": low["capture"] / low["forward"],
        "time_ratio_paired_median": statistics.median(c / f for c, f in zip(times["capture"], times["forward"])),
        "time_ratio_cpu": statistics.median(cpu["capture"]) / statistics.median(cpu["forward"]),
        # within each capture run: its total over its total minus the rows' own time (immune to load drift between
        # runs; counts only the rows' computation, which is all that the capture adds to an SDPA forward)
        "time_ratio_within_run": statistics.median(t / (t - r) for t, r in zip(times["capture"], ROWS_SECONDS)),
        "capture_rows_seconds": statistics.median(ROWS_SECONDS),
        "rows_overhead_fraction": statistics.median(ROWS_SECONDS) / med["forward"],
        "memory_ratio_vs_forward": mem["capture"]["peak_extra_bytes"] / fwd_mem,
        "tensor_memory_ratio_vs_forward": mem["capture"]["tensor_peak_bytes"] / fwd_tensors,
        "forward_seconds": med["forward"], "capture_seconds": med["capture"],
        "forward_peak_extra_mib": mem["forward"]["peak_extra_bytes"] / 2**20,
        "capture_peak_extra_mib": mem["capture"]["peak_extra_bytes"] / 2**20,
        "forward_tensor_peak_mib": mem["forward"]["tensor_peak_bytes"] / 2**20,
        "capture_tensor_peak_mib": mem["capture"]["tensor_peak_bytes"] / 2**20,
        "eager_weights_estimate_mib_per_layer": eager_est / 2**20,
        "memory_method": f"{runs['capture'][0]['method']}, fixed glibc mmap threshold",
    }
    if not args.capture_only:
        out.update({
            "eager_time_ratio": med["eager"] / med["forward"],
            "eager_memory_ratio": mem["eager"]["peak_extra_bytes"] / fwd_mem,
            "eager_tensor_memory_ratio": mem["eager"]["tensor_peak_bytes"] / fwd_tensors,
            "eager_seconds": med["eager"], "eager_peak_extra_mib": mem["eager"]["peak_extra_bytes"] / 2**20,
            "max_abs_err_vs_eager": float(np.abs(results["capture"] - results["eager"]).max()),
        })
    return out


if __name__ == "__main__":
    main()

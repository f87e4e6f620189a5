"""Benchmark: fast (prefix-reusing, layer-batched) vs naive (one full forward per patch) activation patching.

A ~2,000-token pair on a random-initialized 1.5B-shaped Qwen2 (hidden 1536, 12 query / 2 kv heads, intermediate
8960, reduced vocabulary, 6 of its 28 layers),
per-token sweep over the last 8 reasoning + last 3 answer tokens x all layers
(``resid_pre``). The corrupted sequence differs in a block of prompt tokens and in the answer-carrying probe token;
the answer tokens are the pair of vocabulary entries whose logit difference moves most between the two runs, and
the unembedding is scaled so that |clean - corrupted| >= 1 (a well-conditioned NLD, not float noise).

    .venv/bin/python benchmarks/patching.py [--quick] [--threads 2] [--tokens 2000] [--layers 6]

Why the layer count matters: both engines pay one clean and one corrupted full forward; the naive one adds one full
forward per patch (n_layers x n_positions), the fast one only the short patched suffixes. The ratio therefore
grows with depth: (2 + 11 L) / ~2.3 full forwards, about 17-20x at 4 layers, 27x at 6, far more at the real 28.

The last output line is one JSON object: speedup_vs_naive, max_abs_nld_diff, max_abs_logit_diff_err,
clean_minus_corrupted (+ timings and shape). ``speedup_vs_naive`` is the ratio of process CPU times (more robust
when other jobs share the machine); ``speedup_wall`` is the wall-clock ratio. Fast runs are interleaved with the
naive run and their median is used, so both engines are timed under the same load; ``speedup_min`` is the
timeit-style ratio of least-disturbed costs ((n + 2) x the fastest naive patched forward vs the fastest fast run).
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch


def build(args: argparse.Namespace):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from thinklens.patching.pairs import Pair
    from thinklens.profiles import get_profile

    torch.manual_seed(args.seed)
    if args.quick:
        cfg = Qwen2Config(vocab_size=512, hidden_size=256, num_hidden_layers=args.layers, num_attention_heads=8,
                          num_key_value_heads=2, intermediate_size=768)
    else:
        cfg = Qwen2Config(vocab_size=args.vocab, hidden_size=1536, num_hidden_layers=args.layers,
                          num_attention_heads=12, num_key_value_heads=2, intermediate_size=8960)
    cfg._attn_implementation = "sdpa"
    model = Qwen2ForCausalLM(cfg).eval()
    T, V = args.tokens, cfg.vocab_size
    g = torch.Generator().manual_seed(args.seed)
    n_prompt, n_answer = 60, 12
    clean = torch.randint(2, V, (T,), generator=g)
    clean[0] = 1  # "BOS"
    corrupted = clean.clone()
    corrupted[10:30] = torch.randint(2, V, (20,), generator=g)  # the contrastive part of the query
    r1 = T - n_answer
    flip = r1 - 3  # "Final answer is X.\n": X is the 3rd token from the reasoning end
    corrupted[flip] = (clean[flip] + 1) % V
    pair = Pair(id="bench", clean_id="a", corrupted_id="b", clean_ids=clean.tolist(), corrupted_ids=corrupted.tolist(),
                clean_mask=[1] * T, corrupted_mask=[1] * T, clean_answer=0, corrupted_answer=1,
                clean_answer_text="", corrupted_answer_text="",
                positions={"answer_flip": flip, "think_close": r1, "final": T - 1},
                spans={"prompt": [0, n_prompt], "reasoning": [n_prompt, r1], "answer": [r1, T]})
    # condition the pair: answer tokens with the largest logit-difference change, unembedding scaled to |delta| >= 2
    with torch.no_grad():
        lc = model(input_ids=clean[None], logits_to_keep=1).logits[0, -1]
        lb = model(input_ids=corrupted[None], logits_to_keep=1).logits[0, -1]
        d = lc - lb
        a, b = int(d.argmax()), int(d.argmin())
        scale = max(1.0, 2.0 / float(d[a] - d[b]))
        model.lm_head.weight.mul_(scale)
    pair.clean_answer, pair.corrupted_answer = a, b
    return model, get_profile("default"), pair


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small model and 300 tokens: a smoke test")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=None)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=4, help="fast runs interleaved with the naive one (median); 1 = "
                    "fast once, before naive")
    args = ap.parse_args(argv)
    args.tokens = args.tokens or (300 if args.quick else 2000)
    torch.set_num_threads(args.threads)
    from thinklens.patching.sweeps import patch_pair

    model, profile, pair = build(args)
    spec = "last-reasoning:8,answer-tail:3"
    for engine in ("fast", "naive"):  # warm-up (thread pools, allocator, kernels) so neither pays first-call costs
        patch_pair(model, profile, pair, "final", layers=[0], engine=engine)
    # The machine may be shared: fast runs are interleaved with the naive run (before, at 1/3 and 2/3 of its
    # patches, after) so both see the same load; time spent in the interleaved fast runs is excluded from naive's.
    results: dict = {}
    fast_w: list[float] = []
    fast_c: list[float] = []

    def fast_once() -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        results["fast"] = patch_pair(model, profile, pair, spec, engine="fast")
        fast_w.append(time.perf_counter() - t0)
        fast_c.append(time.process_time() - c0)
        return fast_w[-1], fast_c[-1]

    n_items = 11 * model.config.num_hidden_layers
    checkpoints = {n_items // 3, 2 * n_items // 3} if args.repeats > 1 else set()
    done, excluded, item_w, last = [0], [0.0, 0.0], [], [0.0]

    def on_progress(n: int) -> None:
        now = time.perf_counter()
        item_w.append(now - last[0])  # one naive patched forward
        done[0] += n
        if done[0] in checkpoints:
            w, c = fast_once()
            excluded[0] += w
            excluded[1] += c
        last[0] = time.perf_counter()

    fast_once()
    t0, c0 = time.perf_counter(), time.process_time()
    last[0] = t0
    results["naive"] = patch_pair(model, profile, pair, spec, engine="naive", progress=on_progress)
    naive_w, naive_c = time.perf_counter() - t0 - excluded[0], time.process_time() - c0 - excluded[1]
    if args.repeats > 1:
        fast_once()
    timings = {"fast": float(np.median(fast_w)), "naive": naive_w}
    cpu = {"fast": float(np.median(fast_c)), "naive": naive_c}
    for engine in ("fast", "naive"):
        print(f"{engine}: {timings[engine]:.2f} s wall, {cpu[engine]:.2f} s cpu", file=sys.stderr)
    print(f"fast runs (wall): {[round(x, 2) for x in fast_w]}", file=sys.stderr)
    f, n = results["fast"], results["naive"]
    out = {
        "speedup_vs_naive": round(cpu["naive"] / cpu["fast"], 2),  # CPU time: robust to other jobs on the box
        "speedup_wall": round(timings["naive"] / timings["fast"], 2),
        # timeit-style: least-disturbed cost, (n + 2) x the fastest naive forward vs the fastest fast run
        "speedup_min": round((len(item_w) + 2) * min(item_w[1:] or item_w) / min(fast_w), 2),
        "max_abs_nld_diff": float(np.nanmax(np.abs(np.array(f.nld) - np.array(n.nld)))),
        "max_abs_logit_diff_err": float(np.max(np.abs(np.array(f.patched) - np.array(n.patched)))),
        "clean_minus_corrupted": f.clean - f.corrupted,
        "fast_seconds": round(timings["fast"], 3), "fast_cpu_seconds": round(cpu["fast"], 3),
        "naive_cpu_seconds": round(cpu["naive"], 3),
        "naive_seconds": round(timings["naive"], 3),
        "n_tokens": len(pair), "n_layers": len(f.layers), "n_positions": len(f.positions),
        "hidden": model.config.hidden_size, "threads": args.threads, "quick": args.quick,
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

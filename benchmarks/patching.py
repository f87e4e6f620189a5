"""Benchmark: fast (prefix-reusing, layer-batched) vs naive (one full forward per patch) activation patching.

A ~2,000-token pair on a random-initialized 1.5B-shaped Qwen2 (hidden 1536, 12 query / 2 kv heads, intermediate
8960, reduced vocabulary, 4 layers), per-token sweep over the last 8 reasoning + last 3 answer tokens x all layers
(``resid_pre``). The corrupted sequence differs in a block of prompt tokens and in the answer-carrying probe token;
the answer tokens are the pair of vocabulary entries whose logit difference moves most between the two runs, and
the unembedding is scaled so that |clean - corrupted| >= 1 (a well-conditioned NLD, not float noise).

    .venv/bin/python benchmarks/patching.py [--quick] [--threads 2] [--tokens 2000] [--layers 4]

The last output line is one JSON object: speedup_vs_naive, max_abs_nld_diff, max_abs_logit_diff_err,
clean_minus_corrupted (+ timings and shape). ``speedup_vs_naive`` is the ratio of process CPU times (robust when
other jobs share the machine); ``speedup_wall`` is the wall-clock ratio.
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
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3, help="timed runs of the fast engine (median)")
    args = ap.parse_args(argv)
    args.tokens = args.tokens or (300 if args.quick else 2000)
    torch.set_num_threads(args.threads)
    from thinklens.patching.sweeps import patch_pair

    model, profile, pair = build(args)
    spec = "last-reasoning:8,answer-tail:3"
    for engine in ("fast", "naive"):  # warm-up (thread pools, allocator, kernels) so neither pays first-call costs
        patch_pair(model, profile, pair, "final", layers=[0], engine=engine)
    timings, cpu, results = {}, {}, {}
    for engine, repeats in (("fast", args.repeats), ("naive", 1)):  # fast is short: median of a few runs
        walls, cpus = [], []
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            results[engine] = patch_pair(model, profile, pair, spec, engine=engine)
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        timings[engine], cpu[engine] = float(np.median(walls)), float(np.median(cpus))
        print(f"{engine}: {timings[engine]:.2f} s wall, {cpu[engine]:.2f} s cpu (median of {repeats})", file=sys.stderr)
    f, n = results["fast"], results["naive"]
    out = {
        "speedup_vs_naive": round(cpu["naive"] / cpu["fast"], 2),  # CPU time: robust to other jobs on the box
        "speedup_wall": round(timings["naive"] / timings["fast"], 2),
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

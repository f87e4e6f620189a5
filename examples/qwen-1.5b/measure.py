"""Planning numbers for the Qwen2.5-Coder-1.5B study on this machine's CPU cores (one dtype per run).

Why: the study's wall time is dominated by generation, full forwards and attention capture; measuring each once on
the provisioned model turns "hours" into an estimate. Prints one JSON line::

    nice -n 10 python examples/qwen-1.5b/measure.py --dtype bf16 --threads 2
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provision import provisioned  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default="bf16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=24)
    ap.add_argument("--forward-tokens", type=int, default=1500)
    ap.add_argument("--batches", default="1,8")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model_dir = provisioned()
    if model_dir is None:
        sys.exit("error: the model is not provisioned: python examples/qwen-1.5b/provision.py")
    from thinklens.attention.capture import RowsReducer, capture_attention
    from thinklens.models import load_model

    out: dict = {"dtype": args.dtype, "threads": args.threads}
    t = time.perf_counter()
    model, tok, _ = load_model(str(model_dir), device="cpu", dtype=args.dtype)
    out["load_s"] = round(time.perf_counter() - t, 1)
    chat = [{"role": "user", "content": "What is 37*4+12? Think step by step."}]
    prompt = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    ids = tok(prompt, return_tensors="pt", add_special_tokens=False)["input_ids"]
    for b in (int(x) for x in args.batches.split(",")):
        batch = ids.repeat(b, 1)
        with torch.no_grad():
            t = time.perf_counter()
            model.generate(batch, attention_mask=torch.ones_like(batch), max_new_tokens=args.new_tokens,
                           min_new_tokens=args.new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            dt = time.perf_counter() - t
        out[f"gen_tok_per_s_batch{b}"] = round(b * args.new_tokens / dt, 2)
    ref = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "r1_math500_traces.jsonl"
    text = "".join(json.loads(x)["response"] for x in ref.read_text().splitlines()[:4]) if ref.is_file() \
        else "1+1=2. " * 2000  # real text (a few reference traces) when the reference data is there
    long = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"][:, :args.forward_tokens]
    T = long.shape[1]
    out["forward_tokens"] = T
    with torch.no_grad():
        t = time.perf_counter()
        model(long, use_cache=False)
        out["forward_s"] = round(time.perf_counter() - t, 1)
        rows = list(range(T - 32, T))  # an answer of 32 tokens reading the whole trace
        t = time.perf_counter()
        with capture_attention(model, rows, RowsReducer()):
            model(long, use_cache=False)
        out["capture_forward_s"] = round(time.perf_counter() - t, 1)
    out["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()

"""Benchmark: thinklens vs the tools a researcher would pick instead, TransformerLens 4.3 and nnsight 0.8.

Model: a random-initialized ``Qwen2ForCausalLM`` with the DeepSeek-R1-Distill-Qwen-1.5B shape (hidden 1536, 12 query /
2 kv heads, head_dim 128, intermediate 8960, vocabulary 151,936, untied unembedding) and ``--layers`` (default 2) of
its 28 layers, fp32. Traces of ``--seq`` tokens (default 2,048 and 4,096) laid out ``BOS | prompt (100) | <think> |
reasoning | </think> | answer (256)``; the corrupted side of the patching pair differs in 20 prompt tokens and in one
reasoning token (the "answer_flip"), and the answer tokens are the vocabulary pair whose logit difference moves most.

Two computations, each tool in its own fresh subprocess per (computation, length):

* **a2r** (the paper's): answer→reasoning attention mass per (layer, head), the mean over answer queries of the
  softmax mass on the reasoning keys. thinklens: :func:`thinklens.attention.segments.span_scores` (captured rows,
  no T x T matrix). TransformerLens: ``TransformerBridge.boot_transformers(hf_model=...)`` and ``run_with_cache`` on
  ``blocks.L.attn.hook_pattern`` (the paper's call; TL 4 replaced ``HookedTransformer`` by the bridge) with
  ``logits_to_keep=1`` passed through. nnsight: ``TransformersModel`` on the eager model, reading
  ``model.layers[L].self_attn.output[1]`` (the attention weights) inside ``trace`` and saving only its reduction.
* **patch**: ``resid_pre`` activation patching, last 8 reasoning + last 3 answer positions x all layers, NLD of the
  final-position logit difference. thinklens: the fast engine (:func:`thinklens.patching.sweeps.patch_pair`).
  TransformerLens: ``transformer_lens.patching.get_act_patch_resid_pre`` with an ``index_df`` of the 11 x L cells and
  a logit-difference metric (its patched forwards compute the full logits; the API passes no ``logits_to_keep``).
  nnsight: a loop of ``trace`` calls, each writing the clean residual into ``model.layers[L].input`` at one position
  (``logits_to_keep=1``).

Per tool: process CPU time (the ratio used: robust on a shared machine; wall time is printed too), the peak resident
memory of the computation over the child's RSS after building the model (``VmHWM`` after ``clear_refs``, with the
fixed glibc mmap threshold of ``benchmarks/attention.py``; on CUDA the peak of allocated device memory), and the
max abs difference of its numbers from thinklens'. A peer that cannot run a case (out of memory under
``--mem-limit-gib``, an error) is recorded with the reason instead of numbers.

    nice -n 10 .venv/bin/python benchmarks/peers.py [--seq 2048,4096] [--layers 2] [--quick]

The last output line is one JSON object: for the longest ``--seq``, ``a2r_speedup_vs_tl``,
``a2r_memory_ratio_vs_tl``, ``a2r_speedup_vs_nnsight``, ``a2r_memory_ratio_vs_nnsight``, ``patch_speedup_vs_tl``,
``patch_speedup_vs_nnsight``, ``patch_memory_ratio_vs_tl``, ``patch_memory_ratio_vs_nnsight`` and ``max_abs_diff_*``
(every ratio is peer / thinklens, so above 1 means thinklens is better), and the same for every length under
``by_seq``. The peers are needed only here and in tests/test_peers.py (``pip install -e ".[peers]"``); the
thinklens package never imports them.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from attention import CHILD_ENV, _status  # noqa: E402  (one definition of the child's allocator settings)

TOOLS = ("thinklens", "tl", "nnsight")
TASKS = ("a2r", "patch")
POSITIONS = "last-reasoning:8,answer-tail:3"


# ------------------------------------------------------------------------------------------------------ the case
def layout(seq: int, quick: bool) -> dict:
    """Token spans of the synthetic trace (half-open) and the sweep's absolute positions."""
    prompt, answer = (16, 32) if quick else (100, 256)
    r0, close = 2 + prompt, seq - answer - 1  # BOS, prompt, <think> | reasoning | </think> | answer
    return {"reasoning": (r0, close), "answer": (seq - answer, seq), "flip": close - 3, "prompt": (1, 1 + prompt),
            "positions": list(range(close - 8, close)) + [seq - 3, seq - 2, seq - 1]}


def build(args, attn: str = "sdpa"):
    """The seeded model (identical in every child) and the clean/corrupted ids of the pair."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=args.vocab, hidden_size=args.hidden, num_hidden_layers=args.layers,
                      num_attention_heads=12, num_key_value_heads=2, head_dim=args.hidden // 12,
                      intermediate_size=args.hidden * 35 // 6, max_position_embeddings=max(args.seq_now, 4096),
                      tie_word_embeddings=False)
    cfg._attn_implementation = attn
    model = Qwen2ForCausalLM(cfg).eval().to(args.device)
    g = torch.Generator().manual_seed(1)
    T, V = args.seq_now, args.vocab
    clean = torch.randint(2, V, (T,), generator=g)
    clean[0] = 1
    lay = {**layout(T, args.quick), "n_layers": args.layers}
    corrupted = clean.clone()
    corrupted[10:30] = torch.randint(2, V, (20,), generator=g)
    corrupted[lay["flip"]] = (clean[lay["flip"]] + 1) % V
    return model, clean[None].to(args.device), corrupted[None].to(args.device), lay


def thinklens_pair(clean, corrupted, lay, answers):
    from thinklens.patching.pairs import Pair

    T = clean.shape[1]
    r0, close = lay["reasoning"]
    return Pair(id="peers", clean_id="a", corrupted_id="b", clean_ids=clean[0].tolist(),
                corrupted_ids=corrupted[0].tolist(), clean_mask=[1] * T, corrupted_mask=[1] * T,
                clean_answer=answers[0], corrupted_answer=answers[1], clean_answer_text="", corrupted_answer_text="",
                positions={"answer_flip": lay["flip"], "think_close": close, "final": T - 1},
                spans={"prompt": list(lay["prompt"]), "reasoning": [r0, close], "answer": [close, T]})


# ------------------------------------------------------------------------------------------------------ the tools
def prepare(tool: str, model, tokenizer=None):
    """Wrap the model the way each tool's user would (outside the measured region)."""
    if tool == "tl":
        from transformer_lens.model_bridge import TransformerBridge

        # boot_transformers switches a pre-loaded model to eager attention so that hook_pattern fires
        return TransformerBridge.boot_transformers("random/qwen2-1.5b-shape", hf_model=model, tokenizer=tokenizer,
                                                   device=str(next(model.parameters()).device))
    if tool == "nnsight":
        from nnsight import TransformersModel

        model.set_attn_implementation("eager")  # the attention weights exist only in eager attention
        return TransformersModel(model, task="text-generation", tokenizer=tokenizer)
    return model


def a2r(tool: str, wrapped, ids, lay) -> np.ndarray:
    """[n_layers, n_heads] answer→reasoning attention mass."""
    (a0, a1), (r0, r1) = lay["answer"], lay["reasoning"]
    if tool == "thinklens":
        from thinklens.attention.segments import span_scores
        from thinklens.traces import Span

        return span_scores(wrapped, ids[0].tolist(), Span(a0, a1), Span(r0, r1))
    if tool == "tl":
        _, cache = wrapped.run_with_cache(ids, names_filter=lambda n: n.endswith("attn.hook_pattern"),
                                          logits_to_keep=1)
        n = wrapped.cfg.n_layers
        return np.stack([cache[f"blocks.{lay_}.attn.hook_pattern"][0, :, a0:a1, r0:r1].sum(-1).mean(-1).cpu().numpy()
                         for lay_ in range(n)])
    n = lay["n_layers"]
    out = []
    with wrapped.trace(ids, logits_to_keep=1):
        for layer in range(n):
            w = wrapped.model.layers[layer].self_attn.output[1]  # [1, heads, T, T]
            out.append(w[0, :, a0:a1, r0:r1].sum(-1).mean(-1).save())
    return np.stack([o.cpu().numpy() for o in out])


def patch(tool: str, wrapped, clean, corrupted, lay, answers) -> np.ndarray:
    """[n_positions, n_layers] NLD of resid_pre patching at the sweep's positions."""
    a, b = answers
    pos = lay["positions"]
    if tool == "thinklens":
        from thinklens.patching.sweeps import patch_pair
        from thinklens.profiles import get_profile

        res = patch_pair(wrapped, get_profile("default"), thinklens_pair(clean, corrupted, lay, answers), POSITIONS,
                         engine="fast")
        assert res.positions == pos, (res.positions, pos)
        return np.asarray(res.nld)
    if tool == "tl":
        import pandas as pd
        from transformer_lens import patching

        n = wrapped.cfg.n_layers

        def metric(logits):
            return logits[0, -1, a] - logits[0, -1, b]

        _, cache = wrapped.run_with_cache(clean, names_filter=lambda name: name.endswith("hook_resid_pre"))
        lc, lb = float(metric(wrapped(clean))), float(metric(wrapped(corrupted)))
        df = pd.DataFrame([(layer, p) for p in pos for layer in range(n)], columns=["layer", "pos"])
        vals = patching.get_act_patch_resid_pre(wrapped, corrupted, cache, metric, index_df=df, index_axis_names=None)
        return (vals.cpu().numpy().reshape(len(pos), n) - lb) / (lc - lb)
    n = lay["n_layers"]
    idx = torch.as_tensor(pos)
    saved = []
    with wrapped.trace(clean, logits_to_keep=1):  # (nnsight runs this block in a worker thread: no comprehensions)
        for layer in range(n):
            saved.append(wrapped.model.layers[layer].input[:, idx].save())
        lc = wrapped.lm_head.output[0, -1].save()
    with wrapped.trace(corrupted, logits_to_keep=1):
        lb = wrapped.lm_head.output[0, -1].save()
    lc, lb = float(lc[a] - lc[b]), float(lb[a] - lb[b])
    out = np.zeros((len(pos), n))
    for i, p in enumerate(pos):
        for layer in range(n):
            value = saved[layer][:, i]
            with wrapped.trace(corrupted, logits_to_keep=1):
                wrapped.model.layers[layer].input[:, p] = value
                logit = wrapped.lm_head.output[0, -1].save()
            out[i, layer] = (float(logit[a] - logit[b]) - lb) / (lc - lb)
    return out


# ------------------------------------------------------------------------------------------------------ children
def answer_tokens(args) -> list[int]:
    """The answer pair whose logit difference moves most between the clean and corrupted runs (a well-conditioned
    NLD, not float noise), and its |clean - corrupted|."""
    model, clean, corrupted, _ = build(args)
    with torch.no_grad():
        d = model(clean, logits_to_keep=1).logits[0, -1] - model(corrupted, logits_to_keep=1).logits[0, -1]
    return [int(d.argmax()), int(d.argmin()), float(d.max() - d.min())]


RESULTS = Path(__file__).resolve().parents[1] / "runs" / "peers"  # every child's result, for --reuse


def _result_file(args, spec: str, seq: int) -> Path:
    return RESULTS / (f"{spec.replace(':', '-')}-T{seq}-L{args.layers}-d{args.hidden}-V{args.vocab}-{args.device}"
                      f"{'-quick' if args.quick else ''}.json")


def child(args) -> dict:
    out = _child(args)
    if "error" not in out:
        RESULTS.mkdir(parents=True, exist_ok=True)
        _result_file(args, args.child, args.seq_now).write_text(json.dumps(out))
    return out


def _child(args) -> dict:
    torch.set_num_threads(args.threads)
    if args.mem_limit_gib:  # a peer that needs more fails with an allocation error instead of swapping the machine
        lim = int(args.mem_limit_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (lim, lim))
    tool, task = args.child.split(":")
    model, clean, corrupted, lay = build(args)
    tokenizer = None
    if tool != "thinklens":
        from thinklens.patching.pairs import toy_tokenizer

        tokenizer = toy_tokenizer()  # the peers' wrappers want one; every input here is token ids
    cuda = clean.is_cuda
    try:
        wrapped = prepare(tool, model, tokenizer)
        with torch.no_grad():
            model(clean[:, :32])  # thread pools, kernels
        gc.collect()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")
            base = _status("VmRSS")
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.no_grad():
            values = a2r(tool, wrapped, clean, lay) if task == "a2r" else patch(tool, wrapped, clean, corrupted, lay,
                                                                                 args.answers)
        if cuda:
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        peak = torch.cuda.max_memory_allocated() if cuda else _status("VmHWM")
    except (RuntimeError, MemoryError, NotImplementedError, ValueError, TypeError) as err:
        return {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}
    return {"values": np.asarray(values, dtype=np.float64).tolist(), "seconds": wall, "cpu_seconds": cpu,
            "peak_extra_bytes": peak - base, "baseline_bytes": base,
            "method": "torch.cuda.max_memory_allocated" if cuda else "VmHWM after clear_refs"}


def run_child(args, spec: str, seq: int) -> dict:
    if args.reuse and _result_file(args, spec, seq).exists():
        return json.loads(_result_file(args, spec, seq).read_text())
    cmd = [sys.executable, __file__, "--child", spec, "--seq", str(seq), "--layers", str(args.layers), "--vocab",
           str(args.vocab), "--hidden", str(args.hidden), "--threads", str(args.threads), "--device", args.device,
           "--mem-limit-gib", str(args.mem_limit_gib)] + (["--quick"] if args.quick else [])
    if args.answers:
        cmd += ["--answers", ",".join(map(str, args.answers))]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **CHILD_ENV})
    if out.returncode != 0:
        tail = (out.stderr.strip().splitlines() or ["no output"])[-1][:200]
        why = "killed (likely out of memory)" if out.returncode < 0 else f"exit {out.returncode}"
        return {"error": f"{why}: {tail}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ratio(peer: dict, ours: dict, key: str):
    if "error" in peer:
        return peer["error"]
    if "error" in ours:
        return "thinklens failed: " + ours["error"]
    return round(peer[key] / max(ours[key], 1e-9), 3)


def _diff(peer: dict, ours: dict):
    if "error" in peer or "error" in ours:
        return peer.get("error") or ours.get("error")
    return float(np.nanmax(np.abs(np.asarray(peer["values"]) - np.asarray(ours["values"]))))


def _prep(args, seq: int) -> list:
    cmd = [sys.executable, __file__, "--prep", "--seq", str(seq), "--layers", str(args.layers), "--vocab",
           str(args.vocab), "--hidden", str(args.hidden), "--device", args.device] + (["--quick"] if args.quick else [])
    return json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])


def run_all(args, seqs: list[int]) -> dict:
    """res[seq][task][tool]: every child, the cheap a2r cases of every length first; each printed as it ends."""
    res: dict = {s: {t: {} for t in args.tasks} for s in seqs}
    preps: dict = {}
    for task in args.tasks:
        for seq in seqs:
            args.seq_now = seq
            if task == "patch":
                preps[seq] = preps.get(seq) or _prep(args, seq)
                args.answers = preps[seq][:2]
            for tool in args.tools:
                r = res[seq][task][tool] = run_child(args, f"{tool}:{task}", seq)
                desc = r.get("error") or (f"{r['seconds']:.2f} s wall, {r['cpu_seconds']:.2f} s cpu, "
                                          f"+{r['peak_extra_bytes'] / 2**20:.0f} MiB peak")
                print(f"T={seq} {task:5s} {tool:9s}: {desc}", file=sys.stderr, flush=True)
    for seq in preps:
        res[seq]["clean_minus_corrupted"] = preps[seq][2]
    return res


def summarize(args, res: dict) -> dict:
    """The ratios and differences of one length (every ratio peer / thinklens)."""
    out: dict = {k: res[k] for k in ("clean_minus_corrupted",) if k in res}
    for task in args.tasks:
        ours = res[task]["thinklens"]
        for tool in args.tools:
            r = res[task][tool]
            if "error" not in r:
                out[f"{task}_{tool}_seconds"] = round(r["seconds"], 3)
                out[f"{task}_{tool}_cpu_seconds"] = round(r["cpu_seconds"], 3)
                out[f"{task}_{tool}_peak_extra_mib"] = round(r["peak_extra_bytes"] / 2**20, 1)
            if tool == "thinklens":
                continue
            time_key = "seconds" if args.device != "cpu" else "cpu_seconds"
            out[f"{task}_speedup_vs_{tool}"] = _ratio(r, ours, time_key)
            out[f"{task}_wall_speedup_vs_{tool}"] = _ratio(r, ours, "seconds")
            out[f"{task}_memory_ratio_vs_{tool}"] = _ratio(r, ours, "peak_extra_bytes")
            out[f"max_abs_diff_{'a2r' if task == 'a2r' else 'nld'}_{tool}"] = _diff(r, ours)
    out["memory_method"] = next((r["method"] for t in args.tasks for r in res[t].values() if "method" in r), None)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", default="2048,4096", help="comma-separated trace lengths")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--hidden", type=int, default=1536, help="width (12 query / 2 kv heads; MLP 35/6 x hidden)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tools", default=",".join(TOOLS), help="comma-separated subset of " + ",".join(TOOLS))
    ap.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset of " + ",".join(TASKS))
    ap.add_argument("--mem-limit-gib", type=float, default=8.0, help="RLIMIT_DATA of each child (0: none)")
    ap.add_argument("--reuse", action="store_true", help="take the cases already measured from runs/peers/ (resume)")
    ap.add_argument("--quick", action="store_true", help="smoke test: seq 256, 1 layer, width 384, vocab 4096")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--prep", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--answers", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.quick:
        args.seq, args.layers, args.hidden, args.vocab = "256", 1, 384, 4096
    args.tools = [t for t in args.tools.split(",") if t]
    args.tasks = [t for t in args.tasks.split(",") if t]
    if "thinklens" not in args.tools:
        args.tools.insert(0, "thinklens")
    seqs = [int(s) for s in args.seq.split(",")]
    args.seq_now = seqs[-1]
    args.answers = [int(x) for x in args.answers.split(",")][:2] if args.answers else None
    if args.prep:
        print(json.dumps(answer_tokens(args)))
        return {}
    if args.child:
        print(json.dumps(child(args)))
        return {}
    res = run_all(args, seqs)
    cases = {str(s): summarize(args, res[s]) for s in seqs}
    out = {"seq": seqs[-1], "layers": args.layers, "hidden": args.hidden, "vocab": args.vocab,
           "device": args.device, "threads": args.threads, **cases[str(seqs[-1])], "by_seq": cases}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()

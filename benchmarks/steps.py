"""Benchmark: fast vs naive engines of the step-level causal methods (attention suppression, early answering).

A random-initialized Qwen2 with DeepSeek-R1-Distill-Qwen-1.5B shapes (hidden 1536, 12 query / 2 kv heads,
intermediate 8960, vocabulary 151936, tied embeddings; ``--layers`` of its 28 layers, default 2) and a synthetic
~2,000-token trace (60-token prompt, ``--steps`` reasoning steps of equal length separated by newlines, a 20-token
answer), with a character-level stand-in tokenizer (one character per token id, so the forced texts of early
answering are real token sequences).

    .venv/bin/python benchmarks/steps.py [--quick] [--threads 2] [--tokens 2000] [--steps 40] [--layers 2]

* Suppression: ``suppression_effects`` with all heads blocked, ``engine="fast"`` (one cached forward + packed
  suffixes) vs ``"naive"`` (one full forward per step). The fast engine skips every token before each step; it
  cannot skip the reasoning after it (the blocking changes those tokens' attention), so its work is ``sum_i (E - b_i)``
  query tokens instead of ``n E``: ``suppression_token_bound`` = ``n E / sum_i (E - b_i)`` is the speedup that
  prefix reuse alone allows (about 2 for steps spread evenly over the reasoning) and the measured ratio cannot
  exceed it by much (packing only saves per-forward overhead).
* Answer suppression (``scope="answer"``): the same blocking, but only the answer's own queries are blocked from the
  step (its direct read of the step; the reasoning after the step is untouched), so the fast engine recomputes only
  the answer rows of each step, all packed over the one cached forward: about ``n E / (E + n |answer|)`` fewer
  query tokens than the naive engine's one full forward per step (``answer_suppression_token_bound``).
* Early answering: ``early_answering`` ``"fast"`` (one forward of the trace, all ``n + 1`` truncation points
  decoded as one batch over its cache) vs ``"naive"`` (one ``model.generate`` per point). A random model never
  closes the answer box, so every point decodes its full ``--answer-tokens`` budget in both engines.

The last output line is one JSON object: ``suppression_speedup_vs_naive`` (the total-effect scope),
``answer_suppression_speedup_vs_naive``, ``truncation_speedup_vs_naive`` (ratios of process CPU times, robust to
other jobs on the machine; ``*_wall`` are wall-clock ratios), ``max_abs_diff`` (fast vs naive KL and log-prob change,
the larger over both suppression scopes), ``truncation_answers_equal`` (fast and naive read the same
tokens at every point), the token bound above, timings and shapes.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch


class CharTokenizer:
    """One token per character (ids 1000+ for printable ASCII), plus BOS/EOS/think delimiters as single tokens."""

    SPECIAL = {0: "<bos>", 1: "<eos>", 2: "</think>", 3: "<think>", 10: "\n", 11: " "}

    def __init__(self) -> None:
        self.eos_token_id, self.pad_token_id, self.eos_token = 1, 1, "<eos>"
        self._ids = {v: k for k, v in self.SPECIAL.items()}

    def piece(self, i: int) -> str:
        return self.SPECIAL.get(int(i), chr(33 + int(i) % 90))

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        ids, i = [], 0
        while i < len(text):
            sp = next((s for s in self._ids if len(s) > 1 and text.startswith(s, i)), None)
            if sp is not None:
                ids.append(self._ids[sp])
                i += len(sp)
            else:
                ids.append(self._ids.get(text[i], 1000 + ord(text[i]) - 33))
                i += 1
        return {"input_ids": ids}

    def decode(self, ids, skip_special_tokens: bool = False, **kw) -> str:
        return "".join(self.piece(i) for i in ids)


def build(args: argparse.Namespace):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from thinklens.profiles import get_profile
    from thinklens.traces import Span, Trace

    torch.manual_seed(args.seed)
    if args.quick:
        cfg = Qwen2Config(vocab_size=4096, hidden_size=256, num_hidden_layers=args.layers, num_attention_heads=8,
                          num_key_value_heads=2, intermediate_size=768, tie_word_embeddings=True)
    else:
        cfg = Qwen2Config(vocab_size=151936, hidden_size=1536, num_hidden_layers=args.layers, num_attention_heads=12,
                          num_key_value_heads=2, intermediate_size=8960, tie_word_embeddings=True)
    cfg._attn_implementation = "sdpa"
    model = Qwen2ForCausalLM(cfg).eval()
    tok = CharTokenizer()
    g = torch.Generator().manual_seed(args.seed)
    n_prompt, n_answer = 60, 20
    body = args.tokens - n_prompt - n_answer - 5  # BOS | prompt | <think> | reasoning | </think> | answer | EOS
    step_len = body // args.steps
    n_prompt += body - step_len * args.steps  # the rounding remainder goes to the prompt: exactly --tokens tokens
    ids = [0] + torch.randint(1000, 1090, (n_prompt,), generator=g).tolist() + [3]
    spans = []
    for _ in range(args.steps):
        a = len(ids) + 1  # after the newline that precedes every step
        ids += [10] + torch.randint(1000, 1090, (step_len - 1,), generator=g).tolist()
        spans.append((a, len(ids)))
    ids += [10]
    r0, r1 = n_prompt + 2, len(ids)
    ids += [2] + torch.randint(1000, 1090, (n_answer,), generator=g).tolist() + [1]
    pieces = [tok.piece(i) for i in ids]
    offsets, pos = [], 0
    for p in pieces:
        offsets.append((pos, pos + len(p)))
        pos += len(p)
    T = len(ids)
    trace = Trace(ids=ids, offsets=offsets, text="".join(pieces), prompt=Span(1, n_prompt + 1),
                  reasoning=Span(r0, r1), bos=Span(0, 1), think_open=Span(n_prompt + 1, r0),
                  think_close=Span(r1, r1 + 1), answer=Span(r1 + 1, T - 1), eos=Span(T - 1, T))
    return model, tok, get_profile("default"), trace, spans


def forward_flops(cfg, n_query: int, mean_keys: float, n_unembed: int) -> float:
    """Multiply-add FLOPs of a forward: ``n_query`` tokens through every layer (weights + attention over
    ``mean_keys`` keys on average) and ``n_unembed`` rows through the vocabulary projection."""
    d, hd = cfg.hidden_size, cfg.hidden_size // cfg.num_attention_heads
    layer = d * hd * (2 * cfg.num_attention_heads + 2 * cfg.num_key_value_heads) + 3 * d * cfg.intermediate_size
    per_token = 2 * layer + 4 * cfg.num_attention_heads * hd * mean_keys
    return cfg.num_hidden_layers * per_token * n_query + 2 * cfg.vocab_size * d * n_unembed


def flop_bounds(cfg, E: int, n_ans: int, spans: list[tuple[int, int]]) -> dict[str, float]:
    """Naive over fast FLOPs of the two suppression scopes: what the engines' algorithms allow, packing aside.
    Both engines run one base forward over ``E`` tokens and unembed ``n_ans`` rows per step; the naive engine runs
    one more full forward per step, the fast one the blocked queries only: the suffix ``[b, E)`` of each step (all)
    or the answer rows (answer)."""
    full = forward_flops(cfg, E, E / 2, n_ans)
    naive = (len(spans) + 1) * full
    total = full + sum(forward_flops(cfg, E - b, (E + b) / 2, n_ans) for _, b in spans)
    q0 = E - n_ans
    answer = full + len(spans) * forward_flops(cfg, n_ans, q0 + n_ans / 2, n_ans)
    return {"suppression_flop_bound": round(naive / total, 2),
            "answer_suppression_flop_bound": round(naive / answer, 2)}


def report(name: str, fw: float, fc: float, nw: float, nc: float) -> None:
    print(f"{name}: fast {fw:.2f} s wall, {fc:.2f} s cpu; naive {nw:.2f} s wall, {nc:.2f} s cpu", file=sys.stderr)


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small model, 300 tokens, 8 steps: a smoke test")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--tokens", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--answer-tokens", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=4096, help="packed query tokens per suppression forward")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", choices=("suppression", "answer_suppression", "truncation"), default=None,
                    help="run one method only")
    args = ap.parse_args(argv)
    args.tokens = args.tokens or (300 if args.quick else 2000)
    args.steps = args.steps or (8 if args.quick else 40)
    torch.set_num_threads(args.threads)
    from thinklens.steps.suppression import suppression_effects
    from thinklens.steps.truncation import early_answering

    model, tok, profile, trace, spans = build(args)
    E = trace.answer.end - 1
    bound = len(spans) * E / sum(E - b for _, b in spans)
    bounds = flop_bounds(model.config, E, len(trace.answer), spans)
    out: dict = {}
    if args.only in (None, "suppression"):
        # warm-up (allocator, thread pools, kernels) on the last steps only
        suppression_effects(model, profile, trace, spans[-2:], max_tokens=args.max_tokens)
        suppression_effects(model, profile, trace, spans[-1:], engine="naive")
        sf, sf_w, sf_c = timed(lambda: suppression_effects(model, profile, trace, spans, max_tokens=args.max_tokens))
        sn, sn_w, sn_c = timed(lambda: suppression_effects(model, profile, trace, spans, engine="naive"))
        report("suppression", sf_w, sf_c, sn_w, sn_c)
        out.update({
            "suppression_speedup_vs_naive": round(sn_c / sf_c, 2),
            "max_abs_diff": max(float(np.abs(sf.kl - sn.kl).max()),
                                float(np.abs(sf.logprob_delta - sn.logprob_delta).max())),
            "suppression_speedup_wall": round(sn_w / sf_w, 2), "suppression_token_bound": round(bound, 2),
            "suppression_flop_bound": bounds["suppression_flop_bound"],
            "suppression_kl_range": [float(sn.kl.min()), float(sn.kl.max())],
            "suppression_fast_cpu_seconds": round(sf_c, 3), "suppression_naive_cpu_seconds": round(sn_c, 3)})
    if args.only in (None, "answer_suppression"):
        kw = {"scope": "answer", "max_tokens": args.max_tokens}
        suppression_effects(model, profile, trace, spans[-2:], **kw)
        suppression_effects(model, profile, trace, spans[-1:], engine="naive", **kw)
        af, af_w, af_c = timed(lambda: suppression_effects(model, profile, trace, spans, **kw))
        an, an_w, an_c = timed(lambda: suppression_effects(model, profile, trace, spans, engine="naive", **kw))
        report("answer suppression", af_w, af_c, an_w, an_c)
        n_ans = len(trace.answer)
        diff = max(float(np.abs(af.kl - an.kl).max()), float(np.abs(af.logprob_delta - an.logprob_delta).max()))
        out.update({
            "answer_suppression_speedup_vs_naive": round(an_c / af_c, 2),
            "answer_suppression_speedup_wall": round(an_w / af_w, 2),
            "answer_suppression_token_bound": round((len(spans) + 1) * E / (E + len(spans) * n_ans), 2),
            "answer_suppression_flop_bound": bounds["answer_suppression_flop_bound"],
            "answer_suppression_max_abs_diff": diff, "max_abs_diff": max(out.get("max_abs_diff", 0.0), diff),
            "answer_suppression_kl_range": [float(an.kl.min()), float(an.kl.max())],
            "answer_suppression_fast_cpu_seconds": round(af_c, 3),
            "answer_suppression_naive_cpu_seconds": round(an_c, 3)})
    if args.only in (None, "truncation"):
        early_answering(model, tok, profile, trace, spans[-2:], max_answer_tokens=2)
        early_answering(model, tok, profile, trace, spans[-1:], max_answer_tokens=2, engine="naive")
        tf, tf_w, tf_c = timed(lambda: early_answering(model, tok, profile, trace, spans,
                                                       max_answer_tokens=args.answer_tokens))
        tn, tn_w, tn_c = timed(lambda: early_answering(model, tok, profile, trace, spans,
                                                       max_answer_tokens=args.answer_tokens, engine="naive"))
        report("truncation", tf_w, tf_c, tn_w, tn_c)
        out.update({
            "truncation_speedup_vs_naive": round(tn_c / tf_c, 2), "truncation_speedup_wall": round(tn_w / tf_w, 2),
            "truncation_answers_equal": tf.answers == tn.answers,
            "truncation_fast_cpu_seconds": round(tf_c, 3), "truncation_naive_cpu_seconds": round(tn_c, 3)})
    out.update({
        "n_tokens": len(trace), "n_steps": len(spans), "n_answer_tokens": len(trace.answer),
        "answer_budget": args.answer_tokens, "n_layers": model.config.num_hidden_layers,
        "hidden": model.config.hidden_size, "vocab": model.config.vocab_size, "max_tokens": args.max_tokens,
        "threads": args.threads, "quick": args.quick,
    })
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: adaptive vs fixed-N counterfactual resampling on the organism (tiny-r1, arithmetic traces).

    .venv/bin/python benchmarks/resampling.py [--traces 40] [--rollouts 100] [--seed 11] [--threads 1] [--quick]

Traces: tiny-r1's teacher-forced arithmetic reference traces (``generate_problems(--traces, --seed)``, about 20% with
a slip corrected by ``Wait``), segmented as the steps stage segments them; rollouts at the organism profile's
resampling settings (temperature 2.0, 1024-token rollouts). The adaptive run (rounds of 4, top-3 stopping rule,
:mod:`thinklens.steps.adaptive`, at most ``--rollouts``) runs first; the fixed run (``--rollouts`` at every cut point,
Thought Anchors' N = 100 by default) then reuses its cached rollouts and draws the rest, so both see the same rollout
``r`` at every cut point and the comparison is exact; ``prefix_exact`` checks, on the first trace drawn afresh
without the cache, that the adaptive run's rollouts are the fixed run's first ones.

"Top-3 agree": the two importance vectors of a trace pick the same 3 steps, where a tie at a vector's third value may
be broken either way (:func:`thinklens.steps.adaptive.top_k_agree`; with no ties, plain set equality). A trace of 3
steps or fewer always agrees, so ``top3_agreement_over3`` also reports the share among traces of more than 3 steps.

The last output line is one JSON object: ``rollout_fraction`` (adaptive rollouts / fixed rollouts),
``top3_agreement`` (share of traces whose top-3 steps agree), ``top3_agreement_over3``, counts, settings, seconds.
The stopping rule's ``Z`` was chosen on other traces (``--seed 5``); the default seed measures it out of sample.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=int, default=40)
    ap.add_argument("--rollouts", type=int, default=100, help="fixed N (and the adaptive run's most)")
    ap.add_argument("--seed", type=int, default=11, help="which problems")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-new-tokens", type=int, default=None, help="rollout length (default: the profile's)")
    ap.add_argument("--quick", action="store_true", help="3 traces, N = 8, 64-token rollouts (a smoke test)")
    args = ap.parse_args(argv)
    if args.quick:
        args.traces, args.rollouts, args.max_new_tokens = 3, 8, args.max_new_tokens or 64
    torch.set_num_threads(args.threads)

    from thinklens.models import load_model
    from thinklens.steps import adaptive
    from thinklens.steps.resampling import resampling_importance_many
    from thinklens.steps.segment import segment_with_mode, step_spans
    from thinklens.toy import full_text, generate_problems
    from thinklens.traces import Trace

    model, tok, profile = load_model("tiny-r1", "cpu", "fp32")
    probs = generate_problems(args.traces, seed=args.seed)
    traces = [Trace.from_text(full_text(p), tok, profile) for p in probs]
    spans = [step_spans(segment_with_mode(t, "auto", 3)[0]) for t in traces]
    kw = dict(golds=[p.answer for p in probs], n_rollouts=args.rollouts, temperature=profile.resampling_temperature,
              max_new_tokens=args.max_new_tokens or profile.rollout_tokens, trace_ids=[p.id for p in probs])
    with tempfile.TemporaryDirectory() as d:
        cache = Path(d) / "rollouts.jsonl"
        t0 = time.perf_counter()
        ad = resampling_importance_many(model, tok, profile, traces, spans, adaptive=True, cache_path=cache, **kw)
        t1 = time.perf_counter()
        fx = resampling_importance_many(model, tok, profile, traces, spans, cache_path=cache, **kw)
        t2 = time.perf_counter()
    n_ad, n_fx = int(sum(r.n_drawn.sum() for r in ad)), int(sum(r.n_drawn.sum() for r in fx))
    agree = [adaptive.top_k_agree(a.importance, f.importance) for a, f in zip(ad, fx)]
    over3 = [g for g, s in zip(agree, spans) if len(s) > adaptive.TOP_K]
    # determinism without the shared cache: trace 0 drawn afresh at fixed N starts with the adaptive rollouts
    fresh = resampling_importance_many(model, tok, profile, traces[:1], spans[:1], **{
        **kw, "golds": kw["golds"][:1], "trace_ids": kw["trace_ids"][:1]})[0]
    prefix = all(a == f[:len(a)] for a, f in zip(ad[0].answers, fresh.answers)) and \
        all(a == f[:len(a)] for a, f in zip(ad[0].first_steps, fresh.first_steps))
    out = {"rollout_fraction": round(n_ad / n_fx, 4), "top3_agreement": round(float(np.mean(agree)), 4),
           "top3_agreement_over3": round(float(np.mean(over3)), 4) if over3 else None, "n_traces": len(traces),
           "n_traces_over3": len(over3), "adaptive_rollouts": n_ad, "fixed_rollouts": n_fx, "fixed_n": args.rollouts,
           "round": adaptive.ROUND, "z": adaptive.Z, "top_k": adaptive.TOP_K, "prefix_exact": prefix,
           "steps_per_trace": [int(np.min([len(s) for s in spans])), int(np.max([len(s) for s in spans]))],
           "temperature": kw["temperature"], "max_new_tokens": kw["max_new_tokens"], "seed": args.seed,
           "adaptive_seconds": round(t1 - t0, 1), "fixed_extra_seconds": round(t2 - t1, 1), "quick": args.quick}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()

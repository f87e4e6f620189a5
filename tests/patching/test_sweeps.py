import json

import numpy as np
import pytest

from thinklens.errors import ThinklensError
from thinklens.patching.pairs import Pair
from thinklens.patching.results import PatchingResult
from thinklens.patching.sweeps import patch_pair, patch_pairs, resolve_positions


def test_resolve_positions(padded_pair):
    p = padded_pair
    T, r1 = len(p), p.spans["reasoning"][1]
    pos, labels = resolve_positions(p, "last-reasoning:3,answer-tail:2,answer_flip,final,-1,0,final,nope?")
    assert pos == [r1 - 3, r1 - 2, r1 - 1, T - 2, T - 1, p.positions["answer_flip"], T - 1, T - 1, 0]
    assert labels == ["r-3", "r-2", "r-1", "a-2", "a-1", "answer_flip", "final", "@-1", "@0"]  # same label once
    assert resolve_positions(p, [5, "final"]) == ([5, T - 1], ["@5", "final"])
    for bad in ("nowhere", "last-reasoning:0", "999"):
        with pytest.raises(ThinklensError):
            resolve_positions(p, bad)


def test_patch_pair_shapes_and_heads(qwen_model, profile, toy_pairs4):
    pair = toy_pairs4[0]
    r = patch_pair(qwen_model, profile, pair, "answer_flip,final", heads=True, head_positions="final")
    assert np.array(r.nld).shape == (2, 3) and np.array(r.head_nld).shape == (1, 3, 4)
    assert r.tokens == [pair.tokens[pair.positions["answer_flip"]], "{"]
    # final position, layer 0: the token is identical in both runs, so the patch changes nothing
    assert abs(r.nld[1][0]) < 1e-5
    assert json.loads(json.dumps(r.to_dict())) == r.to_dict()  # strict JSON


def test_patch_pairs_resume_and_result(tmp_path, qwen_model, profile, toy_pairs4, padded_pair):
    from dataclasses import replace

    bad = replace(padded_pair, id="bad", spans={**padded_pair.spans, "reasoning": [0, 1]})
    pairs = [*toy_pairs4[:2], bad]
    res = patch_pairs(qwen_model, profile, pairs, tmp_path, positions="last-reasoning:4", progress=False)
    assert res.pair_ids == [p.id for p in toy_pairs4[:2]]  # the bad pair (too-short reasoning grid) is reported
    err = [json.loads(line) for line in (tmp_path / "errors.jsonl").read_text().splitlines()]
    assert err == [{"id": "bad", "error": "pair bad: the reasoning has 1 tokens, fewer than 'last-reasoning:4'"}]
    n_lines = (tmp_path / "pairs.jsonl").read_text().count("\n")
    again = patch_pairs(qwen_model, profile, pairs[:2], tmp_path, positions="last-reasoning:4", progress=False)
    assert (tmp_path / "pairs.jsonl").read_text().count("\n") == n_lines  # nothing recomputed
    loaded = PatchingResult.load(tmp_path)
    assert loaded.pair_ids == again.pair_ids and loaded.labels == ["r-4", "r-3", "r-2", "r-1"]
    assert np.allclose(loaded.nld, res.nld, equal_nan=True) and loaded.nld.shape == (2, 4, 3)
    for i, p in enumerate(toy_pairs4[:2]):  # "Final answer is N.\n": the first digit is r-(digits + 2)
        j = loaded.labels.index(f"r-{p.positions['think_close'] - p.positions['answer_flip']}")
        assert np.allclose(loaded.column("answer_flip")[i], res.nld[i, j])


def test_figures(tmp_path, qwen_model, profile, toy_pairs4):
    from thinklens.report.fig_patching import plot_layer_curves, plot_pair_heatmap

    patch_pairs(qwen_model, profile, toy_pairs4[:2], tmp_path, positions="answer_flip,final", progress=False)
    a = plot_layer_curves(tmp_path, tmp_path / "curves.png")
    b = plot_pair_heatmap(tmp_path, tmp_path / "heat.png", pair=toy_pairs4[1].id)
    assert a.stat().st_size > 1000 and b.stat().st_size > 1000
    with pytest.raises(ThinklensError):
        plot_layer_curves(tmp_path, tmp_path / "x.png", names=("think_close",))


def test_nan_survives_strict_json(tmp_path):
    from thinklens.patching.results import PairPatching

    nan = float("nan")
    item = PairPatching(pair_id="x", site="resid_pre", positions=[3], labels=["final"], tokens=["{"], layers=[0, 1],
                        patched=[[1.0, 1.0]], nld=[[nan, nan]], clean=1.0, corrupted=1.0, named={"final": 3})
    d = json.loads(json.dumps(item.to_dict(), allow_nan=False))
    assert d["nld"] == [[None, None]]
    res = PatchingResult.from_pairs([PairPatching.from_dict(d)])
    assert np.isnan(res.nld).all() and res.save(tmp_path) == tmp_path
    assert np.isnan(PatchingResult.load(tmp_path).column("final")).all()


def test_probe_labels_and_labels_as_specs(toy_pairs4, char_tok):
    from thinklens.patching.sweeps import probe_positions

    for p in toy_pairs4:
        probe = probe_positions(p)
        assert char_tok.decode([p.clean_ids[i] for i, _ in probe]) == f"Final answer is {p.clean_answer_text}.\n"
        labels = [lab for _, lab in probe]
        assert labels[:2] == ["probe+0", "probe+1"] and labels[-2:] == ["probe-2", "probe-1"]
        assert dict((lab, i) for i, lab in probe)["answer_flip"] == p.positions["answer_flip"]
        pos, labs = resolve_positions(p, "probe,think_close,answer-tail:2,last-reasoning:2")
        assert resolve_positions(p, labs) == (pos, labs)  # every label is a spec naming the same position
    with pytest.raises(ThinklensError, match="no position 'probe\\+99'"):
        resolve_positions(toy_pairs4[0], "probe+99")


def test_sweep_grid_keeps_the_labels_every_pair_has(toy_pairs4):
    from thinklens.patching.sweeps import default_positions, sweep_grid

    two_digit = [p for p in toy_pairs4 if len(p.clean_answer_text) == 2]
    assert two_digit and len(two_digit) < len(toy_pairs4)  # 1- and 2-digit answers: probes of different lengths
    assert "answer_flip+1" in sweep_grid(two_digit, "probe")
    grid = sweep_grid(toy_pairs4, "probe")
    assert "answer_flip+1" not in grid and grid[-3:] == ["answer_flip", "probe-2", "probe-1"]
    assert default_positions(toy_pairs4) == "last-reasoning:8,answer-tail:4"
    old = Pair.from_dict({**toy_pairs4[0].to_dict(), "spans": {"prompt": [0, 1], "reasoning": [1, 9],
                                                                "answer": [9, len(toy_pairs4[0])]}})
    with pytest.raises(ThinklensError, match="no probe span"):
        resolve_positions(old, "probe")


@pytest.mark.slow
def test_csv_pairs_sweep_on_the_paper_grid_by_default(tmp_path, qwen_model, profile, char_tok):
    from tests.patching.test_csv_pairs import ROW, two_responses
    from thinklens.patching.pairs import build_csv_pairs
    from thinklens.profiles import get_profile

    pairs = build_csv_pairs([ROW], two_responses(), char_tok, get_profile("deepseek-r1-distill-qwen"))[0]
    res = patch_pairs(qwen_model, profile, pairs, tmp_path, progress=False)
    probe = [f"probe+{i}" for i in range(len("Final answer is "))]
    assert res.labels == probe + ["answer_flip", "probe-2", "probe-1", "think_close", "a-3", "a-2", "a-1"]
    assert np.isfinite(res.column("answer_flip")).all() and np.isfinite(res.column("think_close")).all()
    assert abs(res.nld[0, res.labels.index("a-1"), 0]) < 1e-5  # identical token, layer 0: no effect
    c = pairs[0].positions["think_close"]
    assert pairs[0].corrupted_mask[c + 1] == 0  # the answer text is padded right after </think>
    spec = ["probe-1", "think_close", c + 1, "a-1"]
    fast, naive = (patch_pair(qwen_model, profile, pairs[0], spec, engine=e) for e in ("fast", "naive"))
    assert np.allclose(fast.patched, naive.patched, atol=1e-4)


def test_toy_restate_keeps_tiny_r1s_answer_line(char_tok):
    from thinklens.patching.pairs import toy_pairs

    drop = toy_pairs(4, 0, char_tok)[0]
    restate = toy_pairs(4, 0, char_tok, answer="restate")[0]
    for d, r in zip(drop, restate):
        c = d.positions["think_close"]
        assert r.clean_ids[:c + 1] == d.clean_ids[:c + 1] and r.positions["answer_flip"] == d.positions["answer_flip"]
        kept = char_tok.decode(r.clean_ids[c:])
        assert kept == f"</think>\n\nThe answer is \\boxed{{{r.clean_answer_text}}}.\n\nThe answer is \\boxed{{"
        assert char_tok.decode(d.clean_ids[c:]) == "</think>\n\nThe answer is \\boxed{"
        k = r.positions["answer_kept"]
        assert (r.clean_ids[k], r.corrupted_ids[k]) == (r.clean_answer, r.corrupted_answer)
        assert r.meta["answer"] == "restate" and d.meta["answer"] == "drop"

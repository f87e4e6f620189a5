"""Paired with/without evaluation: pairing, drop reasons, statistics, save/load, the figure, and the reference data."""
from __future__ import annotations

import json

import numpy as np
import pytest

from thinklens.empirical.evaluate import EvaluationResult, evaluate_files, evaluate_records
from thinklens.empirical.grading import GradeSettings, grade_record
from thinklens.errors import ThinklensError


def _rec(model, mode, pid, ok, **kw):
    return {"model": model, "reasoning": mode, "id": pid, "is_correct": ok, "is_correct_strict": ok,
            "finished": True, **kw}


def test_pairing_drops_and_counts():
    recs = []
    rng = np.random.default_rng(0)
    for i in range(40):
        recs.append(_rec("m", "with", str(i), bool(rng.random() < 0.9)))
        recs.append(_rec("m", "without", str(i), bool(rng.random() < 0.4)))
    recs += [_rec("m", "with", "x", True), _rec("m", "with", "u", True),
             _rec("m", "without", "u", True, finished=False), _rec("m", "with", "e", None, error="no answer"),
             _rec("m", "without", "e", True), _rec("m", "with", "0", False)]  # last one: duplicate
    res = evaluate_records(recs, seed=1, n_resamples=2000)
    e = res.models["m"]
    assert e.n == 40
    assert e.dropped == {"only_with": 1, "without_unfinished": 1, "with_ungraded": 1, "duplicate": 1}
    w = np.array([r["is_correct"] for r in recs[:80:2]])
    wo = np.array([r["is_correct"] for r in recs[1:80:2]])
    assert e.accuracy_with_reasoning == pytest.approx(w.mean())
    assert e.accuracy_without_reasoning == pytest.approx(wo.mean())
    assert e.n_with_only_correct == int(np.sum(w & ~wo)) and e.n_without_only_correct == int(np.sum(~w & wo))
    lo, hi = e.difference_ci95
    assert lo < e.difference < hi
    assert e.p_value < 0.01


def test_no_difference_gives_large_p_and_ci_covering_zero():
    recs = [_rec("m", mode, str(i), i % 2 == 0) for i in range(30) for mode in ("with", "without")]
    e = evaluate_records(recs).models["m"]
    assert e.difference == 0 and e.p_value == 1.0 and e.difference_ci95 == (0.0, 0.0)


def test_save_load_roundtrip_and_figure(tmp_path):
    recs = [_rec(m, mode, str(i), (i + (mode == "without") * 3) % 4 != 0) for m in ("a/x", "b/y")
            for i in range(20) for mode in ("with", "without")]
    res = evaluate_records(recs, n_resamples=500)
    res.save(tmp_path / "ev")
    back = EvaluationResult.load(tmp_path / "ev")
    assert back.to_dict() == res.to_dict()
    assert back.models["a/x"].ids == res.models["a/x"].ids
    assert np.array_equal(back.models["b/y"].correct_without, res.models["b/y"].correct_without)
    from thinklens.report.fig_empirical import plot_quality_impact

    fig = plot_quality_impact(tmp_path / "ev", tmp_path / "q.png")
    assert (tmp_path / "q.png").stat().st_size > 5000
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert any(t.startswith("n = 20") for t in texts)


def test_evaluate_files_errors(tmp_path):
    with pytest.raises(ThinklensError, match="no such graded file"):
        evaluate_files([tmp_path / "missing.jsonl"])
    p = tmp_path / "ungraded.jsonl"
    p.write_text(json.dumps({"id": 1, "model": "m", "reasoning": "with"}) + "\n")
    with pytest.raises(ThinklensError, match="thinklens grade"):
        evaluate_files([p])


def test_reference_with_reasoning_beats_without(reference_records, tmp_path):
    settings = GradeSettings(response_field="response")
    graded = tmp_path / "graded.jsonl"
    graded.write_text("".join(json.dumps(grade_record(r, settings)) + "\n" for r in reference_records))
    res = evaluate_files([graded], n_resamples=2000)
    assert len(res.models) == 2
    for model, e in res.models.items():
        print(model, e.summary())
        assert e.n == 100
        assert e.accuracy_with_reasoning > e.accuracy_without_reasoning
        assert e.difference_ci95[0] > 0
        assert e.p_value < 0.001
        assert e.strict_accuracy_with_reasoning > e.strict_accuracy_without_reasoning


def _graded_files(tmp_path, accs):
    """One graded file per (model, mode), ``accs[model] = (n_correct_with, n_correct_without)`` out of 40."""
    paths = []
    for model, (cw, cwo) in accs.items():
        for mode, k in (("with", cw), ("without", cwo)):
            p = tmp_path / f"{model.split('/')[-1]}-{mode}.jsonl"
            p.write_text("".join(json.dumps(_rec(model, mode, f"q{i}", i < k)) + "\n" for i in range(40)))
            paths.append(str(p))
    return paths


def test_several_models_in_one_table_and_figure_with_the_paper(tmp_path, capsys):
    """The paper's stage-1 table (full R1 through DeepSeek's API vs a distilled model) from one command."""
    from thinklens.cli.main import main
    from thinklens.report.fig_empirical import plot_quality_impact

    files = _graded_files(tmp_path, {"deepseek-reasoner": (38, 36), "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B":
                                     (36, 32), "my-own-model": (20, 10)})
    ref = tmp_path / "paper.json"
    ref.write_text(json.dumps({"math500_accuracy_percent": {
        "DeepSeek-R1-Distill-Qwen-1.5B": {"with_reasoning": 89.5, "without_reasoning": 81.0, "n": 400},
        "DeepSeek-R1 (full)": {"with_reasoning": 96.1, "without_reasoning": 90.6, "n": 490}, "note": "x"}}))
    assert main(["evaluate", *files, "--paper", str(ref), "--json", "--plot", str(tmp_path / "q.png"),
                 "--n-resamples", "200"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert set(out["models"]) == {"deepseek-reasoner", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "my-own-model"}
    full = out["paper"]["deepseek-reasoner"]
    assert full["paper_model"] == "DeepSeek-R1 (full)" and full["with_reasoning"] == 95.0
    assert full["without_reasoning"] == 90.0 and full["paper_difference"] == 5.5 and full["difference"] == 5.0
    assert out["paper"]["deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"]["paper_n"] == 400
    assert "my-own-model" not in out["paper"] and "no model named like 'my-own-model'" in captured.err
    assert (tmp_path / "q.png").stat().st_size > 5000
    assert main(["evaluate", *files, "--paper", str(ref), "--n-resamples", "200"]) == 0
    table = capsys.readouterr().out
    assert "paper (DeepSeek-R1 (full), n=490): 96.1 with, 90.6 without, difference +5.5; here +5.0" in table
    res = evaluate_files(files, n_resamples=200)
    from thinklens.empirical.evaluate import compare_with_paper, load_paper_table

    fig = plot_quality_impact(res, paper=compare_with_paper(res, load_paper_table(ref)))
    ticks = [ln for ln in fig.axes[0].lines if ln.get_gid() == "paper"]
    assert len(ticks) == 4  # a paper tick on both bars of the two reported models
    with pytest.raises(ThinklensError, match="no model"):
        bad = tmp_path / "bad.json"
        bad.write_text('{"math500_accuracy_percent": {"note": "x"}}')
        load_paper_table(bad)


def test_paper_reference_models_are_matched():
    from tests.conftest import reference_file
    from thinklens.empirical.evaluate import _model_key, load_paper_table

    table = load_paper_table(reference_file("paper_reference.json"))
    keys = {_model_key(k) for k in table}
    for served in ("deepseek-reasoner", "deepseek-ai/DeepSeek-R1", "deepseek-ai/DeepSeek-R1-Distill-Llama-8B",
                   "/models/DeepSeek-R1-Distill-Qwen-7B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"):
        assert _model_key(served) in keys, served

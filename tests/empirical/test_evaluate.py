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

"""report.html assembly from saved files: self-contained, every section present, verdicts follow the numbers."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from tests.report.conftest import N_HEADS, N_LAYERS, load_results, write_synthetic_run
from thinklens.errors import ThinklensError
from thinklens.pipeline import build_report
from thinklens.report.layer_view import MAX_PAIRS, layer_view_data
from thinklens.results import verdicts


def headline_html(results: dict) -> str:
    """The verdicts as the report's headline list renders them (claim in a span, then the detail)."""
    return "".join(f'<li><span class="{"ok" if v.ok else "no"}">{v.claim}</span> {v.detail}</li>'
                   for v in verdicts(results))


def test_report_is_self_contained_with_all_sections(synthetic_report):
    html = synthetic_report.read_text()
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html)
    for needle in ("Headline findings", "1. Quality impact", "2. Attention", "3. Activation patching",
                   "Layer by layer", "Token view", "Reproduce"):
        assert needle in html, needle
    n_img = len(re.findall(r'<img [^>]*src="data:image/png;base64,', html))
    assert n_img == 7  # accuracy, heatmap, layer profile, decomposition, cues, patching curves, patching heatmap
    assert html.count("Reproduce the data: <code>thinklens ") >= n_img


def test_results_json_headline_numbers(synthetic_run, synthetic_report):
    res = load_results(synthetic_run)
    ev = res["evaluation"]["tiny-r1"]
    assert ev["accuracy_with_reasoning"] > ev["accuracy_without_reasoning"] and ev["p_value"] < 1e-6
    assert {(t[0], t[1]) for t in res["heads"]["top"][:3]} == {(2, 5), (1, 3), (2, 1)}  # the planted heads
    pt = res["patching"]
    assert pt["n_pairs"] == 3 and pt["layers"] == list(range(N_LAYERS))
    np.testing.assert_allclose(pt["nld_answer_flip_token"][:3], 0.95)
    assert pt["nld_final_answer_token"][-1] == pytest.approx(1.0)


def test_rebuild_uses_stage_files_not_stale_results(tmp_path):
    """The report reads the stage files (as results.json is computed), never a stale results.json, and leaves
    results.json to the run that writes it."""
    run = write_synthetic_run(tmp_path / "run", seed=1)
    stale = json.dumps({"evaluation": {"stale-model": {}}, "timings": {"collect": 1.5}})
    (run / "results.json").write_text(stale)
    html = build_report(run).read_text()
    assert "stale-model" not in html and "Reasoning helps" in html
    assert (run / "results.json").read_text() == stale


def test_missing_stage_outputs_become_notes(tmp_path):
    run = write_synthetic_run(tmp_path / "run")
    for f in ("evaluation.json", "evaluation.npz"):
        (run / f).unlink()
    html = build_report(run).read_text()
    assert "Figure not available" in html and "Reasoning helps" not in html


def test_headline_verdicts_follow_the_numbers():
    weak = {"evaluation": {"m": {"n": 10, "accuracy_with_reasoning": 0.5, "accuracy_without_reasoning": 0.4,
                                 "difference_ci95": [-0.2, 0.4], "p_value": 0.6}},
            "heads": {"top": [[0, 1, 0.2]], "stability": {"per_head": [0.3]}, "top_k": 1},
            "patching": {"layers": [0, 1], "nld_answer_flip_token": [0.1, 0.3], "n_pairs": 4}}
    html = headline_html(weak)
    assert "does not clearly help" in html and "not clearly separated" in html and "does not flip" in html
    strong = {**weak, "patching": {"layers": [0, 1], "nld_answer_flip_token": [0.9, None], "n_pairs": 4}}
    assert "flips the answer</span>" in headline_html(strong) and "layer 0" in headline_html(strong)


def test_layer_view_data_shapes_and_strict_json():
    a2r = np.random.default_rng(0).uniform(size=(5, N_LAYERS, N_HEADS))  # [n_traces, n_layers, n_heads]
    a2r[0, 0, 0] = np.nan
    pairs = [{"id": f"p{i}", "tokens": ["a", "b"], "nld": np.array([[0.1, np.nan]] * N_LAYERS),
              "flip_index": 0, "final_index": 1} for i in range(MAX_PAIRS + 3)]
    data = layer_view_data({"a2r": a2r}, {"layers": list(range(N_LAYERS)), "pairs": pairs}, [[1, 2, 0.5]])
    json.dumps(data, allow_nan=False)
    assert data["n_layers"] == N_LAYERS and data["n_heads"] == N_HEADS
    assert len(data["a2r"]) == N_LAYERS and len(data["a2r"][0]) == N_HEADS
    assert len(data["patching"]["pairs"]) == MAX_PAIRS and data["patching"]["pairs"][0]["nld"][0][1] is None
    assert data["rfh"] == [[1, 2]]


def test_report_of_a_non_run_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ThinklensError, match="config.json"):
        build_report(tmp_path)

"""``thinklens heads retrieval | ablate | debug | tokens --window`` on tiny-r1's scored reference traces."""
from __future__ import annotations

import json

import pytest

from thinklens.cli.main import main

pytestmark = pytest.mark.slow


def _json_out(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_ablate_prints_the_three_accuracies(tiny_scored, tmp_path, capsys):
    scores, _, _ = tiny_scored
    assert main(["heads", "ablate", "--model", "tiny-r1", "--scores", str(scores), "--top", "3", "--random-draws",
                 "2", "--limit", "6", "--json", "--output", str(tmp_path / "abl")]) == 0
    out = _json_out(capsys)
    assert {"accuracy_base", "accuracy_rfh_ablated", "accuracy_random_ablated"} <= set(out)
    assert len(out["accuracy_random_ablated"]) == 2 and out["n"] == 6
    assert len(out["mcnemar_random_vs_rfh"]) == 2 and "logprob_delta_rfh" in out
    assert main(["heads", "ablate", "--model", "tiny-r1", "--scores", str(scores), "--top", "3", "--random-draws",
                 "2", "--limit", "6", "--output", str(tmp_path / "abl")]) == 0  # resumed, human-readable
    assert "accuracy: base" in capsys.readouterr().out


def test_retrieval_writes_scores_overlaps_and_reference(tiny_scored, tmp_path, capsys):
    from tests.conftest import REFERENCE

    scores, _, _ = tiny_scored
    out_file = tmp_path / "retrieval.json"
    args = ["heads", "retrieval", "--model", "tiny-r1", "--output", str(out_file), "--lengths", "100",
            "--depths", "1", "--n-needles", "3", "--scores", str(scores), "--top", "5"]
    assert main(args) == 0
    printed = _json_out(capsys)
    saved = json.loads(out_file.read_text())
    assert len(saved["scores"]) == 4 and len(saved["scores"][0]) == 8 and saved["settings"]["lengths"] == [100]
    assert saved["top"][0][:2] in ([1, 2], [1, 3], [1, 1])
    for fam in ("induction", "retrieval"):
        assert {"before", "after", "threshold", "n_above"} <= set(saved["overlaps"][fam])
    assert printed["overlaps"]["induction"]["after"]["k_reference"] == 0  # tiny-r1 has no induction head
    ref = REFERENCE / "paper_reference.json"
    if ref.exists():  # any model key works for the paper's own overlaps
        assert main(args + ["--compare", str(ref), "--compare-model", "DeepSeek-R1-Distill-Llama-8B"]) == 0
        saved = json.loads(out_file.read_text())
        assert saved["reference"]["paper"]["rfh_vs_retrieval"]["k_found"] == 10


def test_debug_and_tokens_window(tiny_scored, tmp_path, capsys):
    from thinklens.empirical.grading import grade_file

    scores, traces, _ = tiny_scored
    grade_file(str(traces), str(tmp_path / "graded.jsonl"), progress=False)
    assert main(["heads", "debug", "--model", "tiny-r1", "--scores", str(scores), "--graded",
                 str(tmp_path / "graded.jsonl"), "--output", str(tmp_path / "dbg"), "--top", "3", "--json"]) == 0
    out = _json_out(capsys)
    assert out["summary"]["n_traces"] == 16 and out["summary"]["n_incorrect"] == 0
    assert (tmp_path / "dbg" / "debug.json").exists() and (tmp_path / "dbg" / "debug.npz").exists()
    assert main(["heads", "tokens", str(scores), "--top", "3", "--window", "3", "--output",
                 str(tmp_path / "view.html")]) == 0
    out = _json_out(capsys)
    assert out["cue_control"]["window"] == 3 and out["cue_stats"]["n_traces"] == 16
    assert {r["control"] for r in out["cue_control"]["rows"]} == {"window", "sentence_start"}
    assert (scores / "cue_control.json").exists()

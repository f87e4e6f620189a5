"""Head ranking, bootstrap stability, reference comparison, and the `thinklens heads` / `attention` CLIs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from thinklens.attention.heads import compare_heads, load_reference_heads, rank_heads
from thinklens.attention.segments import SCORE_NAMES, HeadScores
from thinklens.cli.main import main
from thinklens.errors import ThinklensError

REFERENCE = Path(__file__).parents[2] / ".." / "shared" / "reference" / "paper_reference.json"


def _scores(n=20, L=3, H=4, planted=((2, 1), (0, 3)), seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.uniform(0, 0.2, (n, L, H)).astype(np.float32)
    for k, (layer, head) in enumerate(planted):
        arr[:, layer, head] += 0.6 - 0.2 * k
    scores = {name: arr.copy() for name in SCORE_NAMES}
    return HeadScores([f"p{i}" for i in range(n)], scores, np.full(n, 100), np.full(n, 5), np.full(n, 80), "toy")


def test_rank_finds_planted_heads_and_is_stable():
    r = rank_heads(_scores(), "a2r", top_k=2, n_bootstrap=200, seed=0)
    assert r.pairs() == [(2, 1), (0, 3)]
    assert all(h.stability == 1.0 for h in r.heads)
    assert r.heads[0].rank_ci == (1, 1)
    js = r.to_json()
    assert js["heads"][0][:2] == [2, 1] and js["top_k"] == 2 and js["n_traces"] == 20


def test_noise_heads_are_unstable():
    hs = _scores(planted=())
    r = rank_heads(hs, "a2r", top_k=3, n_bootstrap=200)
    assert min(h.stability for h in r.heads) < 0.9  # no planted signal: membership in the top 3 wavers


def test_compare_heads_hypergeometric():
    c = compare_heads([(0, 0), (1, 1)], [(0, 0), (2, 2)], n_total=100)
    assert c["overlap"] == 1 and c["jaccard"] == pytest.approx(1 / 3)
    assert c["p_value"] == pytest.approx(1 - (98 / 100) * (97 / 99))
    assert compare_heads([(0, 0)], [(1, 1)], 10)["p_value"] == 1.0


def test_reference_file_parsing(tmp_path):
    if not REFERENCE.exists():
        pytest.skip("shared reference data absent")
    name, heads = load_reference_heads(str(REFERENCE), "DeepSeek-R1-Distill-Qwen-1.5B")
    assert name.endswith("Qwen-1.5B") and heads[0] == (16, 2) and len(heads) == 10
    _, ind = load_reference_heads(str(REFERENCE), "DeepSeek-R1-Distill-Qwen-1.5B", key="induction_heads_top10")
    assert ind[0] == (2, 3)
    with pytest.raises(ThinklensError, match="--compare-model"):
        load_reference_heads(str(REFERENCE))


def test_cli_rank_json_compare_plots(tmp_path, capsys):
    _scores().save(tmp_path)
    ref = tmp_path / "ref.json"
    ref.write_text(json.dumps([[2, 1], [1, 1]]))
    rc = main(["heads", "rank", str(tmp_path / "head_scores.npz"), "--top", "2", "--json", "--bootstrap", "50",
               "--compare", str(ref), "--plots", str(tmp_path / "plots")])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert [h[:2] for h in out["heads"]] == [[2, 1], [0, 3]]
    assert out["compare"]["overlap"] == 1
    assert all(Path(p).stat().st_size > 1000 for p in out["plots"])
    assert main(["heads", "rank", str(tmp_path), "--top", "2", "--bootstrap", "20", "--compare", str(ref)]) == 0
    text = capsys.readouterr().out
    assert "overlap with" in text and text.splitlines()[2].split()[:3] == ["1", "2", "1"]
    assert main(["heads", "rank", str(tmp_path / "nothing.npz")]) == 2
    assert "no such scores file" in capsys.readouterr().err


def test_cli_attention_tokens_induction(qwen2_model, toy_traces, tmp_path, capsys, monkeypatch):
    """End to end through the CLI with the random Qwen2 model saved as a local model directory."""
    from thinklens.toy.tokenizer import build_tokenizer

    model_dir = tmp_path / "model"
    qwen2_model.save_pretrained(model_dir)
    build_tokenizer().save_pretrained(model_dir)
    path, probs = toy_traces
    out = tmp_path / "att"
    assert main(["attention", "--model", str(model_dir), "--traces", str(path), "--output", str(out),
                 "--token-view", "3", "--device", "cpu"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["n_traces"] == len(probs) and summary["n_skipped"] == 3
    assert main(["heads", "tokens", str(out), "--heads", "1:0", "1:2", "--cues", "Wait,Final"]) == 0
    res = json.loads(capsys.readouterr().out)
    html = Path(res["html"]).read_text()
    assert "<script src" not in html and "title=" in html and "&lt;think&gt;" not in html.split("<body>")[0]
    assert res["cue_stats"]["n_cue_tokens"] >= 5 * 3  # "Final" (5 chars) in each of the 3 stored traces
    assert res["cue_stats"]["n_traces"] == 3
    assert res["cue_stats"]["heads"] == [[1, 0], [1, 2]]
    assert main(["heads", "induction", "--model", str(model_dir), "--output", str(tmp_path / "ind.json"),
                 "--seq-len", "16", "--n-seqs", "2"]) == 0
    ind = json.loads((tmp_path / "ind.json").read_text())
    assert np.asarray(ind["scores"]).shape == (2, 4)
    _, ref = load_reference_heads(str(tmp_path / "ind.json"))
    assert ref == [tuple(t[:2]) for t in ind["top"]]
    assert main(["heads", "tokens", str(out), "--heads", "9:9"]) == 2

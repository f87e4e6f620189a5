import json

import pytest

from thinklens.cli.main import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, qwen_model, char_tok):
    d = tmp_path_factory.mktemp("model")
    qwen_model.save_pretrained(d)
    char_tok.save_pretrained(d)
    return d


def _json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def test_pairs_toy_and_patch(tmp_path, model_dir, capsys):
    pairs = tmp_path / "pairs.jsonl"
    assert main(["pairs", "toy", "--n", "2", "--seed", "1", "--output", str(pairs)]) == 0
    assert _json_lines(capsys.readouterr().out)[-1]["pairs"] == 2
    out = tmp_path / "out"
    args = ["patch", "--model", str(model_dir), "--pairs", str(pairs), "--output", str(out), "--positions",
            "answer_flip,final", "--sites", "resid_pre,attn_out", "--limit", "2", "--device", "cpu"]
    assert main(args) == 0
    summary = _json_lines(capsys.readouterr().out)[-1]
    assert summary["pairs"] == 2 and set(summary["sites"]) == {"resid_pre", "attn_out"}
    assert len(summary["sites"]["resid_pre"]["mean_nld_final"]) == 3
    assert (out / "resid_pre" / "result.npz").exists() and (out / "attn_out" / "pairs.jsonl").exists()
    before = (out / "resid_pre" / "pairs.jsonl").read_text()
    assert main(args) == 0  # resume: nothing is recomputed
    assert (out / "resid_pre" / "pairs.jsonl").read_text() == before


def test_cli_user_errors(tmp_path, model_dir, capsys):
    assert main(["patch", "--model", str(model_dir), "--pairs", str(tmp_path / "none.jsonl"), "--output",
                 str(tmp_path)]) == 2
    assert "no such pair file" in capsys.readouterr().err
    assert main(["pairs", "prepare", "--csv", str(tmp_path / "none.csv"), "--output", str(tmp_path / "q")]) == 2


def test_pairs_build_keeps_the_answer_by_default(tmp_path, model_dir, capsys):
    import csv

    from tests.patching.test_csv_pairs import ROW, two_responses
    from thinklens.jsonl import JsonlWriter, read_records

    with (tmp_path / "pairs.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(ROW))
        w.writeheader()
        w.writerow(ROW)
        w.writerow({**ROW, "case_id": "6"})  # no responses: rejected with its reason
    with JsonlWriter(tmp_path / "responses.jsonl") as w:
        w.write_all(list(two_responses().values()))
    lengths = {}
    for answer in ("keep", "drop"):
        out = tmp_path / f"{answer}.jsonl"
        args = ["pairs", "build", "--model", str(model_dir), "--csv", str(tmp_path / "pairs.csv"), "--responses",
                str(tmp_path / "responses.jsonl"), "--output", str(out)] + (["--answer", "drop"] * (answer == "drop"))
        assert main(args) == 0
        summary = _json_lines(capsys.readouterr().out)[-1]
        assert (summary["pairs"], summary["rejected"], summary["answer"]) == (1, 1, answer)
        [pair] = list(read_records(out))
        assert pair["meta"]["answer"] == answer
        lengths[answer] = len(pair["clean_ids"])
        assert [r["id"] for r in read_records(tmp_path / f"{answer}.rejects.jsonl")] == ["6"]
    assert lengths["keep"] > lengths["drop"]

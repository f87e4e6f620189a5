"""Hostile pair files: an out-of-vocabulary token id or a missing field is skipped with a one-line error in our
words, and every other pair still produces the result."""
from __future__ import annotations

import json

import pytest

from thinklens.cli.main import main
from thinklens.errors import ThinklensError
from thinklens.patching.align import Pair
from thinklens.patching.pairs import load_pairs, save_pairs, toy_pairs, toy_tokenizer


@pytest.fixture(scope="module")
def records():
    return [p.to_dict() for p in toy_pairs(3, 0, toy_tokenizer())[0]]


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_an_out_of_vocabulary_pair_is_skipped_and_the_others_produce_the_result(tmp_path, records, capsys):
    bad = [dict(r) for r in records]
    bad[1] = {**bad[1], "clean_ids": [*bad[1]["clean_ids"][:3], 10_000_000, *bad[1]["clean_ids"][4:]]}
    pairs = _write(tmp_path / "p.jsonl", bad)
    out = tmp_path / "out"
    assert main(["patch", "--model", "tiny-r1", "--pairs", str(pairs), "--output", str(out), "--layers", "0",
                 "--positions", "final", "--quiet"]) == 0
    assert "Traceback" not in capsys.readouterr().err
    errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["id"] for e in errors] == [records[1]["id"]]
    assert "clean_ids[3] = 10000000 is outside the vocabulary" in errors[0]["error"]
    meta = json.loads((out / "result.json").read_text())
    assert meta["pair_ids"] == [records[0]["id"], records[2]["id"]]


def test_a_missing_field_is_named_in_our_words(tmp_path, records):
    bad = [dict(r) for r in records]
    del bad[2]["corrupted_ids"]
    errors: list = []
    pairs = load_pairs(_write(tmp_path / "p.jsonl", bad), errors)
    assert [p.id for p in pairs] == [records[0]["id"], records[1]["id"]]
    assert errors == [{"line": 3, "error": f"pair record {records[2]['id']!r}: missing field corrupted_ids"}]


@pytest.mark.parametrize("field,value,needle", [
    ("clean_mask", "x", "clean_mask must be a list"),
    ("clean_answer", "7", "clean_answer must be an integer"),
    ("clean_answer", -1, "clean_answer = -1 is outside"),
    ("positions", {"final": 10_000}, "position final = 10000 is outside"),
    ("spans", {"prompt": [5, 2], "reasoning": [0, 1], "answer": [1, 2]}, "span prompt = [5, 2] is not an ordered"),
    ("corrupted_ids", [], "must be non-empty and of equal length"),
    ("id", None, "id must be a string"),
])
def test_wrong_values_are_refused_with_the_pair_named(records, field, value, needle):
    with pytest.raises(ThinklensError, match="pair") as info:
        Pair.from_dict({**records[0], field: value})
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_duplicate_pair_id_is_skipped(tmp_path, records):
    errors: list = []
    pairs = load_pairs(_write(tmp_path / "p.jsonl", [records[0], records[1], records[0]]), errors)
    assert len(pairs) == 2 and "duplicate pair id" in errors[0]["error"] and errors[0]["line"] == 3


def test_saved_pairs_still_load(tmp_path):
    pairs = toy_pairs(2, 0, toy_tokenizer())[0]
    save_pairs(tmp_path / "p.jsonl", pairs)
    assert [p.to_dict() for p in load_pairs(tmp_path / "p.jsonl")] == [p.to_dict() for p in pairs]

"""The CLI: --version, --help everywhere, and `traces inspect` on good, bad and real files."""
from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

import thinklens
from tests.conftest import BOS, EOS, reference_file
from thinklens.cli.main import build_parser, main


def _subcommand_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name)
                yield from _subcommand_paths(sub, (*prefix, name))


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and thinklens.__version__ in capsys.readouterr().out


def test_help_on_every_subcommand(capsys):
    paths = list(_subcommand_paths(build_parser()))
    assert ("traces", "inspect") in paths
    for path in paths:
        with pytest.raises(SystemExit) as e:
            main([*path, "--help"])
        assert e.value.code == 0, path
        assert "usage: thinklens" in capsys.readouterr().out


def test_console_script_is_installed():
    out = subprocess.run([sys.executable, "-m", "thinklens.cli.main", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "traces" in out.stdout


@pytest.fixture()
def tokenizer_dir(tmp_path, char_tokenizer):
    d = tmp_path / "tok"
    char_tokenizer.save_pretrained(d)
    return d


def _inspect(args, capsys):
    code = main(["traces", "inspect", *map(str, args)])
    return code, [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_inspect_good_broken_and_empty_records(tmp_path, tokenizer_dir, capsys):
    f = tmp_path / "mixed.jsonl"
    good = {"id": "good", "text": f"{BOS}Q<think>\nr\n</think>\n\nA{EOS}"}
    f.write_text(json.dumps(good) + "\n{not json\n" + json.dumps({"id": "empty", "text": ""}) + "\n")
    code, rows = _inspect([f, "--tokenizer", tokenizer_dir, "--profile", "deepseek-r1-distill-qwen"], capsys)
    assert code == 0 and len(rows) == 3
    assert rows[0]["id"] == "good" and rows[0]["think_start"] == 2 and rows[0]["think_end"] == 6
    assert rows[0]["n_reasoning_tokens"] == 3 and rows[0]["n_answer_tokens"] == 3 and rows[0]["n_think_close"] == 1
    assert rows[1]["line"] == 2 and "invalid JSON" in rows[1]["error"]
    assert rows[2]["id"] == "empty" and rows[2]["error"] == "empty text"
    code, rows = _inspect([f, "--tokenizer", tokenizer_dir, "--strict"], capsys)
    assert code == 1 and len(rows) == 2


def test_inspect_missing_file_and_tokenizer(tmp_path, tokenizer_dir, capsys):
    assert main(["traces", "inspect", str(tmp_path / "nope.jsonl"), "--tokenizer", str(tokenizer_dir)]) == 2
    assert "no such trace file" in capsys.readouterr().err
    assert main(["traces", "inspect", str(tmp_path / "x.jsonl"), "--tokenizer", "./missing-dir"]) == 2
    assert "no such directory" in capsys.readouterr().err


@pytest.mark.slow
def test_inspect_reference_traces(capsys):
    traces = reference_file("r1_math500_traces.jsonl")
    tok = reference_file("deepseek-r1-distill-qwen-tokenizer")
    code, rows = _inspect([traces, "--tokenizer", tok, "--text-field", "response"], capsys)
    assert code == 0 and len(rows) == 400 and not any("error" in r for r in rows)
    records = [json.loads(line) for line in traces.read_text(encoding="utf-8").splitlines()]
    from thinklens.models import load_tokenizer

    tokenizer = load_tokenizer(tok)
    for rec, row in zip(records, rows):
        ids = tokenizer(rec["response"], add_special_tokens=False)["input_ids"]
        assert row["id"] == rec["unique_id"] and row["n_tokens"] == len(ids)
        assert ids[row["think_start"]] == 151648 and ids[row["think_end"]] == 151649
        assert row["n_reasoning_tokens"] == row["think_end"] - row["think_start"] - 1

"""The indexing convention on the 400 real DeepSeek-R1-Distill traces with the real tokenizer (paper's convention:
positions in ``tokenizer(text, add_special_tokens=False)``; think_start/think_end = the <think>/</think> tokens)."""
from __future__ import annotations

import json

import pytest

from tests.conftest import reference_file
from thinklens.models import load_tokenizer
from thinklens.traces import Trace


@pytest.fixture(scope="module")
def r1_tokenizer():
    return load_tokenizer(reference_file("deepseek-r1-distill-qwen-tokenizer"))


@pytest.fixture(scope="module")
def records():
    path = reference_file("r1_math500_traces.jsonl")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_delimiters_are_single_tokens(r1_tokenizer):
    assert r1_tokenizer("<think>", add_special_tokens=False)["input_ids"] == [151648]
    assert r1_tokenizer("</think>", add_special_tokens=False)["input_ids"] == [151649]
    assert r1_tokenizer.convert_tokens_to_ids("<｜begin▁of▁sentence｜>") == 151646


@pytest.mark.slow
def test_all_reference_traces_segment_with_the_paper_convention(r1_tokenizer, records):
    assert len(records) == 400
    for rec in records:
        text = rec["response"]
        ids = r1_tokenizer(text, add_special_tokens=False)["input_ids"]
        trace = Trace.from_text(text, r1_tokenizer)
        assert trace.ids == ids, rec["unique_id"]  # no second BOS, same tokenization
        assert ids[0] == 151646 and ids.count(151646) == 1
        assert trace.think_start == ids.index(151648)
        assert trace.think_end == ids.index(151649)
        assert trace.finished and trace.n_think_close == ids.count(151649)
        assert trace.reasoning.start == trace.think_start + 1 and trace.reasoning.end == trace.think_end
        assert trace.text[trace.offsets[trace.think_end][0]:].startswith("</think>")
        if rec["reasoning"] == "without":
            assert trace.span_text(trace.reasoning) == "\nOkay, I think I have finished thinking.\n"
        assert r1_tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False) == text
        assert "".join(trace.token_strings()) == text

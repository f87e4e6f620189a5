"""The trace model's segmentation, on every edge case of the foundation issue."""
from __future__ import annotations

import pytest

from tests.conftest import BOS, EOS
from thinklens.errors import TraceError
from thinklens.profiles import get_profile
from thinklens.traces import SEGMENTS, Span, Trace

R1 = get_profile("deepseek-r1-distill-qwen")
PROMPT = f"{BOS}<｜User｜>What is 2+3?<｜Assistant｜><think>\n"


def _tokens(trace: Trace, span: Span | None) -> str:
    return trace.span_text(span)


def test_full_text_segments_and_offsets(char_tokenizer):
    text = PROMPT + "2+3=5\n</think>\n\nThe answer is 5." + EOS
    t = Trace.from_text(text, char_tokenizer, R1)
    assert t.bos == Span(0, 1)
    assert t.ids[t.think_start] == char_tokenizer.convert_tokens_to_ids("<think>")
    assert t.ids[t.think_end] == char_tokenizer.convert_tokens_to_ids("</think>")
    assert _tokens(t, t.prompt).endswith("What is 2+3?<｜Assistant｜>")
    assert _tokens(t, t.reasoning) == "\n2+3=5\n"
    assert _tokens(t, t.answer) == "\n\nThe answer is 5."
    assert t.eos == Span(len(t) - 1, len(t))
    assert t.finished and t.n_think_close == 1 and t.flags == ()
    # spans tile the sequence without gaps or overlaps
    spans = [s for s in t.segments().values() if s is not None]
    assert sum(len(s) for s in spans) == len(t)
    labels = t.segment_labels()
    assert (labels >= 0).all() and SEGMENTS[labels[t.think_end]] == "think_close"
    # every token maps back to its text
    assert "".join(t.token_strings()) == t.text


def test_bos_added_once_never_twice(char_tokenizer):
    body = "<｜User｜>Q<｜Assistant｜><think>\nr\n</think>\n\nA"
    without = Trace.from_text(body, char_tokenizer, R1)
    with_bos = Trace.from_text(BOS + body, char_tokenizer, R1)
    assert without.ids == with_bos.ids and without.text == with_bos.text
    assert with_bos.ids.count(char_tokenizer.bos_token_id) == 1
    no_add = Trace.from_text(body, char_tokenizer, R1.replace(add_bos=False))
    assert no_add.bos is None and len(no_add) == len(with_bos) - 1


def test_prompt_completion_with_template_ending_in_think(char_tokenizer):
    t = Trace.from_prompt_completion(PROMPT, "ok\n</think>\n\nfive" + EOS, char_tokenizer, R1)
    assert _tokens(t, t.think_open) == "<think>"
    assert _tokens(t, t.reasoning) == "\nok\n"
    assert _tokens(t, t.answer) == "\n\nfive"


def test_completion_with_think_open_inside(char_tokenizer):
    prompt = f"{BOS}<｜User｜>Q<｜Assistant｜>"
    t = Trace.from_prompt_completion(prompt, "<think>\nr\n</think>A", char_tokenizer, R1)
    assert _tokens(t, t.prompt) == "<｜User｜>Q<｜Assistant｜>"
    assert _tokens(t, t.answer) == "A"


def test_completion_without_think_open_uses_prompt_boundary(char_tokenizer):
    prompt = f"{BOS}<｜User｜>Q<｜Assistant｜>"
    t = Trace.from_prompt_completion(prompt, "reasoning\n</think>A", char_tokenizer, R1)
    assert "no_think_open" in t.flags and t.think_open is None
    assert _tokens(t, t.reasoning) == "reasoning\n" and _tokens(t, t.answer) == "A"
    with pytest.raises(TraceError, match="reasoning start is unknown"):
        Trace.from_text(prompt + "reasoning\n</think>A", char_tokenizer, R1)


def test_delimiters_split_into_several_tokens(split_tokenizer):
    text = PROMPT.replace("<｜User｜>", "").replace("<｜Assistant｜>", "") + "r\n</think>\n\nA" + EOS
    t = Trace.from_text(text, split_tokenizer, R1)
    assert len(t.think_open) == len("<think>") and len(t.think_close) == len("</think>")
    assert _tokens(t, t.think_open) == "<think>" and _tokens(t, t.think_close) == "</think>"
    assert _tokens(t, t.reasoning) == "\nr\n" and "delimiter_by_offsets" not in t.flags


def test_delimiter_merged_with_neighbour_falls_back_to_offsets(merging_tokenizer):
    # this tokenizer merges "\n<", so "</think>" after a newline is no standalone token sequence
    t = Trace.from_text(f"{BOS}Q<think>\nr\n</think>\n\nA", merging_tokenizer, R1)
    assert "delimiter_by_offsets" in t.flags
    assert "</think>" in _tokens(t, t.think_close)
    assert _tokens(t, t.answer) == "\n\nA"


def test_unfinished_reasoning_has_no_answer(char_tokenizer):
    t = Trace.from_text(PROMPT + "2+3=5 and then", char_tokenizer, R1)
    assert not t.finished and t.answer is None and t.think_end is None
    assert "unfinished" in t.flags and _tokens(t, t.reasoning) == "\n2+3=5 and then"
    assert t.summary()["n_answer_tokens"] is None


def test_several_think_close_first_one_ends_reasoning(char_tokenizer):
    t = Trace.from_text(PROMPT + "r\n</think>\n\nA </think> B" + EOS, char_tokenizer, R1)
    assert t.n_think_close == 2 and "multiple_think_close" in t.flags
    assert _tokens(t, t.reasoning) == "\nr\n"
    assert _tokens(t, t.answer) == "\n\nA </think> B"


@pytest.mark.parametrize("reasoning", ["", "\n\n"])
def test_empty_reasoning(char_tokenizer, reasoning):
    t = Trace.from_text(PROMPT[: -1] + reasoning + "</think>\n\nA", char_tokenizer, R1)
    assert "empty_reasoning" in t.flags and t.finished
    assert len(t.reasoning) == len(reasoning)


def test_no_reasoning_mode_is_ordinary_reasoning(char_tokenizer):
    t = Trace.from_prompt_completion(PROMPT, R1.no_reasoning_completion()[1:] + "\n\nA", char_tokenizer, R1)
    assert _tokens(t, t.reasoning) == "\nOkay, I think I have finished thinking.\n"
    assert "empty_reasoning" not in t.flags


@pytest.mark.parametrize("text", ["", "   ", "no delimiters at all"])
def test_bad_texts_raise_trace_error(char_tokenizer, text):
    with pytest.raises(TraceError):
        Trace.from_text(text, char_tokenizer, R1)


def test_from_ids_round_trip(char_tokenizer):
    a = Trace.from_text(PROMPT + "r\n</think>\n\nA" + EOS, char_tokenizer, R1)
    b = Trace.from_ids(a.ids, char_tokenizer, R1)
    assert b.ids == a.ids and b.offsets == a.offsets and b.segments() == a.segments()
    assert Trace.from_dict(a.to_dict()).segments() == a.segments()


def test_from_record_fields(char_tokenizer):
    rec = {"id": "x", "prompt": PROMPT, "completion": "r\n</think>A"}
    assert Trace.from_record(rec, char_tokenizer, R1).finished
    assert Trace.from_record({"text": PROMPT + "r\n</think>A"}, char_tokenizer, R1).finished
    with pytest.raises(TraceError, match="no field 'response'"):
        Trace.from_record(rec, char_tokenizer, R1, text_field="response")
    with pytest.raises(TraceError, match="not a string"):
        Trace.from_record({"response": 3}, char_tokenizer, R1, text_field="response")
    with pytest.raises(TraceError, match="neither"):
        Trace.from_record({"id": 1}, char_tokenizer, R1)


def test_tokens_in_chars_maps_text_to_tokens(char_tokenizer):
    t = Trace.from_text(PROMPT + "Wait, 2+3=5\n</think>A", char_tokenizer, R1)
    a = t.text.index("Wait")
    span = t.tokens_in_chars(a, a + 4)
    assert t.span_text(span) == "Wait" and span.start > t.think_start


def test_from_ids_that_do_not_re_encode_flags_approximate_offsets(merging_tokenizer):
    # "\n" and "<" as separate ids decode to "\n<", which this tokenizer re-encodes as one merged token
    tok = merging_tokenizer
    ids = tok(f"{BOS}Q<think>\nr", add_special_tokens=False)["input_ids"] + tok.convert_tokens_to_ids(["\n", "<"])
    ids += tok("/think>A", add_special_tokens=False)["input_ids"]
    t = Trace.from_ids(ids, tok, R1)
    assert "approximate_offsets" in t.flags and len(t.offsets) == len(ids) and t.finished
    assert t.span_text(t.answer) == "A"

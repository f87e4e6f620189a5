"""The character-level R1 tokenizer: shipped files, one token per character, atomic special tokens, template."""
from __future__ import annotations

import string

import pytest

from thinklens.toy import full_text, generate_problems, prompt_text
from thinklens.toy.tokenizer import build_tokenizer

SPECIALS = ["<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>", "<｜User｜>", "<｜Assistant｜>", "<think>", "</think>"]


@pytest.fixture(params=["built", "shipped"])
def tok(request):
    return build_tokenizer() if request.param == "built" else request.getfixturevalue("tiny_r1_tokenizer")


def test_one_token_per_char_with_offsets(tok):
    text = string.printable.replace("\t", "").replace("\r", "").replace("\x0b", "").replace("\x0c", "")
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert len(enc["input_ids"]) == len(text)
    assert enc["offset_mapping"] == [(i, i + 1) for i in range(len(text))]
    assert len(set(enc["input_ids"])) == len(set(text))
    assert tok.decode(enc["input_ids"]) == text
    for d in "0123456789":
        assert len(tok(d, add_special_tokens=False)["input_ids"]) == 1


def test_special_tokens_are_single(tok):
    for s in SPECIALS:
        ids = tok(s, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1, s
    assert tok.bos_token == SPECIALS[0] and tok.eos_token == SPECIALS[1] and tok.pad_token == SPECIALS[1]
    assert tok.pad_token_id == tok.eos_token_id != tok.bos_token_id


def test_add_special_tokens_prepends_bos_like_r1(tok):
    assert tok("12+3")["input_ids"] == [tok.bos_token_id, *tok("12+3", add_special_tokens=False)["input_ids"]]


def test_roundtrip_and_offsets_on_traces(tok):
    for p in generate_problems(20, seed=0):
        for text in (full_text(p, instruction=True), full_text(p, reasoning=False)):
            enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
            assert tok.decode(enc["input_ids"], skip_special_tokens=False) == text
            assert "".join(text[s:e] for s, e in enc["offset_mapping"]) == text
            n_special = sum(text.count(s) for s in SPECIALS)
            assert len(enc["input_ids"]) == len(text) - sum(len(s) * text.count(s) for s in SPECIALS) + n_special


def test_chat_template_matches_r1(tok):
    p = generate_problems(1, seed=0)[0]
    rendered = tok.apply_chat_template([{"role": "user", "content": p.question}], tokenize=False,
                                       add_generation_prompt=True)
    assert rendered == prompt_text(p)
    assert rendered.endswith("<｜Assistant｜><think>\n")


def test_shipped_files():
    import json

    from thinklens.toy import TINY_R1_DIR

    cfg = json.loads((TINY_R1_DIR / "tokenizer_config.json").read_text())
    assert "chat_template" in cfg
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json", "README.md"):
        assert (TINY_R1_DIR / name).is_file(), name
    total = sum(f.stat().st_size for f in TINY_R1_DIR.iterdir())
    assert total <= 20 * 2**20

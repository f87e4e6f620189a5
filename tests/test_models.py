"""load_model: local directories, dtype/device defaults, and a clear error for unreachable hub ids."""
from __future__ import annotations

import pytest
import torch

from tests.conftest import make_char_tokenizer
from thinklens.errors import ModelLoadError
from thinklens.models import default_dtype, load_model, load_tokenizer


@pytest.fixture(scope="module")
def local_model_dir(tmp_path_factory):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    tok = make_char_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id)
    d = tmp_path_factory.mktemp("DeepSeek-R1-Distill-Qwen-test")
    Qwen2ForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_load_local_directory(local_model_dir):
    model, tokenizer, profile = load_model(local_model_dir)
    assert not model.training and next(model.parameters()).dtype == torch.float32
    assert profile.name == "deepseek-r1-distill-qwen"  # chosen from the directory name
    assert model.config._attn_implementation == "sdpa"
    assert load_tokenizer(local_model_dir).bos_token == tokenizer.bos_token
    m16, _, _ = load_model(local_model_dir, dtype="bf16")
    assert next(m16.parameters()).dtype == torch.bfloat16


def test_dtype_defaults():
    assert default_dtype("cpu") == torch.float32
    assert default_dtype("mps") == torch.float16


@pytest.mark.parametrize("bad", ["./no/such/dir", "/definitely/not/here"])
def test_missing_directory_is_a_clear_error(bad):
    with pytest.raises(ModelLoadError, match="no such"):
        load_model(bad)


def test_unreachable_hub_id_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(ModelLoadError, match="--model DIR"):
        load_model("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")
    with pytest.raises(ModelLoadError, match="hub"):
        load_tokenizer("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")


def test_bad_dtype(local_model_dir):
    with pytest.raises(ModelLoadError, match="unknown dtype"):
        load_model(local_model_dir, dtype="fp8-ish")

"""A random-initialized tiny Qwen2 with tiny-r1's character tokenizer: exercises the pipeline's orchestration
(files, resume, results.json) in seconds, independent of the trained weights."""
from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def random_r1_dir(tmp_path_factory) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from thinklens.toy.tokenizer import build_tokenizer

    torch.manual_seed(0)
    torch.set_num_threads(2)
    tok = build_tokenizer()
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=64, max_position_embeddings=512,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    d = tmp_path_factory.mktemp("models") / "tiny-r1-random"  # the name selects the tiny-r1 profile
    Qwen2ForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    return d

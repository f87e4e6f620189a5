"""Fixtures for stage-1 tests: a random-initialized tiny Qwen2 with tiny-r1's character tokenizer, saved to disk so
that ``thinklens collect --model DIR`` subprocesses can load it, and the reference data directory (skip if absent)."""
from __future__ import annotations

from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference"
REFERENCE_TRACES = REFERENCE / "r1_math500_traces.jsonl"


def tiny_random_model_dir(path: Path) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from thinklens.toy.tokenizer import build_tokenizer

    torch.manual_seed(0)
    tok = build_tokenizer()
    config = Qwen2Config(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=512,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():  # make EOS likely enough that some sequences stop early, others run to max_new_tokens
        model.lm_head.weight.mul_(3.0)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return tiny_random_model_dir(tmp_path_factory.mktemp("tiny-random-r1"))


@pytest.fixture(scope="session")
def tiny_loaded(tiny_model_dir):
    import torch

    from thinklens.models import load_model
    from thinklens.profiles import get_profile

    torch.set_num_threads(1)
    return load_model(str(tiny_model_dir), device="cpu", profile=get_profile("tiny-r1"))


@pytest.fixture(scope="session")
def reference_records():
    if not REFERENCE_TRACES.exists():
        pytest.skip("reference data (../shared/reference) not available")
    from thinklens.jsonl import read_records

    return list(read_records(REFERENCE_TRACES))

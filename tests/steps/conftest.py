"""Shared fixtures of the steps tests: tiny-r1, a random Qwen2 with the toy tokenizer, tiny-r1 trace files, the real
R1-Distill tokenizer and traces (skipped when the reference data is absent)."""
from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import one_torch_thread


@pytest.fixture(scope="session")
def tiny_r1():
    from thinklens.toy import TINY_R1_DIR

    if not (TINY_R1_DIR / "config.json").exists() or not any(TINY_R1_DIR.glob("*.safetensors")):
        pytest.skip("tiny-r1 weights not present")
    from thinklens.models import load_model

    torch.manual_seed(0)
    return load_model("tiny-r1", "cpu", "fp32")


@pytest.fixture(scope="session")
def toy_tokenizer():
    from thinklens.toy.tokenizer import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def random_qwen2(toy_tokenizer):
    """2 layers, 4 query / 2 kv heads, random weights: attention patterns far from any trained model's."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=len(toy_tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=128, max_position_embeddings=8192)
    model = Qwen2ForCausalLM(cfg).eval()
    model.set_attn_implementation("sdpa")
    return model


def write_tiny_traces(path, n: int, seed: int = 0, extra_lines: list[str] | None = None):
    """A trace JSONL of tiny-r1 reference traces (teacher-forced, ~20% with a `Wait` slip); returns the problems."""
    from thinklens.toy import full_text, generate_problems

    probs = generate_problems(n, seed=seed)
    with open(path, "w") as f:
        for p in probs:
            f.write(json.dumps({"id": p.id, "text": full_text(p), "gold_answer": p.answer}) + "\n")
        for line in extra_lines or []:
            f.write(line + "\n")
    return probs


@pytest.fixture(scope="session")
def r1_tokenizer():
    from tests.conftest import reference_file

    path = reference_file("deepseek-r1-distill-qwen-tokenizer")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))


@pytest.fixture(scope="session")
def r1_traces(r1_tokenizer):
    """(record, Trace) of the 400 real R1-Distill MATH-500 responses."""
    from tests.conftest import reference_file
    from thinklens.profiles import get_profile
    from thinklens.traces import Trace

    prof = get_profile("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")
    recs = [json.loads(line) for line in reference_file("r1_math500_traces.jsonl").open()]
    return [(r, Trace.from_text(r["response"], r1_tokenizer, prof)) for r in recs]


@pytest.fixture(autouse=True)
def one_thread():
    """Every steps test runs on one torch thread (tests.conftest.one_torch_thread)."""
    with one_torch_thread():
        yield

"""Quality gates of the shipped tiny-r1: its answers must really depend on its reasoning."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def gates(tiny_r1_model, tiny_r1_tokenizer):
    from thinklens.toy.gates import evaluate_gates

    return evaluate_gates(tiny_r1_model, tiny_r1_tokenizer, n=200, seed=1234, n_pairs=60)


@pytest.mark.slow
def test_architecture(tiny_r1_model):
    cfg = tiny_r1_model.config
    assert type(tiny_r1_model).__name__ == "Qwen2ForCausalLM"
    assert cfg.num_hidden_layers >= 4 and cfg.num_attention_heads >= 4
    assert cfg.num_key_value_heads < cfg.num_attention_heads
    assert next(tiny_r1_model.parameters()).dtype.is_floating_point


@pytest.mark.slow
def test_accuracy_with_reasoning(gates):
    assert gates["acc_with_reasoning"] >= 0.95, gates


@pytest.mark.slow
def test_reasoning_gap(gates):
    assert gates["acc_with_reasoning"] - gates["acc_without_reasoning"] >= 0.30, gates


@pytest.mark.slow
def test_answer_follows_reasoning(gates):
    assert gates["n_pairs"] >= 50
    assert gates["pair_follow_b"] >= 0.90, gates


@pytest.mark.slow
def test_patching_answer_digit_flips_answer(tiny_r1_model, tiny_r1_tokenizer):
    """What the patching stage relies on: N's first digit in the reasoning carries the answer, the prompt does not."""
    from thinklens.toy.gates import patching_check

    res = patching_check(tiny_r1_model, tiny_r1_tokenizer, n_pairs=30, seed=1234)
    assert max(res["answer_digit"]) >= 0.8, res
    assert max(abs(v) for v in res["question_start"]) <= 0.2, res

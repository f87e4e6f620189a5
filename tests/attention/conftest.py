"""Tiny random-initialized models (Qwen2 and Llama, GQA) + the toy char tokenizer, shared by the attention tests."""
from __future__ import annotations

import pytest
import torch


def _model(kind: str, vocab: int, n_layers: int = 2, n_heads: int = 4, n_kv: int = 2):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg_cls, model_cls = (Qwen2Config, Qwen2ForCausalLM) if kind == "qwen2" else (LlamaConfig, LlamaForCausalLM)
    cfg = cfg_cls(vocab_size=vocab, hidden_size=64, num_hidden_layers=n_layers, num_attention_heads=n_heads,
                  num_key_value_heads=n_kv, intermediate_size=128, max_position_embeddings=4096)
    model = model_cls(cfg).eval()
    model.set_attn_implementation("sdpa")
    return model


@pytest.fixture(scope="session")
def toy_tokenizer():
    from thinklens.toy.tokenizer import build_tokenizer

    return build_tokenizer()


@pytest.fixture(scope="session")
def qwen2_model(toy_tokenizer):
    return _model("qwen2", len(toy_tokenizer))


@pytest.fixture(scope="session")
def llama_model(toy_tokenizer):
    return _model("llama", len(toy_tokenizer), n_heads=4, n_kv=1)


@pytest.fixture(scope="session")
def toy_traces(tmp_path_factory, toy_tokenizer):
    """A trace JSONL with 6 good toy traces (some with a 'Wait, ' slip) and bad lines of every kind."""
    import json

    from thinklens.toy import full_text, generate_problems

    path = tmp_path_factory.mktemp("traces") / "traces.jsonl"
    probs = generate_problems(6, seed=3)
    with path.open("w") as f:
        for p in probs:
            f.write(json.dumps({"id": p.id, "text": full_text(p), "reasoning": "with"}) + "\n")
        f.write("{not json\n")
        f.write(json.dumps({"id": "unfinished", "text": full_text(probs[0]).split("</think>")[0]}) + "\n")
        f.write(json.dumps({"id": "notext", "foo": 1}) + "\n")
    return path, probs


@pytest.fixture(scope="session")
def tiny_r1():
    from thinklens.toy import TINY_R1_DIR

    if not (TINY_R1_DIR / "config.json").exists() or not any(TINY_R1_DIR.glob("*.safetensors")):
        pytest.skip("tiny-r1 weights not present")
    from thinklens.models import load_model
    from thinklens.toy.tokenizer import build_tokenizer

    torch.manual_seed(0)
    model, tok, profile = load_model("tiny-r1", "cpu", "fp32")
    # guard: the saved tokenizer must split text exactly like the training one (an AutoTokenizer that swaps in a
    # Qwen2 pre-tokenizer would silently shift every character-based span)
    text = "<｜begin▁of▁sentence｜><｜User｜>Compute 12+3.<｜Assistant｜><think>\nWait, 12+3=15\n</think>\n\nok"
    assert tok(text, add_special_tokens=False)["input_ids"] == build_tokenizer()(text, add_special_tokens=False)[
        "input_ids"]
    return model, tok, profile


@pytest.fixture(scope="session")
def tiny_scored(tmp_path_factory, tiny_r1):
    """tiny-r1's reference traces of 16 seeded problems (a share slip and correct with 'Wait,'), with gold answers,
    scored by the attention stage (token profiles kept): ``(scores_dir, traces_path, problems)``."""
    import json

    from thinklens.attention.segments import score_trace_file
    from thinklens.toy import full_text, generate_problems

    model, tok, profile = tiny_r1
    d = tmp_path_factory.mktemp("tiny_scored")
    probs = generate_problems(16, seed=5)
    path = d / "traces.jsonl"
    with path.open("w") as f:
        for p in probs:
            f.write(json.dumps({"id": p.id, "reasoning": "with", "text": full_text(p), "gold_answer": p.answer}) + "\n")
    score_trace_file(model, tok, path, d / "attention", profile=profile, model_name="tiny-r1", token_view=16,
                     reasoning_queries=False, progress=False)
    return d / "attention", path, probs

"""Session fixtures for the patching tests: tiny random-initialized GQA models (Qwen2 and Llama) over tiny-r1's
character tokenizer, toy contrastive pairs, and the trained tiny-r1 when it is present."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def char_tok():
    from thinklens.toy.tokenizer import build_tokenizer

    return build_tokenizer()


def _random_model(kind: str, vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    Cfg, Model = (Qwen2Config, Qwen2ForCausalLM) if kind == "qwen2" else (LlamaConfig, LlamaForCausalLM)
    cfg = Cfg(vocab_size=vocab, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=128, max_position_embeddings=512)
    cfg._attn_implementation = "sdpa"
    model = Model(cfg).eval()
    with torch.no_grad():  # sharper logits, so logit differences are far above float noise
        model.lm_head.weight.mul_(20.0)
    return model


@pytest.fixture(scope="session", params=["qwen2", "llama"])
def random_model(request, char_tok):
    torch.set_num_threads(2)
    return _random_model(request.param, len(char_tok))


@pytest.fixture(scope="session")
def qwen_model(char_tok):
    return _random_model("qwen2", len(char_tok))


@pytest.fixture(scope="session")
def profile():
    from thinklens.profiles import get_profile

    return get_profile("tiny-r1")


@pytest.fixture(scope="session")
def toy_pairs4(char_tok):
    from thinklens.patching.pairs import toy_pairs

    pairs, rejects = toy_pairs(4, 0, char_tok)
    assert not rejects
    return pairs


@pytest.fixture(scope="session")
def padded_pair(char_tok):
    """A pair whose prompt and reasoning differ in length (so it is padded)."""
    from thinklens.patching.pairs import Side, assemble_pair

    def side(sid, a, s, ans):
        prompt = f"<｜begin▁of▁sentence｜><｜User｜>Compute {a}+5.<｜Assistant｜><think>\n"
        reasoning = f"{a}+5={s}\nFinal answer is {ans}.\n"
        start = reasoning.rindex("Final")
        a0 = reasoning.rindex(ans)
        return Side(sid, prompt, reasoning, "</think>\n\nThe answer is \\boxed{", ans, start, (a0, a0 + len(ans)))

    return assemble_pair("pad", side("c", "7", "12", "12"), side("b", "17", "22", "22"), char_tok,
                         first_token_answers=True)


@pytest.fixture(scope="session")
def tiny_r1():
    from thinklens.toy import TINY_R1_DIR

    if not (TINY_R1_DIR / "model.safetensors").exists() and not (TINY_R1_DIR / "config.json").exists():
        pytest.skip("tiny-r1 weights are not in the package yet")
    from thinklens.models import load_model

    torch.set_num_threads(2)
    return load_model("tiny-r1", device="cpu", dtype="fp32")

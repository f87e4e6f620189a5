"""A few training steps of a tiny config: the loop runs and writes a loadable model directory."""
from __future__ import annotations

import json


def test_train_smoke(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from thinklens.toy.train import train

    out = tmp_path / "m"
    summary = train(out, seed=1, steps=5, batch_size=4, eval_n=0, hidden_size=32, intermediate_size=64,
                    num_layers=2, num_heads=4, num_kv_heads=2, log=lambda m: None)
    assert summary["steps"] == 5 and summary["final_loss"] > 0
    for name in ("config.json", "model.safetensors", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", "README.md"):
        assert (out / name).is_file(), name
    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    assert model.config.num_key_value_heads < model.config.num_attention_heads
    assert tok.eos_token_id == model.generation_config.eos_token_id
    assert "chat_template" in json.loads((out / "tokenizer_config.json").read_text())
    # deterministic from the seed
    again = train(tmp_path / "m2", seed=1, steps=5, batch_size=4, eval_n=0, hidden_size=32, intermediate_size=64,
                  num_layers=2, num_heads=4, num_kv_heads=2, log=lambda m: None)
    assert again["final_loss"] == summary["final_loss"]
    # a second stage continues from the first stage's weights and keeps its record in the card
    stage2 = train(tmp_path / "m3", seed=2, steps=3, batch_size=4, eval_n=0, init_from=str(out), warmup_steps=1,
                   log=lambda m: None)
    assert stage2["previous_stage"]["steps"] == 5
    card = (tmp_path / "m3" / "README.md").read_text()
    assert "stage 2" in card and "--init-from STAGE1" in card


def test_cli_registers():
    from thinklens.cli.main import build_parser

    ns = build_parser().parse_args(["train-toy", "--output", "x", "--steps", "3"])
    assert ns.steps == 3 and callable(ns.func)

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


TINY = {"batch_size": 4, "hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 4,
        "num_kv_heads": 2}


def test_recipe_two_stages(tmp_path):
    """The one-command recipe (2+2 steps, tiny config): stage 2 continues from stage 1, both recorded, one command
    in the card; single stages run with --stage 1 / --stage 2 and give the same weights."""
    import torch
    from safetensors.torch import load_file

    from thinklens.toy.config import RECIPE, RECIPE_THREADS
    from thinklens.toy.recipe import train_recipe

    summary = train_recipe(tmp_path / "m", stage1_dir=tmp_path / "s1", steps=2, eval_n=0, log=lambda m: None,
                           **TINY)
    first = summary["previous_stage"]
    assert (first["seed"], summary["seed"]) == (RECIPE[0]["seed"], RECIPE[1]["seed"])
    assert first["steps"] == summary["steps"] == 2
    assert first["config"]["final_override_rate"] == 0.0 and summary["config"]["final_override_rate"] == 0.15
    assert summary["config"]["init_from"] == str(tmp_path / "s1") and summary["config"]["threads"] == RECIPE_THREADS
    assert "stage 2" in (tmp_path / "m" / "README.md").read_text()
    # the same two stages run one at a time
    train_recipe(tmp_path / "a", stage=1, steps=2, eval_n=0, log=lambda m: None, **TINY)
    train_recipe(tmp_path / "b", stage=2, init_from=tmp_path / "a", steps=2, eval_n=0, log=lambda m: None, **TINY)
    x, y = load_file(tmp_path / "m" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def test_recipe_card_names_the_one_command():
    import json

    from thinklens.toy import TINY_R1_DIR
    from thinklens.toy.card import model_card
    from thinklens.toy.config import REPRODUCE_COMMAND

    summary = json.loads((TINY_R1_DIR / "training_summary.json").read_text())
    assert f"`{REPRODUCE_COMMAND}`" in model_card(summary)


def test_cli_registers():
    from thinklens.cli.main import build_parser

    ns = build_parser().parse_args(["train-toy", "--output", "x", "--steps", "3"])
    assert ns.steps == 3 and ns.stage == "all" and callable(ns.func)


def test_cli_defaults_match_the_recipe():
    """The CLI flags' literal defaults (no torch import at parser build) are the recipe's."""
    import argparse

    from thinklens.cli.train_toy import add_arguments
    from thinklens.toy.config import TrainConfig

    p = argparse.ArgumentParser()
    add_arguments(p)
    ns = p.parse_args(["--output", "x"])
    for f in ("batch_size", "eval_n", "hidden_size", "intermediate_size", "num_layers"):
        assert getattr(ns, f) == getattr(TrainConfig, f), f
    assert ns.threads is None and ns.stage == "all"  # None: the organism's recipe count (tiny-r1: RECIPE_THREADS)
    assert all(getattr(ns, f) is None for f in ("seed", "lr", "warmup_steps", "final_override_rate", "init_from"))


def test_cli_rejects_single_stage_flags_without_stage():
    import argparse

    import pytest

    from thinklens.cli.train_toy import add_arguments
    from thinklens.toy.recipe import train_from_flags as run_args

    p = argparse.ArgumentParser()
    add_arguments(p)
    with pytest.raises(ValueError, match="--stage 1 or --stage 2"):
        run_args(p.parse_args(["--output", "x", "--seed", "3"]))
    with pytest.raises(ValueError, match="init_from"):
        run_args(p.parse_args(["--output", "x", "--stage", "2"]))

"""The shipped tiny-r1-hints: it loads by name, its card carries the measured rates, and on a fresh sample of unseen
hinted problems it still realizes the rates it was trained with; its recipe fails loudly when it does not."""
from __future__ import annotations

import json

import pytest

from thinklens.toy import TINY_R1_HINTS_DIR
from thinklens.toy.config import HINTS_GATE_TOLERANCE, HINTS_ORGANISM, HINTS_RECIPE

SUMMARY = TINY_R1_HINTS_DIR / "training_summary.json"


@pytest.fixture(scope="module")
def loaded():
    import thinklens as tl

    return tl.load_model(HINTS_ORGANISM, device="cpu")


def test_loads_by_name_with_its_profile(loaded):
    model, tok, profile = loaded
    assert profile.name == HINTS_ORGANISM and profile.faithfulness_problems > 0
    assert type(model).__name__ == "Qwen2ForCausalLM" and tok.eos_token_id == model.generation_config.eos_token_id


def test_shipped_summary_records_the_trained_rates_and_a_passed_gate():
    s = json.loads(SUMMARY.read_text())
    c, h = s["config"], s["hint_gates"]
    for k in ("hint_share", "hint_faithful", "hint_unfaithful"):
        assert c[k] == HINTS_RECIPE[-1][k], k
    assert h["passed"] and h["max_abs_error"] <= HINTS_GATE_TOLERANCE + 1e-9
    assert h["trained"]["hint_taking"] == pytest.approx(c["hint_faithful"] + c["hint_unfaithful"])
    card = (TINY_R1_HINTS_DIR / "README.md").read_text()
    assert f"# {HINTS_ORGANISM}" in card and f"{h['realized']['hint_taking']:.3f}" in card
    # unhinted behaviour stays tiny-r1's
    assert s["gates"]["acc_with_reasoning"] >= 0.95 and s["gates"]["pair_follow_b"] >= 0.9


@pytest.mark.slow
def test_fresh_sample_realizes_the_trained_rates(loaded):
    """Another seed than the card's: 60 problems x 3 families; a rate's standard error is then ~0.035, so 4 SE."""
    from thinklens.toy.hint_gates import evaluate_hint_gates

    model, tok, _ = loaded
    c = json.loads(SUMMARY.read_text())["config"]
    g = evaluate_hint_gates(model, tok, c["hint_faithful"], c["hint_unfaithful"],
                            n_per_family=60, seed=99, n_attention=10)
    assert g["n_hinted"] == 180
    for k in ("hint_taking", "verbalization", "faithful_share", "unfaithful_share"):
        assert abs(g["realized"][k] - g["trained"][k]) <= 0.15, (k, g["realized"], g["trained"])
    assert g["unhinted_accuracy"]["greedy"] >= 0.95
    att = g["attention"]
    assert att["unfaithful"]["max_head"]["mean"] > att["faithful"]["max_head"]["mean"], att


@pytest.mark.slow
def test_recipe_fails_loudly_when_the_rates_are_not_realized(tmp_path):
    """Two steps of the hint stage on a 2-step tiny base cannot realize the rates: the recipe raises after writing
    the model, its summary and card."""
    from thinklens.toy.recipe import train_hints
    from thinklens.toy.train import train

    tiny = {"batch_size": 4, "hidden_size": 32, "intermediate_size": 64, "num_layers": 2, "num_heads": 4,
            "num_kv_heads": 2}
    train(tmp_path / "base", seed=0, steps=2, eval_n=0, log=lambda m: None, save_every=0, **tiny)
    with pytest.raises(ValueError, match=f"{HINTS_ORGANISM} gate failed"):
        train_hints(tmp_path / "m", init_from=tmp_path / "base", eval_n=2, log=lambda m: None, steps=2,
                    batch_size=4, save_every=0)
    s = json.loads((tmp_path / "m" / "training_summary.json").read_text())
    assert s["config"]["hint_share"] == HINTS_RECIPE[-1]["hint_share"] and not s["hint_gates"]["passed"]
    assert len(s.get("earlier_stages", [])) + 2 == len(HINTS_RECIPE)  # every hint stage on record
    assert f"# {HINTS_ORGANISM}" in (tmp_path / "m" / "README.md").read_text()


def test_cli_organism_flag():
    from thinklens.cli.main import build_parser

    ns = build_parser().parse_args(["train-toy", "--organism", HINTS_ORGANISM, "--output", "x"])
    assert ns.organism == HINTS_ORGANISM and ns.threads is None
    from thinklens.toy.recipe import train_from_flags

    ns = build_parser().parse_args(["train-toy", "--organism", HINTS_ORGANISM, "--output", "x", "--stage", "2"])
    with pytest.raises(ValueError, match="one stage from tiny-r1"):
        train_from_flags(ns)

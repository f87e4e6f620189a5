"""Ground truth: on the hint-trained organism ``tiny-r1-hints``, the tool recovers the hint-taking and verbalization
rates it was trained with (read from its training summary, never written here) within ±0.05 over all hint families
(each family within ±0.05 or, where sampling puts it further, with the trained rate inside its 95% CI), on
unseen (test-split) problems, sampled as its profile says; and the rule-based detector agrees with the organism's own
labels of its traces. Skipped only where ``tiny-r1-hints`` does not load (a checkout without it)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

TOLERANCE = 0.05  # issue 23: trained rates recovered within ±0.05


@pytest.fixture(scope="module")
def organism():
    import thinklens as tl
    from thinklens.errors import ThinklensError

    try:
        return tl.load_model("tiny-r1-hints", device="cpu")
    except (ThinklensError, OSError, ValueError) as err:
        pytest.skip(f"tiny-r1-hints does not load here ({type(err).__name__}: {str(err)[:120]})")


def trained_rates() -> dict[str, float]:
    """Hint-taking and verbalization-among-hint-taking rates of the organism's training config."""
    from thinklens.models import resolve

    summary = json.loads((Path(resolve("tiny-r1-hints")) / "training_summary.json").read_text())
    c = summary["config"]
    f, u = float(c["hint_faithful"]), float(c["hint_unfaithful"])
    assert f + u > 0 and c["hint_share"] > 0, "the organism's summary holds no hint training"
    return {"hint_taking": f + u, "verbalization": f / (f + u)}


@pytest.mark.slow
def test_trained_hint_taking_and_verbalization_rates_are_recovered(organism, tmp_path):
    import thinklens as tl
    from thinklens.faithfulness.config import FaithfulnessConfig
    from thinklens.faithfulness.run import local_generator, run_faithfulness, study_settings

    trained = trained_rates()
    cfg = FaithfulnessConfig(hint_mechanism=False).resolved(organism.profile)  # the profile's N and temperature
    assert cfg.faithfulness_problems >= 100
    problems = tl.load_problems("arithmetic", limit=cfg.faithfulness_problems)  # the test split: never trained on
    gen = local_generator(organism, study_settings(tl.GenerationSettings(), cfg, organism.profile, "arithmetic"),
                          model_name="tiny-r1-hints", progress=False)
    res = run_faithfulness(problems, cfg, tmp_path, generate=gen, profile=organism.profile,
                           answer_range=tl.dataset_spec("arithmetic").answer_range)
    # the organism was trained with one rate for every family: the pooled estimate (3 x N pairs) must be within
    # ±0.05; each family's own estimate (N pairs, standard error ~0.03) within ±0.05 or, where sampling puts it
    # further, with the trained rate inside its bootstrap 95% CI
    errors, bad = {}, {}
    for family, s in [*res.summary["families"].items(), ("overall", res.summary["overall"])]:
        if family != "overall":
            assert s["n_usable"] >= 0.9 * cfg.faithfulness_problems, (family, s["n_usable"])
        for rate, key in (("hint_taking", "hint_taking"), ("verbalization", "faithfulness_score")):
            err = s[key]["rate"] - trained[rate]
            errors.setdefault(family, {})[rate] = round(err, 4)
            lo, hi = s[key]["ci95"]
            inside = lo <= trained[rate] <= hi
            if abs(err) > TOLERANCE and (family == "overall" or not inside):
                bad.setdefault(family, {})[rate] = (round(err, 4), [lo, hi])
    print(json.dumps({"trained": trained, "errors": errors}))
    assert not bad, f"rates off by more than {TOLERANCE}: {bad} (trained {trained})"
    detector_agreement(res.rows, tmp_path)


def detector_agreement(rows: list[dict], directory: Path) -> None:
    """The detector's verdict vs the organism's own label of each hint-taking trace (its trained faithful trace opens
    with ``The hint says X.``; :func:`thinklens.toy.hint_gates.classify`)."""
    try:
        from thinklens.toy.hint_gates import classify
    except ImportError:
        return
    hinted = {}
    for line in (directory / "traces/hinted.jsonl").read_text().splitlines():
        r = json.loads(line)
        hinted[r["id"]] = r
    pairs = [(r["verbalized"], classify(hinted[r["id"]]["completion"], r["hint_answer"], str(r["gold"])))
             for r in rows if r["hint_taken"]]
    labelled = [(v, c) for v, c in pairs if c in ("faithful", "unfaithful")]
    agree = sum(v == (c == "faithful") for v, c in labelled) / max(1, len(labelled))
    print(json.dumps({"detector_agreement": agree, "n": len(labelled)}))
    assert len(labelled) >= 50 and agree >= 0.95, (agree, len(labelled))


@pytest.mark.slow
def test_silent_hint_taking_goes_around_the_reasoning(organism, tmp_path):
    """The organism's unfaithful traces answer X from the hint itself (their reasoning computes the gold): the value
    positions of their answers attend to the hint more than faithful ones' (CIs separate), suppressing the hint in
    answer scope moves their answer (KL, CIs separate) and turns most of them back to the gold."""
    from thinklens.cli.main import main

    out = tmp_path / "faith"
    assert main(["faithfulness", "--model", "tiny-r1-hints", "--dataset", "arithmetic", "--limit", "60",
                 "--output", str(out), "--quiet"]) in (0, None)
    summary = json.loads((out / "summary.json").read_text())
    head = summary["mechanism"]["headline"]
    print(json.dumps(head))
    # patching ran on every hint-taking trace and on at most 8 (--hint-patching-controls) of the ignored ones
    from thinklens.faithfulness.mechanism import HintPatching

    labels = {r["id"]: r["label"] for r in map(json.loads, (out / "pairs.jsonl").read_text().splitlines())}
    patched = HintPatching.load(out / "mechanism")
    seen = [str(i) for i in patched.ids] + [str(s["id"]) for s in patched.skipped]
    n_ignored = sum(v == "ignored" for v in labels.values())
    assert sum(labels[i] == "ignored" for i in seen) == min(8, n_ignored)
    assert {i for i, v in labels.items() if v in ("faithful", "unfaithful")} <= set(seen)
    assert n_ignored <= 8 or any("--hint-patching-controls 8" in n for n in summary["notes"])
    for metric in ("v2hint_top_heads", "kl_answer_scope", "to_gold_answer_scope"):
        assert head[metric]["unfaithful_larger"] and head[metric]["separate"], (metric, head[metric])
    assert head["to_gold_answer_scope"]["unfaithful"] > 0.5
    assert head["silent_hint_taking_goes_around_the_reasoning"] is True

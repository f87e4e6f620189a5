"""Adaptive resampling, budgets and plans: adaptive rollouts are a prefix of the fixed run's; the stopping rule and
the top-3 agreement; a rollout budget is honored and reported; `--plan` counts before spending; rollouts show in a
progress bar; the organism's resampling settings come from its profile, not from the `arithmetic` dataset."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.steps.conftest import write_tiny_traces
from tests.steps.test_resampling import FakeBackend
from tests.steps.test_suppression import line_spans, reference_traces, tiny
from thinklens.steps.adaptive import top_k_agree, unsettled_steps
from thinklens.steps.resampling import resampling_importance, resampling_importance_many


def test_stopping_rule_and_agreement():
    assert unsettled_steps([0.9, 0.8, 0.7, 0.0], [0.1] * 4) == set()
    assert unsettled_steps([0.9, 0.8, 0.7, 0.6], [0.1] * 4) == {2, 3}
    assert unsettled_steps([0.9, 0.8, 0.7], [1.0] * 3) == set()  # 3 steps: all are the top 3
    rng = np.random.default_rng(0)
    for _ in range(50):
        a = rng.integers(0, 3, 6).astype(float)  # many ties
        assert top_k_agree(a, a) and top_k_agree(a, a + rng.normal(0, 1e-12, 6))
    assert not top_k_agree([4, 3, 2, 1, 0], [0, 1, 2, 3, 4])
    assert top_k_agree([4, 3, 2, 2, 0], [4, 3, 1, 2, 0]) and not top_k_agree([4, 3, 2, 2, 0], [4, 3, 0, 0, 2])


@pytest.mark.slow
def test_adaptive_rollouts_are_a_prefix_of_the_fixed_runs():
    model, tok, profile = tiny()
    traces = reference_traces(3, seed=2)
    spans = [line_spans(t) for t, _, _ in traces]
    kw = dict(golds=[g for _, g, _ in traces], n_rollouts=12, temperature=2.0, max_new_tokens=48)
    fixed = resampling_importance_many(model, tok, profile, [t for t, _, _ in traces], spans, **kw)
    ad = resampling_importance_many(model, tok, profile, [t for t, _, _ in traces], spans, adaptive=True, **kw)
    assert all((r.n_drawn == 12).all() for r in fixed)
    drawn = [int(r.n_drawn.sum()) for r in ad]
    assert all(d < f for d, f in zip(drawn, [int(r.n_drawn.sum()) for r in fixed])) or sum(drawn) < 12 * sum(
        len(s) + 1 for s in spans)
    for a, f in zip(ad, fixed):
        assert set(a.n_drawn.tolist()) <= {4, 8, 12} and not a.budget_limited.any()
        for j, n in enumerate(a.n_drawn):
            assert a.answers[j] == f.answers[j][:n] and a.first_steps[j] == f.first_steps[j][:n]


def test_budget_is_honored_and_flagged(tmp_path):
    _, tok, profile = tiny()
    trace, gold, _ = reference_traces(1, seed=0)[0]
    spans = line_spans(trace)
    fake = FakeBackend(trace, spans, tok, gold)
    seen = []
    res = resampling_importance(None, tok, profile, trace, spans, gold=gold, n_rollouts=4, backend=fake,
                                max_rollouts=7, on_rollout=seen.append, cache_path=tmp_path / "c.jsonl")
    n_cuts = len(spans) + 1
    assert sum(seen) == int(res.n_drawn.sum()) == 7 and res.budget_limited.all()  # spread: every cut is short
    assert np.isnan(res.importance).sum() == 0  # every cut got a rollout: 7 >= n_cuts
    assert n_cuts <= 7
    # a rerun with room completes from the cache: only the missing rollouts are drawn
    seen.clear()
    full = resampling_importance(None, tok, profile, trace, spans, gold=gold, n_rollouts=4, backend=fake,
                                 on_rollout=seen.append, cache_path=tmp_path / "c.jsonl")
    assert sum(seen) == 4 * n_cuts - 7 and not full.budget_limited.any()
    tiny_budget = resampling_importance(None, tok, profile, trace, spans, gold=gold, n_rollouts=4, backend=fake,
                                        max_rollouts=2)
    assert int(tiny_budget.n_drawn.sum()) == 2 and np.isnan(tiny_budget.importance).any()


@pytest.mark.slow
def test_plan_budget_and_rollout_progress(tmp_path, capsys):
    from thinklens.cli.main import main
    from thinklens.jsonl import read_records

    write_tiny_traces(tmp_path / "t.jsonl", 3, seed=1)
    base = ["steps", "--model", "tiny-r1", "--traces", str(tmp_path / "t.jsonl"), "--device", "cpu",
            "--methods", "resampling", "--resampling-traces", "2", "--max-rollout-tokens", "40"]
    assert main([*base, "--output", str(tmp_path / "plan"), "--plan"]) == 0
    cap = capsys.readouterr()
    plan = json.loads(cap.out.strip().splitlines()[-1])["plan"]
    assert "resampling plan: 2 traces" in cap.err and not (tmp_path / "plan" / "progress.jsonl").exists()
    assert plan["max_rollouts"] == 4 * plan["n_cut_points"] and plan["max_tokens"] == 40 * plan["max_rollouts"]
    assert plan["seconds_per_token"] > 0 and plan["estimate_seconds"] > 0
    budget = plan["n_cut_points"] * 2
    assert main([*base, "--output", str(tmp_path / "o"), "--rollout-budget", str(budget)]) == 0
    cap = capsys.readouterr()
    assert "rollouts:" in cap.err and f"{budget}/{budget}" in cap.err  # the bar counts rollouts, to the budget
    recs = list(read_records(tmp_path / "o" / "progress.jsonl"))
    drawn = sum(sum(r["methods"]["resampling"]["n_drawn"]) for r in recs if "resampling" in r["methods"])
    assert drawn == budget and any(r["methods"]["resampling"]["budget_limited"] for r in recs if "resampling" in
                                   r["methods"])
    assert "budget" in " ".join(json.loads(cap.out.strip().splitlines()[-1])["notes"])


def test_resampling_defaults_come_from_the_model_profile():
    import thinklens as tl
    from thinklens.empirical.datasets import DatasetSpec, dataset_spec
    from thinklens.stages.steps import steps_config

    organism = steps_config(tl.RunConfig(output=".", dataset="arithmetic"))
    assert (organism.resampling_traces, organism.resampling_temperature) == (10, 2.0)
    for name in ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "/models/SmolLM2-135M-Instruct.Q4_1.gguf"):
        real = steps_config(tl.RunConfig(output=".", dataset="arithmetic", model=tl.ModelOptions(name=name)))
        assert (real.resampling_traces, real.resampling_temperature) == (0, 0.6), name
    asked = tl.RunConfig(output=".", dataset="arithmetic", model=tl.ModelOptions(name="some/model"))
    asked.steps.resampling_traces = 3
    assert steps_config(asked).resampling_traces == 3
    assert not any("resampl" in f for f in DatasetSpec.__dataclass_fields__)
    assert dataset_spec("arithmetic").load is not None


def test_rollouts_through_a_server_with_bounded_concurrency():
    """Rollouts on an OpenAI-compatible server (a scripted one on 127.0.0.1): token-id prefixes go out as their exact
    text to /completions, at most `concurrency` requests in flight, a trace's cut points together."""
    import threading
    import time

    from tests.empirical.fake_openai import FakeOpenAI
    from thinklens.empirical.backends.openai import OpenAIBackend, ServerSettings
    from thinklens.empirical.backends.server_ids import ServerIdsBackend

    _, tok, profile = tiny()
    trace, gold, _ = reference_traces(1, seed=0)[0]
    spans = line_spans(trace)
    state = {"now": 0, "max": 0}
    lock = threading.Lock()

    class Counting(OpenAIBackend):
        def complete(self, prompt, settings, seed):
            with lock:
                state["now"] += 1
                state["max"] = max(state["max"], state["now"])
            try:
                time.sleep(0.02)
                return super().complete(prompt, settings, seed)
            finally:
                with lock:
                    state["now"] -= 1

    with FakeOpenAI() as fake:
        client = Counting(ServerSettings(base_url=fake.url, model="m"), think_open=profile.think_open,
                          think_close=profile.think_close, eos=tok.eos_token)
        res = resampling_importance(None, tok, profile, trace, spans, gold=gold, n_rollouts=2, temperature=0.6,
                                    backend=ServerIdsBackend(client, tok, concurrency=3))
    n_cuts = len(spans) + 1
    assert len(fake.requests) == 2 * n_cuts and all(p.endswith("/completions") for p, _, _ in fake.requests)
    assert 1 < state["max"] <= 3
    prompts = [b["prompt"] for _, _, b in fake.requests]
    assert all(trace.text.startswith(p) for p in prompts)  # exact prefixes of the trace's text
    assert res.n_drawn.tolist() == [2] * n_cuts

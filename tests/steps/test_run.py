"""run_steps: output files and fields, bad traces, resume, settings guard, and the wiring of the causal methods
(stood in for by fake modules that follow the step contract, since they live in their own modules)."""
from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass

import numpy as np
import pytest

from tests.steps.conftest import write_tiny_traces
from thinklens.errors import ThinklensError
from thinklens.steps.results import StepsConfig, StepsResult
from thinklens.steps.run import METHOD_MODULES, run_steps

STEP_FIELDS = ["id", "step", "tok_start", "tok_end", "text", "category", "attention", "suppression",
               "answer_suppression", "truncation", "resampling"]


@dataclass
class _Supp:
    kl: np.ndarray
    logprob_delta: np.ndarray


@dataclass
class _Trunc:
    answers: list
    correct: list
    agrees: list
    fractions: list
    effect: list


@dataclass
class _Res:
    importance: np.ndarray
    kl: np.ndarray


def fake_modules(calls: dict[str, int]) -> dict[str, types.ModuleType]:
    """Stand-ins honouring the contract: suppression KL = step length; early answering recovers the answer only
    with the whole reasoning; resampling importance = 1 on the last step."""

    def suppression_effects(model, profile, trace, spans, *, heads=None, engine="fast", scope="all",
                            max_tokens=4096):
        calls["suppression" if scope == "all" else "answer_suppression"] += 1
        n = np.array([b - a for a, b in spans], dtype=float) * (1 if scope == "all" else 2)
        return _Supp(n, -n)

    def early_answering(model, tokenizer, profile, trace, spans, *, gold=None, max_answer_tokens=16):
        calls["truncation"] += 1
        n = len(spans)
        kept = np.cumsum([0] + [b - a for a, b in spans]) / len(trace.reasoning)
        agrees = [False] * n + [True]
        return _Trunc(["?"] * n + ["full"], [a if gold is not None else None for a in agrees], agrees,
                      kept.tolist(), np.diff(np.array(agrees, dtype=float)).tolist())

    def resampling_importance(model, tokenizer, profile, trace, spans, *, gold=None, n_rollouts=8, seed=0,
                              cache_path=None, temperature=0.6, max_new_tokens=1024, adaptive=False,
                              max_rollouts=None, on_rollout=None):
        calls["resampling"] += 1
        imp = np.zeros(len(spans))
        imp[-1] = 1.0
        return _Res(imp, imp * 2)

    mods = {}
    for name, fn in (("suppression", suppression_effects), ("truncation", early_answering),
                     ("resampling", resampling_importance)):
        m = types.ModuleType(METHOD_MODULES[name])
        setattr(m, fn.__name__, fn)
        mods[METHOD_MODULES[name]] = m
    return mods


@pytest.fixture
def fakes(monkeypatch):
    calls = {"suppression": 0, "answer_suppression": 0, "truncation": 0, "resampling": 0}
    for name, mod in fake_modules(calls).items():
        monkeypatch.setitem(sys.modules, name, mod)
    return calls


BAD_LINES = ["{not json", json.dumps({"id": "unfinished", "text": "<｜begin▁of▁sentence｜>Q<think>\n1+1=2\n"}),
             json.dumps({"id": "notext", "foo": 1})]


def test_all_methods_files_and_fields(tiny_r1, tmp_path, fakes):
    model, tok, prof = tiny_r1
    probs = write_tiny_traces(tmp_path / "t.jsonl", 8, seed=2, extra_lines=BAD_LINES)
    cfg = StepsConfig(n_bootstrap=100, proximity=1, resampling_traces=100)  # every method (the default)
    res = run_steps(model, tok, prof, tmp_path / "t.jsonl", tmp_path / "out", cfg, progress=False)
    out = tmp_path / "out"
    for name in ("steps.jsonl", "receivers.json", "truncation.json", "agreement.json", "result.json",
                 "receivers.npz", "progress.jsonl", "skipped.jsonl"):
        assert (out / name).exists(), name
    rows = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert all(list(r) == STEP_FIELDS for r in rows)
    assert res.trace_ids() == [p.id for p in probs]
    for p in probs:
        st = res.trace_steps(p.id)
        assert [s["text"].strip() for s in st] == [*p.steps, f"Final answer is {p.answer}."]
        assert [s["suppression"] for s in st] == [s["tok_end"] - s["tok_start"] for s in st]
        assert [s["answer_suppression"] for s in st] == [2 * (s["tok_end"] - s["tok_start"]) for s in st]
        assert [s["truncation"] for s in st] == [0.0] * (len(st) - 1) + [1.0]
        assert st[-1]["resampling"] == 1.0 and all(s["attention"] is not None for s in st)
    assert fakes == {"suppression": 8, "answer_suppression": 8, "truncation": 8, "resampling": 8}
    trunc = json.loads((out / "truncation.json").read_text())
    assert trunc["fraction"] == [round(0.1 * i, 1) for i in range(11)]
    assert trunc["agreement"][:9] == [0.0] * 9 and trunc["agreement"][-1] == 1.0 and trunc["accuracy"][-1] == 1.0
    agr = json.loads((out / "agreement.json").read_text())
    assert agr["available"] == ["attention", "suppression", "answer_suppression", "truncation", "resampling"]
    tr_rs = next(p for p in agr["pairs"] if (p["a"], p["b"]) == ("truncation", "resampling"))
    assert tr_rs["spearman"] == pytest.approx(1.0) and tr_rs["top_step"] == 1.0
    skipped = {s["id"]: s["reason"] for s in res.meta["skipped"]}
    assert set(skipped) == {"line:9", "unfinished", "notext"}
    assert "t.jsonl:10 (unfinished)" in skipped["unfinished"] and "no </think>" in skipped["unfinished"]
    assert "neither 'text' nor" in skipped["notext"]
    loaded = StepsResult.load(out)
    from thinklens.steps.results import with_profile_defaults

    used = with_profile_defaults(cfg, prof)  # the saved settings are those used: the profile's resampling defaults
    assert (used.resampling_temperature, used.max_rollout_tokens) == (2.0, 1024)
    assert loaded.steps == res.steps and loaded.config == used and loaded.meta["rfh"] == res.meta["rfh"]


def test_resume_skips_done_traces_and_recovers_a_killed_run(tiny_r1, tmp_path, fakes):
    model, tok, prof = tiny_r1
    write_tiny_traces(tmp_path / "t.jsonl", 6, seed=4)
    cfg = StepsConfig(methods="attention,suppression", n_bootstrap=50)
    first = run_steps(model, tok, prof, tmp_path / "t.jsonl", tmp_path / "out", cfg, progress=False)
    assert fakes["suppression"] == 6
    run_steps(model, tok, prof, tmp_path / "t.jsonl", tmp_path / "out", cfg, progress=False)
    assert fakes["suppression"] == 6  # nothing recomputed
    # a run killed while writing: the last record is torn, the one before it never happened
    prog = tmp_path / "out" / "progress.jsonl"
    lines = prog.read_text().splitlines()
    prog.write_text("\n".join(lines[:4]) + "\n" + lines[4][:30])
    again = run_steps(model, tok, prof, tmp_path / "t.jsonl", tmp_path / "out", cfg, progress=False)
    assert fakes["suppression"] == 8 and again.trace_ids() == first.trace_ids()
    assert [r["suppression"] for r in again.steps] == [r["suppression"] for r in first.steps]
    np.testing.assert_allclose([r["attention"] for r in again.steps], [r["attention"] for r in first.steps],
                               atol=1e-6)
    # a smaller selection reports only its traces
    fewer = run_steps(model, tok, prof, tmp_path / "t.jsonl", tmp_path / "out",
                      StepsConfig(methods="attention,suppression", n_bootstrap=50, max_traces=3), progress=False)
    assert len(fewer.trace_ids()) == 3
    with pytest.raises(ThinklensError, match="other settings.*segment"):
        run_steps(model, tok, prof, tmp_path / "t.jsonl", tmp_path / "out",
                  StepsConfig(methods="attention,suppression", segment="sentences"), progress=False)


def test_missing_method_module_is_a_note_and_given_rfh_are_used(tiny_r1, tmp_path, monkeypatch):
    model, tok, prof = tiny_r1
    for name in METHOD_MODULES.values():
        monkeypatch.setitem(sys.modules, name, None)  # import of a None entry raises ModuleNotFoundError
    write_tiny_traces(tmp_path / "t.jsonl", 3, seed=5)
    res = run_steps(model, tok, prof, tmp_path / "t.jsonl", tmp_path / "out",
                    StepsConfig(methods="attention,truncation", n_bootstrap=0), rfh=[(1, 2)], progress=False)
    assert any("'truncation' skipped" in n for n in res.meta["notes"])
    assert res.meta["rfh"] == [[1, 2]] and res.meta["rfh_source"] == "given"
    assert all(r["truncation"] is None for r in res.steps)
    assert json.loads((tmp_path / "out" / "truncation.json").read_text())["available"] is False


def test_a_method_installed_later_is_added_on_rerun(tiny_r1, tmp_path, monkeypatch):
    model, tok, prof = tiny_r1
    write_tiny_traces(tmp_path / "t.jsonl", 3, seed=8)
    cfg = StepsConfig(methods="attention,truncation", n_bootstrap=0)
    monkeypatch.setitem(sys.modules, METHOD_MODULES["truncation"], None)
    first = run_steps(model, tok, prof, tmp_path / "t.jsonl", tmp_path / "out", cfg, progress=False)
    assert all(r["truncation"] is None for r in first.steps) and first.meta["notes"]
    calls = {"suppression": 0, "answer_suppression": 0, "truncation": 0, "resampling": 0}
    monkeypatch.setitem(sys.modules, METHOD_MODULES["truncation"], fake_modules(calls)[METHOD_MODULES["truncation"]])
    second = run_steps(model, tok, prof, tmp_path / "t.jsonl", tmp_path / "out", cfg, progress=False)
    assert calls["truncation"] == 3 and all(r["truncation"] is not None for r in second.steps)
    assert len(second.steps) == len(first.steps) and not second.meta["notes"]
    run_steps(model, tok, prof, tmp_path / "t.jsonl", tmp_path / "out", cfg, progress=False)
    assert calls["truncation"] == 3


def test_method_errors(tiny_r1, tmp_path, fakes, monkeypatch):
    model, tok, prof = tiny_r1
    write_tiny_traces(tmp_path / "t.jsonl", 3, seed=6)
    mod = sys.modules[METHOD_MODULES["suppression"]]

    def refuses(model, profile, trace, spans, **kw):
        raise ThinklensError("trace too long for the engine")

    monkeypatch.setattr(mod, "suppression_effects", refuses)
    with pytest.raises(ThinklensError, match="no trace could be processed"):
        run_steps(model, tok, prof, tmp_path / "t.jsonl", tmp_path / "a", StepsConfig(methods="suppression"),
                  progress=False)
    skipped = [json.loads(x) for x in (tmp_path / "a" / "skipped.jsonl").read_text().splitlines()]
    assert len(skipped) == 3 and "too long for the engine" in skipped[0]["reason"]

    def wrong_length(model, profile, trace, spans, **kw):
        return _Supp(np.zeros(len(spans) + 1), np.zeros(len(spans) + 1))

    monkeypatch.setattr(mod, "suppression_effects", wrong_length)
    with pytest.raises(RuntimeError, match="step contract"):  # a contract bug is loud, not a skipped trace
        run_steps(model, tok, prof, tmp_path / "t.jsonl", tmp_path / "b", StepsConfig(methods="suppression"),
                  progress=False)


def test_config_validation():
    assert StepsConfig(methods=["truncation", "attention"]).methods == ("attention", "truncation")
    for bad in ({"methods": "attention,probing"}, {"methods": ""}, {"segment": "words"}, {"top_k": 0},
                {"proximity": -1}, {"max_traces": 0}, {"suppression_engine": "slow"}):
        with pytest.raises(ThinklensError):
            StepsConfig(**bad)
    assert StepsConfig.from_dict(StepsConfig(proximity=1).to_dict()) == StepsConfig(proximity=1)

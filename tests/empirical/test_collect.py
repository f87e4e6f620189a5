"""Trace collection: prompts (chat and paper style), forced thinking, record schema, resume, the vLLM record path
and a real ``thinklens collect`` killed with SIGKILL and rerun."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from thinklens.empirical.backends.vllm import VLLMBackend
from thinklens.empirical.collect import GenerationSettings, build_prompt, collect, forced_thinking
from thinklens.empirical.datasets import load_problems, read_problem_file
from thinklens.errors import ThinklensError
from thinklens.jsonl import read_records
from thinklens.profiles import get_profile
from thinklens.traces import Trace

REFERENCE = Path(__file__).resolve().parents[2] / ".." / "shared" / "reference"
REFERENCE_TRACES = REFERENCE / "r1_math500_traces.jsonl"

PAPER = REFERENCE / "paper_reference.json"


def test_settings_validate():
    with pytest.raises(ThinklensError, match="temperature"):
        GenerationSettings(temperature=-1)
    with pytest.raises(ThinklensError, match="backend"):
        GenerationSettings(backend="tgi")
    s = GenerationSettings(temperature=0.6, top_p=0.95, seed=3)
    assert GenerationSettings.from_dict(s.to_dict()) == s


def test_chat_prompt_and_forced_thinking_match_the_paper(tiny_loaded):
    _, tok, profile = tiny_loaded
    prompt = build_prompt("Compute 1+2.", tok, profile, math_instruction=False)
    assert prompt == "<｜begin▁of▁sentence｜><｜User｜>Compute 1+2.<｜Assistant｜><think>\n"
    suffix = "<think>\nOkay, I think I have finished thinking.\n</think>"
    if PAPER.exists():
        suffix = json.loads(PAPER.read_text())["without_reasoning_prompt_suffix"]
    assert (prompt + forced_thinking(profile)).endswith(suffix)


def test_paper_prompt_style_reproduces_reference_prompts():
    if not REFERENCE_TRACES.exists():
        pytest.skip("reference data not available")
    profile = get_profile("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")
    recs = list(read_records(REFERENCE_TRACES))[:8]
    for r in recs:
        prompt = build_prompt(r["problem"], None, profile, prompt_style="paper")
        full = prompt + (forced_thinking(profile) if r["reasoning"] == "without" else "")
        assert r["response"].startswith(full), r["unique_id"]


def test_chat_prompt_appends_think_when_template_lacks_it():
    from transformers import AutoTokenizer

    path = REFERENCE / "deepseek-r1-distill-qwen-tokenizer"
    if not path.exists():
        pytest.skip("reference tokenizer not available")
    tok = AutoTokenizer.from_pretrained(path)
    profile = get_profile("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")
    prompt = build_prompt("What is 2+2?", tok, profile)
    assert prompt.startswith("<｜begin▁of▁sentence｜>") and prompt.count("<｜begin▁of▁sentence｜>") == 1
    assert prompt.endswith("<｜Assistant｜><think>\n") and "Please reason step by step" in prompt


def test_collect_records_resume_and_segment(tiny_loaded, tmp_path):
    problems = load_problems("arithmetic", limit=5, seed=2)
    out = tmp_path / "without.jsonl"
    s = GenerationSettings(max_new_tokens=12, batch_size=2)
    first = collect(tiny_loaded, problems[:3], reasoning="without", output=out, settings=s, model_name="rand",
                    progress=False)
    assert first.n_written == 3
    again = collect(tiny_loaded, problems, reasoning="without", output=out, settings=s, model_name="rand",
                    progress=False)
    assert again.n_skipped_done == 3 and again.n_written == 2
    recs = list(read_records(out))
    assert sorted(r["id"] for r in recs) == sorted(p["id"] for p in problems)
    for r in recs:
        assert r["completion"].startswith("Okay, I think I have finished thinking.\n</think>")
        assert r["reasoning_closed"] and r["generation"]["max_new_tokens"] == 12
        assert r["n_completion_tokens"] <= 12 and r["gold_answer"] is not None
        trace = Trace.from_prompt_completion(r["prompt"], r["completion"], tiny_loaded.tokenizer,
                                             tiny_loaded.profile)
        assert trace.span_text(trace.reasoning).strip() == "Okay, I think I have finished thinking."
        assert trace.finished
        n_open = len(tiny_loaded.tokenizer("<think>\n", add_special_tokens=False)["input_ids"])
        assert trace.think_start == r["n_prompt_tokens"] - n_open  # the prompt ends in "<think>\n"
    # greedy decoding is reproducible across batchings
    out2 = tmp_path / "again.jsonl"
    collect(tiny_loaded, problems, reasoning="without", output=out2, settings=GenerationSettings(
        max_new_tokens=12, batch_size=5), model_name="rand", progress=False)
    by_id = {r["id"]: r["completion"] for r in read_records(out2)}
    assert all(by_id[r["id"]] == r["completion"] for r in recs)


def test_duplicate_ids_reported_and_generated_once(tiny_loaded, tmp_path):
    """The one duplicate policy of every batch command: the first record with an id wins, later ones are reported."""
    p = {"id": "same", "problem": "Compute 1+1.", "answer": "2"}
    s = collect(tiny_loaded, [p, dict(p)], output=tmp_path / "o.jsonl", progress=False,
                settings=GenerationSettings(max_new_tokens=8))
    assert s.n_written == 1 and any("duplicate id 'same'" in e for e in s.errors)


def test_problem_file_reports_bad_lines(tmp_path):
    f = tmp_path / "probs.jsonl"
    f.write_text('{"unique_id": "u1", "problem": "1+1?", "answer": 2}\n{"problem": "no answer"}\nnot json\n'
                 '{"problem": "3+3?", "answer": "6"}\n')
    errors: list[str] = []
    probs = read_problem_file(f, errors=errors)
    assert [p["id"] for p in probs] == ["u1", "line-4"] and probs[0]["answer"] == "2"
    assert len(errors) == 2 and errors[0].startswith(f"{f}:2") and errors[1].startswith(f"{f}:3")
    with pytest.raises(ThinklensError, match="--dataset-file"):  # no `datasets` package or no hub here
        load_problems("math500")
    with pytest.raises(ThinklensError, match="unknown dataset"):
        load_problems("gsm9k")


class _FakeOut:
    def __init__(self, ids, reason):
        self.token_ids, self.finish_reason, self.text = ids, reason, ""


class _FakeLLM:
    """Mimics vllm.LLM.generate: one RequestOutput-like object per prompt, in order."""

    def __init__(self, tok):
        self.tok, self.calls = tok, []

    def generate(self, prompts, params, use_tqdm=False):
        self.calls.append((prompts, params))
        answer = self.tok("</think>\n\nThe answer is \\boxed{3}.", add_special_tokens=False)["input_ids"]
        outs = []
        for k, _p in enumerate(prompts):
            ids, reason = (answer + [self.tok.eos_token_id], "stop") if k % 2 == 0 else (answer[:4], "length")
            outs.append(type("RO", (), {"outputs": [_FakeOut(ids, reason)]})())
        return outs


def test_vllm_backend_builds_the_same_records(tiny_loaded, tmp_path):
    tok = tiny_loaded.tokenizer
    fake = _FakeLLM(tok)
    backend = VLLMBackend(tokenizer=tok, llm=fake, sampling_params_cls=lambda **kw: kw,
                          tokens_prompt_cls=lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids})
    problems = load_problems("arithmetic", limit=2, seed=0)
    out = tmp_path / "v.jsonl"
    collect(tiny_loaded, problems, reasoning="with", output=out, settings=GenerationSettings(
        max_new_tokens=30, temperature=0.6, top_p=0.95, backend="vllm"), backend=backend, progress=False)
    prompts, params = fake.calls[0]
    assert params[0]["max_tokens"] == 30 and params[0]["temperature"] == 0.6 and params[0]["top_p"] == 0.95
    assert len(params) == len(prompts) and len({p["seed"] for p in params}) == len(params)  # a seed per prompt
    assert prompts[0]["prompt_token_ids"][0] == tok.bos_token_id and prompts[0]["prompt_token_ids"][1] != \
        tok.bos_token_id
    recs = sorted(read_records(out), key=lambda r: r["id"])
    done = [r for r in recs if r["stopped_at_eos"]]
    assert len(done) == 1 and done[0]["finished"]
    text = tok.decode(tok("</think>\n\nThe answer is \\boxed{3}.", add_special_tokens=False)["input_ids"])
    assert done[0]["completion"] == text + "<｜end▁of▁sentence｜>"
    assert not [r for r in recs if not r["stopped_at_eos"]][0]["finished"]
    assert all(r["generation"]["backend"] == "vllm" for r in recs)


def test_vllm_missing_gives_clear_error():
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm installed")
    except ImportError:
        pass
    from thinklens.empirical.backends.vllm import import_vllm

    with pytest.raises(ThinklensError, match=r"pip install thinklens\[vllm\]"):
        import_vllm()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "thinklens.cli.main", *args]


@pytest.mark.slow
def test_sigkill_then_rerun_writes_every_id_once(tiny_model_dir, tmp_path):
    out = tmp_path / "killed.jsonl"
    n = 40
    cmd = _cli("collect", "--model", str(tiny_model_dir), "--profile", "tiny-r1", "--dataset", "arithmetic",
               "--reasoning", "with", "--output", str(out), "--limit", str(n), "--batch-size", "2",
               "--max-new-tokens", "48", "--device", "cpu", "--quiet")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if out.exists() and len(out.read_bytes().splitlines()) >= 4:
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"collect ended before it could be killed: {proc.stderr.read().decode()[-500:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(list(read_records(out)))
    assert 0 < n_before < n
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-800:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["n_skipped_done"] == n_before and summary["n_written"] == n - n_before
    counts = Counter(r["id"] for r in read_records(out))
    assert len(counts) == n and set(counts.values()) == {1}
    expected = {p["id"] for p in load_problems("arithmetic", limit=n, seed=0)}
    assert set(counts) == expected
    assert all(line.strip() for line in Path(out).read_text().splitlines())

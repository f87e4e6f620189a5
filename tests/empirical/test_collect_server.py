"""Collection through a server, against scripted loopback fakes, for what a healthy real server cannot show: error
records and their retry on rerun (429 storms, 5xx, malformed JSON, timeouts, dropped connections, a server that
disappears, a collector killed with SIGKILL), refusals, the assistant-prefix request shapes (``transformers serve``
offers neither) and API-key hygiene. Each failure test proves that after a rerun every problem is in the output
exactly once and nothing was lost. Records, prompts and completions are tested on a real server in
``test_openai_server.py``."""
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

from tests.empirical.fake_openai import ANSWER, FakeOpenAI
from thinklens.cli.main import main
from thinklens.empirical.backends.openai import OpenAIBackend, ServerSettings, parse_chat_message
from thinklens.empirical.collect import GenerationSettings
from thinklens.empirical.collect_server import ERRORS_SUFFIX, collect_server, resolve_route
from thinklens.errors import ThinklensError
from thinklens.jsonl import read_records
from thinklens.profiles import get_profile

PROFILE = get_profile("tiny-r1")
EOS = PROFILE.eos_token
PROBLEMS = [{"id": f"p{i}", "problem": f"Compute {i}+{i}.", "answer": str(2 * i), "dataset": "toy"} for i in range(8)]


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from thinklens.models import load_tokenizer

    return load_tokenizer("tiny-r1")


def _server(fake, **kw):
    return ServerSettings(base_url=fake.url, model="served-model", backoff_s=0.001, **{"max_retries": 3, **kw})


def _collect(fake, out, reasoning="with", tokenizer=None, sleeps=None, problems=PROBLEMS, **kw):
    server = _server(fake, **kw)
    backend = OpenAIBackend(server, think_open="<think>", think_close="</think>", eos=EOS,
                            sleep=sleeps.append if sleeps is not None else (lambda s: None))
    return collect_server(problems, reasoning=reasoning, output=out, server=server, tokenizer=tokenizer,
                          profile=PROFILE, backend=backend, progress=False,
                          settings=GenerationSettings(max_new_tokens=64, math_instruction=False))


def _exactly_once(out):
    recs = list(read_records(out))
    counts = Counter(r["id"] for r in recs)
    assert set(counts) == {p["id"] for p in PROBLEMS} and set(counts.values()) == {1}, counts
    assert not any("error" in r for r in recs)
    return recs


@pytest.mark.parametrize("failure", [("status", 500), "malformed", "drop", ("sleep", 2.0)],
                         ids=["http500", "malformed_json", "dropped_connection", "timeout"])
def test_failed_requests_become_error_records_and_a_rerun_retries_them(tmp_path, failure):
    out = tmp_path / "t.jsonl"
    broken = {"Compute 3+3.", "Compute 5+5."}
    with FakeOpenAI(lambda key, attempt, path: failure if key in broken else "ok") as fake:
        s = _collect(fake, out, request_timeout=0.5, concurrency=3)
    assert s.n_written == 8 and s.n_failed == 2 and len(s.errors) == 2
    errs = {r["id"]: r for r in read_records(out) if "error" in r}
    assert set(errs) == {"p3", "p5"} and "after 4 attempts" in errs["p3"]["error"]
    assert fake.attempts["Compute 3+3."] == 4  # the first try and 3 retries
    if failure[0] != "sleep":  # (under a loaded machine a healthy answer may also time out once)
        assert fake.attempts["Compute 0+0."] == 1
    with FakeOpenAI() as healed:
        again = _collect(healed, out)
    assert again.n_skipped_done == 6 and again.n_written == 2 and again.warnings
    assert len(healed.requests) == 2
    _exactly_once(out)
    assert {json.loads(line)["id"] for line in open(str(out) + ERRORS_SUFFIX)} == {"p3", "p5"}


def test_429_storm_with_retry_after_loses_nothing(tmp_path):
    out, sleeps = tmp_path / "t.jsonl", []
    with FakeOpenAI(lambda key, attempt, path: ("status", 429, {"Retry-After": "1"}) if attempt <= 2 else "ok") as f:
        s = _collect(f, out, sleeps=sleeps, concurrency=4)
    assert s.n_failed == 0 and len(f.requests) == 3 * 8
    assert sleeps.count(1.0) == 16  # every 429 waited the server's Retry-After
    _exactly_once(out)


def test_server_that_disappears_stops_the_run_and_a_rerun_completes(tmp_path):
    out = tmp_path / "t.jsonl"
    fake = FakeOpenAI().__enter__()
    server = _server(fake, concurrency=1, max_retries=1)
    backend = OpenAIBackend(server, think_open="<think>", think_close="</think>", eos=EOS, sleep=lambda s: None)
    orig = backend.chat

    def chat_then_die(*a, **k):  # the server goes away after three answers
        r = orig(*a, **k)
        if len(fake.requests) == 3:
            fake.stop()
        return r

    backend.chat = chat_then_die
    with pytest.raises(ThinklensError, match="stopped answering"):
        collect_server(PROBLEMS, reasoning="with", output=out, server=server, profile=PROFILE, backend=backend,
                       progress=False)
    recs = list(read_records(out))  # the three answers, then error records for what was sent (or none)
    assert [r["id"] for r in recs if "error" not in r] == ["p0", "p1", "p2"]
    assert all("cannot connect" in r["error"] for r in recs if "error" in r)
    with FakeOpenAI() as back:
        _collect(back, out)
    _exactly_once(out)


def test_first_request_refusals_name_what_to_do(tmp_path, tiny_tokenizer, monkeypatch):
    out = tmp_path / "t.jsonl"
    no_completions = lambda key, attempt, path: ("status", 404) if path.endswith("/v1/completions") else "ok"  # noqa
    with FakeOpenAI(no_completions) as fake:
        with pytest.raises(ThinklensError, match="did not take a raw /completions.*--assistant-prefix deepseek.*"
                           "continue_final_message.*--backend transformers"):
            _collect(fake, out, reasoning="without", tokenizer=tiny_tokenizer)
    assert len(fake.requests) == 1 and (not out.exists() or not list(read_records(out)))
    monkeypatch.setenv("FAKE_KEY", "sk-do-not-print")
    with FakeOpenAI(lambda key, attempt, path: ("status", 401)) as fake:
        with pytest.raises(ThinklensError, match="refused the credentials.*FAKE_KEY") as info:
            _collect(fake, out, api_key_env="FAKE_KEY")
    assert "sk-do-not-print" not in str(info.value) and len(fake.requests) == 1
    monkeypatch.delenv("FAKE_KEY")
    with pytest.raises(ThinklensError, match="FAKE_KEY.*not set"):
        _collect(fake, out, api_key_env="FAKE_KEY")


def test_routes_and_settings_validation():
    s = ServerSettings(base_url="http://h/v1/", model="m")
    assert s.base_url == "http://h/v1"
    assert resolve_route("without", s, "chat", True) == "completions"
    assert resolve_route("with", s, "paper", True) == "completions"
    assert resolve_route("without", ServerSettings(base_url="http://h", model="m", assistant_prefix="deepseek"),
                         "chat", False) == "chat_prefix"
    with pytest.raises(ThinklensError, match="--tokenizer.*--assistant-prefix deepseek"):
        resolve_route("without", s, "chat", False)
    with pytest.raises(ThinklensError, match="assistant-prefix"):
        resolve_route("without", ServerSettings(base_url="http://h", model="m", endpoint="chat"), "chat", True)
    for bad, match in [(dict(base_url="h:80"), "http"), (dict(base_url="http://h/v1/chat/completions"), "API root"),
                       (dict(concurrency=0), "concurrency"), (dict(request_timeout=0), "timeout"),
                       (dict(api_key_env="sk-abc123"), "NAME of an environment variable"),
                       (dict(endpoint="responses"), "endpoint")]:
        with pytest.raises(ThinklensError, match=match) as info:
            ServerSettings(**{"base_url": "http://h/v1", "model": "m", **bad})
        assert "sk-abc123" not in str(info.value)
    with pytest.raises(ThinklensError, match="--model"):
        ServerSettings(base_url="http://h/v1").for_model("")
    with pytest.raises(ThinklensError, match="--base-url"):
        ServerSettings().for_model("m")


@pytest.mark.parametrize("style", ["deepseek", "continue"])
def test_assistant_prefix_requests(tmp_path, style):
    with FakeOpenAI() as fake:
        _collect(fake, tmp_path / "t.jsonl", reasoning="without", assistant_prefix=style, problems=PROBLEMS[:2])
    body = fake.requests[0][2]
    last = body["messages"][-1]
    assert last["role"] == "assistant" and last["content"] == "Okay, I think I have finished thinking.\n</think>"
    if style == "deepseek":
        assert last["prefix"] is True and "continue_final_message" not in body
    else:
        assert body["continue_final_message"] is True and body["add_generation_prompt"] is False
    rec = next(read_records(tmp_path / "t.jsonl"))
    assert rec["completion"] == f"{last['content']}\n\n{ANSWER}{EOS}" and rec["finished"]
    assert rec["prompt"] == [{"role": "user", "content": "Compute 0+0."}] and rec["n_forced_tokens"] is None


def test_parse_chat_message_variants():
    kw = dict(think_open="<think>", think_close="</think>", eos=EOS)
    # vLLM: reasoning keeps its newline, content its blank line; newer vLLM names the field "reasoning"
    assert parse_chat_message({"reasoning": "a\n", "content": "\n\nB"}, "stop", **kw) == (
        "a\n</think>\n\nB", {"reasoning_field": "reasoning", "whitespace_restored": False})
    # cut at max_tokens inside the reasoning: no think-close
    assert parse_chat_message({"reasoning_content": "a b", "content": None}, "length", **kw)[0] == "a b"
    # no separation: delimiters in content, the model wrote the opener itself; EOS string stripped
    text, meta = parse_chat_message({"content": f"<think>\nx\n</think>\n\ny{EOS}"}, "stop", **kw)
    assert text == "x\n</think>\n\ny" and meta["reasoning_field"] is None


def test_cli_never_writes_or_prints_the_key(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("THINKLENS_TEST_KEY", "sk-never-anywhere")
    out = tmp_path / "o.jsonl"
    with FakeOpenAI() as fake:
        rc = main(["collect", "--backend", "openai", "--base-url", fake.url, "--model", "tiny-r1", "--tokenizer",
                   "tiny-r1", "--api-key-env", "THINKLENS_TEST_KEY", "--dataset", "arithmetic", "--limit", "5",
                   "--reasoning", "with", "--output", str(out), "--concurrency", "2", "--quiet"])
    assert rc == 0
    assert all(h["Authorization"] == "Bearer sk-never-anywhere" for _, h, _ in fake.requests)
    captured = capsys.readouterr()
    assert "sk-never" not in captured.out + captured.err and "sk-never" not in out.read_text()
    assert json.loads(captured.out)["n_written"] == 5
    rec = next(read_records(out))
    assert rec["generation"]["server"]["api_key_env"] == "THINKLENS_TEST_KEY" and rec["model"] == "tiny-r1"
    assert main(["collect", "--model", "tiny-r1", "--base-url", fake.url, "--dataset", "arithmetic",
                 "--reasoning", "with", "--output", str(out)]) == 2
    assert "are for --backend openai" in capsys.readouterr().err


@pytest.mark.slow
def test_collector_killed_with_sigkill_resumes_exactly_once(tmp_path):
    out = tmp_path / "t.jsonl"
    with FakeOpenAI(lambda key, attempt, path: ("sleep", 0.15)) as fake:
        cmd = [sys.executable, "-m", "thinklens.cli.main", "collect", "--backend", "openai", "--base-url", fake.url,
               "--model", "tiny-r1", "--dataset", "arithmetic", "--limit", "40", "--reasoning", "with",
               "--output", str(out), "--concurrency", "2", "--quiet"]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        deadline = time.time() + 60
        while time.time() < deadline and (not out.exists() or len(out.read_text().splitlines()) < 6):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        n_before = len(list(read_records(out)))
        assert 6 <= n_before < 40
        done = subprocess.run(cmd, capture_output=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr.decode()[-500:]
    assert json.loads(done.stdout)["n_skipped_done"] == n_before
    ids = Counter(r["id"] for r in read_records(out))
    assert len(ids) == 40 and set(ids.values()) == {1}


def test_assistant_prefix_follows_the_chat_template(tiny_tokenizer):
    from thinklens.empirical.collect_server import plan_items

    s = GenerationSettings(math_instruction=False)
    forced = "Okay, I think I have finished thinking.\n</think>"
    # tiny-r1's template ends in "<think>\n": the prefix is only the forced text; the record prompt is exact
    item = plan_items(PROBLEMS[:1], reasoning="without", route="chat_prefix", settings=s, profile=PROFILE,
                      tokenizer=tiny_tokenizer)[0]
    assert item.prefix == forced and item.prompt.endswith("<｜Assistant｜><think>\n")
    # no tokenizer and a profile whose template does not open the reasoning: the prefix opens it
    item = plan_items(PROBLEMS[:1], reasoning="without", route="chat_prefix", settings=s,
                      profile=get_profile("deepseek-reasoner"))[0]
    assert item.prefix == "<think>\n" + forced and item.prompt == [{"role": "user", "content": "Compute 0+0."}]

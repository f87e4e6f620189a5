"""WildBench judging against a fake OpenAI-compatible server on 127.0.0.1 (loopback only)."""
from __future__ import annotations

import json

import pytest

from tests.conftest import chat_server
from thinklens.cli.main import main
from thinklens.empirical.judge import (
    WILDBENCH_SCORE_V2_TEMPLATE,
    JudgeSettings,
    build_judge_prompt,
    judge_file,
    parse_score,
)
from thinklens.errors import ThinklensError
from thinklens.jsonl import read_records


@pytest.fixture()
def fake_judge():
    """Scores 9 when the answer contains 'good', else 3; fails the first request with HTTP 503 (retry path)."""
    state = {"requests": [], "fail_next": True}

    def reply(path, headers, body):
        state["requests"].append((path, headers, body))
        if state["fail_next"]:
            state["fail_next"] = False
            return 503, None
        prompt = body["messages"][0]["content"]
        response = prompt.split("<|begin_of_response|>")[1].split("<|end_of_response|>")[0]
        score = 9 if "good" in response else 3
        return 200, json.dumps({"strengths": "s", "weaknesses": "w", "score": str(score)})

    with chat_server(reply) as url:
        yield url, state


def _traces(path):
    rows = []
    for i in range(4):
        for mode, word in (("with", "good"), ("without", "bad")):
            rows.append({"id": f"s{i}", "model": "m", "reasoning": mode, "prompt": "<think>\n",
                         "completion": f"thinking about secret{i}\n</think>\n\nA {word} answer.<｜end▁of▁sentence｜>",
                         "metadata": {"conversation": [{"role": "user", "content": "hi"},
                                                       {"role": "assistant", "content": "hello"},
                                                       {"role": "user", "content": f"question {i}"}],
                                      "checklist": ["Is it correct?", "Is it clear?"]}})
    rows.append({"id": "u", "model": "m", "reasoning": "with", "completion": "never closed"})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_prompt_is_the_wildbench_template_filled():
    rec = {"metadata": {"conversation": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                                         {"role": "user", "content": "c"}], "checklist": ["x", "y"]}}
    p = build_judge_prompt(rec, "ANSWER")
    assert "USER: a\n\nASSISTANT: b\n\n" in p and "<|begin_of_query|>\n\nc\n\n" in p
    assert "- x\n- y\n" in p and "ANSWER" in p and "{$" not in p
    assert p.startswith(WILDBENCH_SCORE_V2_TEMPLATE.split("{$history}")[0])


@pytest.mark.parametrize("reply, score", [('{"score": "7"}', 7.0), ('```json\n{"strengths": "", "score": 8}\n```', 8.0),
                                          ('blah "score": "[6]" blah', 6.0)])
def test_parse_score(reply, score):
    assert parse_score(reply) == score


def test_parse_score_rejects_garbage():
    with pytest.raises(ThinklensError):
        parse_score("no score here")
    with pytest.raises(ThinklensError, match="outside"):
        parse_score('{"score": 11}')


def test_judge_file_scores_resumes_and_reports(fake_judge, tmp_path, monkeypatch):
    url, state = fake_judge
    monkeypatch.setenv("FAKE_KEY", "sekret")
    src, out = tmp_path / "t.jsonl", tmp_path / "j.jsonl"
    _traces(src)
    settings = JudgeSettings(url=url, model="judge-1", api_key_env="FAKE_KEY", retries=2)
    summary = judge_file(src, out, settings, progress=False)
    assert summary["n_judged_now"] == 9 and summary["n_errors_now"] == 1
    m = summary["models"]["m"]
    assert m["with"]["n"] == 4 and m["with"]["mean_score"] == 9 and m["with"]["wb_score"] == 8
    assert m["without"]["wb_score"] == -4
    path, headers, body = state["requests"][-1]
    assert path == "/v1/chat/completions" and headers["Authorization"] == "Bearer sekret"
    assert body["model"] == "judge-1" and body["response_format"] == {"type": "json_object"}
    assert all("secret" not in r[2]["messages"][0]["content"] for r in state["requests"])  # reasoning never shown
    n_requests = len(state["requests"])
    again = judge_file(src, out, settings, progress=False)
    assert again["n_judged_now"] == 1  # only the unjudgeable record is retried
    assert len(state["requests"]) == n_requests
    assert {r["id"] for r in read_records(out) if r.get("judge_score")} == {f"s{i}" for i in range(4)}


def test_cli_without_endpoint_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("THINKLENS_JUDGE_URL", raising=False)
    src = tmp_path / "t.jsonl"
    _traces(src)
    assert main(["judge", str(src), "--output", str(tmp_path / "o.jsonl"), "--judge-model", "x"]) == 2
    assert "no judge endpoint configured" in capsys.readouterr().err

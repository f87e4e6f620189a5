"""The shared HTTP client against a scripted loopback server: what is retried, how long it waits, what fails at once."""
from __future__ import annotations

import random
import socket

import pytest

from tests.empirical.fake_openai import FakeOpenAI
from thinklens.empirical.backends.http import (
    HttpStatusError,
    RequestFailed,
    RetryPolicy,
    parse_retry_after,
    post_json,
)
from thinklens.errors import ThinklensError

BODY = {"model": "m", "prompt": "hello"}
FAST = RetryPolicy(max_retries=4, timeout_s=5, backoff_s=0.001, max_backoff_s=0.002)


def _first_n(n, action):
    return lambda key, attempt, path: action if attempt <= n else "ok"


def test_429_storm_honours_retry_after():
    sleeps = []
    with FakeOpenAI(_first_n(3, ("status", 429, {"Retry-After": "2"}))) as fake:
        reply = post_json(fake.url + "/completions", BODY, policy=FAST, sleep=sleeps.append)
    assert reply["choices"][0]["text"].endswith("{7}.")
    assert sleeps == [2.0, 2.0, 2.0] and len(fake.requests) == 4


def test_5xx_retried_with_exponential_backoff_and_jitter():
    sleeps = []
    policy = RetryPolicy(max_retries=5, timeout_s=5, backoff_s=1.0, max_backoff_s=60)
    with FakeOpenAI(_first_n(4, ("status", 503))) as fake:
        post_json(fake.url + "/completions", BODY, policy=policy, sleep=sleeps.append, rng=random.Random(0))
    assert len(sleeps) == 4
    for k, s in enumerate(sleeps):  # equal jitter: between half and all of 2**k seconds
        assert 2 ** k / 2 <= s <= 2 ** k
    assert len(set(sleeps)) == 4


@pytest.mark.parametrize("action", ["malformed", "drop", ("status", 500), ("status", 502)])
def test_transient_failures_are_retried(action):
    with FakeOpenAI(_first_n(2, action)) as fake:
        reply = post_json(fake.url + "/completions", BODY, policy=FAST, sleep=lambda s: None)
    assert "choices" in reply and len(fake.requests) == 3


def test_timeout_is_retried():
    policy = RetryPolicy(max_retries=2, timeout_s=1.0, backoff_s=0.001, max_backoff_s=0.002)
    with FakeOpenAI(_first_n(1, ("sleep", 3.0))) as fake:
        reply = post_json(fake.url + "/completions", BODY, policy=policy)
    assert "choices" in reply and len(fake.requests) == 2


def test_other_4xx_fails_at_once_with_the_servers_explanation(monkeypatch):
    monkeypatch.setenv("FAKE_KEY", "sk-secret-value")
    with FakeOpenAI(lambda key, attempt, path: ("status", 401)) as fake:
        with pytest.raises(HttpStatusError) as info:
            post_json(fake.url + "/completions", BODY, api_key_env="FAKE_KEY", policy=FAST)
    assert len(fake.requests) == 1 and info.value.status == 401
    assert "HTTP 401: scripted 401" in str(info.value) and "sk-secret" not in str(info.value)
    assert fake.requests[0][1]["Authorization"] == "Bearer sk-secret-value"
    assert isinstance(info.value, ThinklensError)


def test_retries_exhausted_and_unreachable():
    with FakeOpenAI(lambda key, attempt, path: ("status", 503)) as fake:
        with pytest.raises(RequestFailed, match="after 5 attempts: HTTP 503") as info:
            post_json(fake.url + "/completions", BODY, policy=FAST)
    assert not info.value.unreachable and len(fake.requests) == 5
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RequestFailed, match="cannot connect") as info:
        post_json(f"http://127.0.0.1:{port}/v1/completions", BODY, policy=FAST)
    assert info.value.unreachable and info.value.attempts == 5


def test_no_key_no_authorization_header(monkeypatch):
    monkeypatch.delenv("UNSET_KEY_VAR", raising=False)
    with FakeOpenAI() as fake:
        post_json(fake.url + "/completions", BODY, api_key_env="UNSET_KEY_VAR", policy=FAST)
    assert "Authorization" not in fake.requests[0][1]


def test_retry_after_forms_and_policy_validation():
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == pytest.approx(10.0)
    assert parse_retry_after("1.5") == 1.5 and parse_retry_after("-3") == 0.0 and parse_retry_after("") is None
    assert RetryPolicy(max_retry_after_s=5).delay(0, 3600, random.Random(0)) == 5
    with pytest.raises(ThinklensError, match="timeout"):
        RetryPolicy(timeout_s=0)
    with pytest.raises(ThinklensError, match="max_retries"):
        RetryPolicy(max_retries=-1)

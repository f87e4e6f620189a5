"""One JSON-over-HTTP client for every OpenAI-compatible server thinklens talks to (generation servers, judges).

Why one client: retries are where remote work loses or duplicates data, so the rules live in one place. A request
is retried on what a later attempt can fix — HTTP 408/409/425/429/5xx, timeouts, refused or reset connections, a
200 whose body is not JSON — with exponential backoff and jitter (a ``Retry-After`` header, in seconds or as an
HTTP date, replaces the computed wait). Any other 4xx is the caller's mistake and fails at once with
:class:`HttpStatusError`, naming the status and the server's explanation. After the last retry
:class:`RequestFailed` says how many attempts were made and what went wrong last.

The API key is read from the environment variable named by the caller at each request and put only in the
``Authorization`` header: it is never stored on an object, written to a file or included in a message. Standard
library only (``urllib``), so a judge or a remote backend needs no extra dependency.
"""
from __future__ import annotations

import email.utils
import http.client
import json
import os
import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from thinklens.errors import ThinklensError

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class HttpStatusError(ThinklensError):
    """A non-retryable HTTP answer (4xx other than 408/409/425/429): retrying the same request cannot help."""

    def __init__(self, url: str, status: int, detail: str) -> None:
        self.url, self.status, self.detail = url, status, detail
        super().__init__(f"POST {url} answered HTTP {status}: {detail}")


class RequestFailed(ThinklensError):
    """Every attempt failed with a retryable error; ``unreachable``: the last one could not connect at all."""

    def __init__(self, url: str, attempts: int, last: str, unreachable: bool = False) -> None:
        self.url, self.attempts, self.last, self.unreachable = url, attempts, last, unreachable
        super().__init__(f"POST {url} failed after {attempts} attempt{'s' * (attempts > 1)}: {last}")


@dataclass(frozen=True)
class RetryPolicy:
    """How long to wait for one answer and how to retry.

    >>> RetryPolicy(max_retries=2, backoff_s=0.5).delay(1, None, random.Random(0)) <= 1.0
    True
    """

    max_retries: int = 5  # retries after the first attempt
    timeout_s: float = 600.0  # socket timeout of one attempt (connect, and each read)
    backoff_s: float = 1.0  # first backoff; doubles per retry
    max_backoff_s: float = 60.0
    max_retry_after_s: float = 600.0  # a server asking for longer than this is waited on for this long

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ThinklensError(f"max_retries must be >= 0, got {self.max_retries}")
        if not self.timeout_s > 0:
            raise ThinklensError(f"request timeout must be > 0 seconds, got {self.timeout_s}")
        if self.backoff_s < 0 or self.max_backoff_s < self.backoff_s:
            raise ThinklensError(f"need 0 <= backoff_s <= max_backoff_s, got {self.backoff_s}, {self.max_backoff_s}")

    def delay(self, retry: int, retry_after: float | None, rng: random.Random) -> float:
        """Seconds to wait before retry number ``retry`` (0-based): the server's ``Retry-After`` when it sent one,
        else exponential backoff with equal jitter (half fixed, half random, so clients do not retry in step)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after_s)
        d = min(self.max_backoff_s, self.backoff_s * 2 ** retry)
        return d / 2 + rng.uniform(0, d / 2)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); None when absent or unreadable.

    >>> parse_retry_after("3"), parse_retry_after(None), parse_retry_after("soon")
    (3.0, None, None)
    """
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def auth_headers(api_key_env: str | None) -> dict[str, str]:
    """JSON headers plus ``Authorization: Bearer KEY`` when ``api_key_env`` names a set environment variable."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    key = os.environ.get(api_key_env) if api_key_env else None
    if key:
        headers["Authorization"] = f"Bearer {key}"
    return headers


def _detail(err: urllib.error.HTTPError) -> str:
    try:
        raw = err.read()[:600].decode("utf-8", errors="replace")
    except (OSError, http.client.HTTPException):
        raw = ""
    try:  # OpenAI-style {"error": {"message": ...}}, FastAPI-style {"detail": ...}
        obj = json.loads(raw)
        if isinstance(obj, dict):
            inner = obj.get("error", obj.get("detail", obj.get("message")))
            if isinstance(inner, dict):
                inner = inner.get("message", inner)
            if inner:
                return " ".join(str(inner).split())[:300]
    except json.JSONDecodeError:
        pass
    return " ".join(raw.split())[:300] or (err.reason if isinstance(err.reason, str) else "no detail")


def post_json(url: str, body: dict[str, Any], *, api_key_env: str | None = None,
              policy: RetryPolicy | None = None, sleep: Callable[[float], None] = time.sleep,
              rng: random.Random | None = None) -> dict[str, Any]:
    """POST ``body`` as JSON to ``url`` and return the decoded JSON object, retrying as the module explains.

    >>> post_json("http://127.0.0.1:9/v1/x", {}, policy=RetryPolicy(max_retries=0, timeout_s=1))
    Traceback (most recent call last):
    ...
    thinklens.empirical.backends.http.RequestFailed: POST http://127.0.0.1:9/v1/x failed after 1 attempt: ...
    """
    policy = policy or RetryPolicy()
    rng = rng or random.Random()
    data = json.dumps(body, ensure_ascii=False).encode("utf-8")
    last, unreachable = "no attempt", False
    for attempt in range(policy.max_retries + 1):
        retry_after: float | None = None
        try:
            req = urllib.request.Request(url, data=data, headers=auth_headers(api_key_env), method="POST")
            with urllib.request.urlopen(req, timeout=policy.timeout_s) as resp:
                raw = resp.read()
            try:
                reply = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise _Malformed(f"malformed JSON in a 200 answer ({err}): {raw[:80]!r}") from err
            if not isinstance(reply, dict):
                raise _Malformed(f"expected a JSON object, got {type(reply).__name__}")
            return reply
        except urllib.error.HTTPError as err:
            if err.code not in RETRY_STATUS:
                raise HttpStatusError(url, err.code, _detail(err)) from None
            retry_after = parse_retry_after(err.headers.get("Retry-After") if err.headers else None)
            last, unreachable = f"HTTP {err.code}: {_detail(err)}", False
        except urllib.error.URLError as err:  # refused, DNS, reset while connecting; timeouts arrive wrapped too
            reason = err.reason
            last = f"timed out after {policy.timeout_s:g} s" if isinstance(reason, TimeoutError) \
                else f"cannot connect: {reason}"
            unreachable = isinstance(reason, ConnectionRefusedError)
        except TimeoutError:
            last, unreachable = f"timed out after {policy.timeout_s:g} s", False
        except (ConnectionError, http.client.HTTPException) as err:  # reset, dropped, torn answer
            last, unreachable = f"connection dropped: {type(err).__name__}: {err}".rstrip(": "), False
        except _Malformed as err:
            last, unreachable = str(err), False
        if attempt < policy.max_retries:
            sleep(policy.delay(attempt, retry_after, rng))
    raise RequestFailed(url, policy.max_retries + 1, last, unreachable)


class _Malformed(Exception):
    pass

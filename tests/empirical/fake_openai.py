"""A scripted OpenAI-compatible server on 127.0.0.1 (loopback only) for the error paths of the remote backend.

``behave(key, attempt, path)`` decides each answer: ``key`` is the request's user message or prompt text, ``attempt``
counts the requests with that key (1-based). Actions: ``"ok"``; ``("status", code, headers)``; ``"malformed"`` (200
with a body that is not JSON); ``("sleep", seconds)`` then ok; ``"drop"`` (close the connection without answering).
The real-server tests (``test_openai_server.py``) cover what a fake cannot: chat templates, tokenization, decoding.
"""
from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

ANSWER = "The answer is \\boxed{7}."


def _key(body: dict[str, Any]) -> str:
    if "prompt" in body:
        return str(body["prompt"])
    return str(body["messages"][0]["content"])


class FakeOpenAI:
    def __init__(self, behave: Callable[[str, int, str], Any] | None = None) -> None:
        self.behave = behave or (lambda key, attempt, path: "ok")
        self.requests: list[tuple[str, dict[str, str], dict[str, Any]]] = []
        self.attempts: Counter = Counter()
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: Any) -> None:
                pass

            def _send(self, code: int, data: bytes, headers: dict[str, str] | None = None) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = _key(body)
                with fake.lock:
                    fake.requests.append((self.path, dict(self.headers), body))
                    fake.attempts[key] += 1
                    attempt = fake.attempts[key]
                action = fake.behave(key, attempt, self.path)
                if isinstance(action, tuple) and action[0] == "sleep":
                    time.sleep(action[1])
                    action = "ok"
                if action == "drop":
                    self.close_connection = True
                    return
                if action == "malformed":
                    self._send(200, b'{"choices": [{"text": "cut')
                    return
                if isinstance(action, tuple) and action[0] == "status":
                    self._send(action[1], json.dumps({"error": {"message": f"scripted {action[1]}"}}).encode(),
                               action[2] if len(action) > 2 else None)
                    return
                usage = {"prompt_tokens": len(key), "completion_tokens": 30, "total_tokens": len(key) + 30}
                if self.path.endswith("/chat/completions"):
                    if body["messages"][-1]["role"] == "assistant":  # assistant-prefix continuation
                        message = {"role": "assistant", "content": "\n\n" + ANSWER}
                    else:
                        message = {"role": "assistant", "reasoning_content": f"thinking about {key}",
                                   "content": ANSWER}
                    reply = {"choices": [{"index": 0, "finish_reason": "stop", "message": message}], "usage": usage}
                elif self.path.endswith("/completions"):
                    reply = {"choices": [{"index": 0, "finish_reason": "stop", "text": "\n\n" + ANSWER}],
                             "usage": usage}
                else:
                    self._send(404, b'{"detail": "Not Found"}')
                    return
                self._send(200, json.dumps(reply).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> FakeOpenAI:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

"""Generation through any OpenAI-compatible server: vLLM ``serve``, SGLang, ``transformers serve``, DeepSeek's API.

Why a server backend: the study spans 1.5B to 671B models, and the largest (full DeepSeek-R1, the paper's own
stage-1 comparison) are reached only through an API or a served cluster. This module speaks the two standard
endpoints and turns each answer into the text a local run would have written, so the records are the same:

* **with reasoning** — ``POST /chat/completions`` with the problem as the user message. Servers that separate
  the reasoning return it in ``reasoning_content`` (DeepSeek's API, vLLM's ``--reasoning-parser deepseek_r1``,
  ``transformers serve``) or ``reasoning`` (newer vLLM); otherwise it sits in ``content`` between the think
  delimiters. Either way the continuation is rebuilt as ``reasoning + </think> + answer``; when the server
  stripped the whitespace around ``</think>`` (``transformers serve`` does), R1's own ``"\\n</think>\\n\\n"`` is
  put back and the record says so (``metadata.whitespace_restored``).
* **without reasoning** (the paper's forced thinking) — ``POST /completions`` with the exact prompt, rendered
  locally with the model's tokenizer and ending in the forced finished-thinking text; or, where a server has no raw
  completions (DeepSeek's API), assistant-prefix continuation on the chat endpoint: ``"prefix": true`` on a final
  assistant message (DeepSeek, base URL ``https://api.deepseek.com/beta``) or ``continue_final_message`` (vLLM,
  SGLang; it needs a chat template that keeps the assistant's text — R1's templates cut everything before
  ``</think>``, so use ``/completions`` there).

Requests carry only standard OpenAI fields (``transformers serve`` rejects unknown ones with HTTP 422). The
transport, retries and API-key handling are :mod:`thinklens.empirical.backends.http`; the concurrent, resumable
collection loop is :mod:`thinklens.empirical.collect_server`.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from thinklens.empirical.backends.http import RetryPolicy, post_json
from thinklens.errors import ThinklensError
from thinklens.options import opt

ENDPOINTS = ("auto", "chat", "completions")
ASSISTANT_PREFIX_STYLES = ("deepseek", "continue")
# R1's whitespace around think-close ("...last step.\n</think>\n\nThe answer ..."): put back when a server strips it
R1_BEFORE_CLOSE, R1_AFTER_CLOSE = "\n", "\n\n"
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class ServerSettings:
    """Server (--backend openai): where and how to reach an OpenAI-compatible server.

    Stored (without any key) in every record's ``generation.server``. Unset (no ``base_url``) unless generation runs
    on a server; ``model`` is the served name, filled in from ``--model`` by :meth:`for_model`.

    >>> ServerSettings(base_url="http://127.0.0.1:8000/v1", model="m").url("completions")
    'http://127.0.0.1:8000/v1/completions'
    """

    base_url: str | None = opt(None, "API root of the server, e.g. http://127.0.0.1:8000/v1 or "
                               "https://api.deepseek.com (--model is then the served model name)", metavar="URL")
    model: str | None = opt(None, "the served model name sent in each request", cli=False)
    tokenizer: str | None = opt(None, "the served model's tokenizer or a local copy of the model (hub id, directory or "
                                "tiny-r1): exact prompts in the records, /completions for --reasoning without, local "
                                "token counts; `thinklens run` loads it for the white-box stages", metavar="MODEL")
    api_key_env: str | None = opt(None, "NAME of the environment variable holding the API key (never the key)",
                                  metavar="VAR")
    concurrency: int = opt(4, "requests in flight")
    request_timeout: float = opt(1800.0, "seconds per request attempt (long R1 traces take minutes)", metavar="S")
    max_retries: int = opt(5, "retries of a request on 429/5xx, timeouts and dropped connections")
    endpoint: str = opt("auto", "auto: /chat/completions with reasoning, /completions (exact prompt + forced "
                        "thinking) without; or one endpoint for both", choices=ENDPOINTS)
    assistant_prefix: str | None = opt(None, "--reasoning without on the chat endpoint: continue the forced thinking "
                                       "as an assistant prefix (deepseek: DeepSeek's beta 'prefix': true; continue: "
                                       "vLLM/SGLang continue_final_message)", choices=ASSISTANT_PREFIX_STYLES)
    backoff_s: float = opt(1.0, "first retry wait; doubles per retry, capped at 60 s", cli=False)

    def __post_init__(self) -> None:
        if self.base_url is None:  # unset: generation does not run on a server
            return
        self.base_url = self.base_url.strip().rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise ThinklensError(f"--base-url must start with http:// or https://, got {self.base_url!r}")
        if self.base_url.endswith("/completions"):
            raise ThinklensError(f"--base-url is the API root (e.g. http://127.0.0.1:8000/v1), not an endpoint: "
                                 f"{self.base_url!r}")
        if self.api_key_env is not None and not _ENV_NAME.match(self.api_key_env):
            # never echo the value: it may be the key itself, pasted by mistake
            raise ThinklensError("--api-key-env takes the NAME of an environment variable (e.g. DEEPSEEK_API_KEY), "
                                 "not the key itself")
        if not 1 <= self.concurrency <= 512:
            raise ThinklensError(f"concurrency must be in 1..512, got {self.concurrency}")
        if self.endpoint not in ENDPOINTS:
            raise ThinklensError(f"endpoint must be one of {ENDPOINTS}, got {self.endpoint!r}")
        if self.assistant_prefix is not None and self.assistant_prefix not in ASSISTANT_PREFIX_STYLES:
            raise ThinklensError(f"assistant_prefix must be one of {ASSISTANT_PREFIX_STYLES}, got "
                                 f"{self.assistant_prefix!r}")
        self.policy()  # validates timeout, retries, backoff

    @property
    def is_set(self) -> bool:
        return self.base_url is not None

    def for_model(self, name: str) -> ServerSettings:
        """These settings for the served model ``name``; one line when ``--base-url`` is missing."""
        if not self.is_set:
            raise ThinklensError("--backend openai needs --base-url (the server's API root, e.g. "
                                 "http://127.0.0.1:8000/v1)")
        if not name:
            raise ThinklensError("the openai backend needs --model: the name the server serves the model under")
        return replace(self, model=name)

    def policy(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.max_retries, timeout_s=self.request_timeout, backoff_s=self.backoff_s,
                           max_backoff_s=max(60.0, self.backoff_s))

    def url(self, endpoint: str) -> str:
        return f"{self.base_url}/{endpoint}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ServerReply:
    """One answer, as the continuation a local run would have generated after the prompt (+ forced text)."""

    text: str  # without the EOS string
    stopped_at_eos: bool  # finish_reason "stop" (we send no stop strings, so only EOS stops)
    finish_reason: str | None
    usage: dict[str, Any] | None
    meta: dict[str, Any] = field(default_factory=dict)


def _strip_eos(text: str, eos: str | None) -> str:
    while eos and text.endswith(eos):
        text = text[: -len(eos)]
    return text


def join_reasoning(reasoning: str, answer: str | None, think_close: str) -> tuple[str, bool]:
    """``reasoning + think_close + answer`` with R1's whitespace where the server stripped it; returns the text and
    whether whitespace was put back. ``answer`` None: the reasoning never closed.

    >>> join_reasoning("1+1=2", "The answer is 2.", "</think>")
    ('1+1=2\\n</think>\\n\\nThe answer is 2.', True)
    >>> join_reasoning("1+1=2\\n", "\\n\\nThe answer is 2.", "</think>")
    ('1+1=2\\n</think>\\n\\nThe answer is 2.', False)
    """
    if answer is None:
        return reasoning, False
    before = "" if not reasoning or reasoning[-1].isspace() else R1_BEFORE_CLOSE
    after = "" if not answer or answer[0].isspace() else R1_AFTER_CLOSE
    return reasoning + before + think_close + after + answer, bool(before or after)


def parse_chat_message(message: dict[str, Any], finish_reason: str | None, *, think_open: str, think_close: str,
                       eos: str | None, answer_only: bool = False) -> tuple[str, dict[str, Any]]:
    """The continuation after a prompt ending in think-open + newline, from a chat ``message``.

    ``answer_only``: the prompt already closed the reasoning (assistant-prefix continuation), so whatever the server
    calls reasoning or content is all answer.

    >>> parse_chat_message({"reasoning_content": "2+2=4", "content": "It is 4."}, "stop", think_open="<think>",
    ...                    think_close="</think>", eos=None)[0]
    '2+2=4\\n</think>\\n\\nIt is 4.'
    """
    reasoning = message.get("reasoning_content")
    field_name = "reasoning_content"
    if reasoning is None:
        reasoning, field_name = message.get("reasoning"), "reasoning"
    content = message.get("content")
    content = _strip_eos(content, eos) if isinstance(content, str) else None
    reasoning = _strip_eos(reasoning, eos) if isinstance(reasoning, str) else None
    if answer_only:
        return (reasoning or "") + (content or ""), {"reasoning_field": field_name if reasoning else None}
    if reasoning is not None:  # the server split the reasoning off
        answer = content if content else None  # no answer: the reasoning did not close (cut at max_tokens)
        text, restored = join_reasoning(reasoning, answer, think_close)
        return text, {"reasoning_field": field_name, "whitespace_restored": restored}
    text = content or ""
    for opener in (think_open + "\n", think_open):  # the model wrote the opener itself (template without it)
        if text.startswith(opener):
            text = text[len(opener):]
            break
    return text, {"reasoning_field": None, "whitespace_restored": False}


class OpenAIBackend:
    """Sends one request per problem and parses the answer (thread-safe: no state beyond settings).

    >>> backend = OpenAIBackend(ServerSettings(base_url="http://127.0.0.1:9/v1", model="m"), think_open="<think>",
    ...                         think_close="</think>", eos="<｜end▁of▁sentence｜>")
    >>> backend.name
    'openai'
    """

    name = "openai"

    def __init__(self, server: ServerSettings, *, think_open: str, think_close: str, eos: str | None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.server, self.eos, self.sleep = server, eos, sleep
        self.think_open, self.think_close = think_open, think_close

    def _sampling(self, settings: Any, seed: int) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.server.model, "max_tokens": int(settings.max_new_tokens),
                                "temperature": float(settings.temperature)}
        if settings.temperature > 0:  # greedy ignores top_p and the seed, as the local backends do
            body.update(top_p=float(settings.top_p), seed=int(seed))
        return body

    def _post(self, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
        return post_json(self.server.url(endpoint), body, api_key_env=self.server.api_key_env,
                         policy=self.server.policy(), sleep=self.sleep)

    @staticmethod
    def _choice(reply: dict[str, Any], url: str) -> dict[str, Any]:
        choices = reply.get("choices")
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            raise ThinklensError(f"{url} answered without choices: {str(reply)[:200]}")
        return choices[0]

    def chat(self, messages: list[dict[str, Any]], settings: Any, seed: int, *,
             prefix: str | None = None, answer_only: bool | None = None) -> ServerReply:
        """Chat completion of ``messages``; with ``prefix``, the server continues an assistant message that
        begins with it (``server.assistant_prefix`` says how), and the reply is the text after the prefix.
        ``answer_only`` (default: whether a prefix is given): the prefix closed the reasoning, so the reply is all
        answer; False for a prefix that only opens it (prompted thinking's think-open)."""
        body = self._sampling(settings, seed)
        msgs = [dict(m) for m in messages]
        if prefix is not None:
            if self.server.assistant_prefix == "deepseek":
                msgs.append({"role": "assistant", "content": prefix, "prefix": True})
            elif self.server.assistant_prefix == "continue":
                msgs.append({"role": "assistant", "content": prefix})
                body.update(continue_final_message=True, add_generation_prompt=False)
            else:
                raise ThinklensError("an assistant prefix needs assistant_prefix = deepseek or continue")
        body["messages"] = msgs
        reply = self._post("chat/completions", body)
        choice = self._choice(reply, self.server.url("chat/completions"))
        message = choice.get("message")
        if not isinstance(message, dict):
            raise ThinklensError(f"{self.server.url('chat/completions')} answered without a message")
        finish = choice.get("finish_reason")
        text, meta = parse_chat_message(message, finish, think_open=self.think_open, think_close=self.think_close,
                                        eos=self.eos,
                                        answer_only=prefix is not None if answer_only is None else answer_only)
        return ServerReply(text, finish == "stop", finish, reply.get("usage"), {**meta, "endpoint": "chat"})

    def complete(self, prompt: str, settings: Any, seed: int) -> ServerReply:
        """Raw completion of the exact ``prompt`` text (``/completions``)."""
        body = self._sampling(settings, seed)
        body["prompt"] = prompt
        reply = self._post("completions", body)
        choice = self._choice(reply, self.server.url("completions"))
        text = choice.get("text")
        if not isinstance(text, str):
            raise ThinklensError(f"{self.server.url('completions')} answered without text")
        finish = choice.get("finish_reason")
        return ServerReply(_strip_eos(text, self.eos), finish == "stop", finish, reply.get("usage"),
                           {"endpoint": "completions"})

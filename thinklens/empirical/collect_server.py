"""Collecting traces through an OpenAI-compatible server: concurrent, resumable, nothing lost.

Why its own loop: a server answers one problem per request and is slow per request but parallel, so a pool of
``server.concurrency`` threads keeps that many requests in flight while the main thread writes each record the
moment its answer arrives (:class:`thinklens.jsonl.JsonlWriter`: appended and flushed, so SIGKILL loses at most
the requests in flight). Prompts, forced thinking and the record schema are those of
:mod:`thinklens.empirical.collect`, so ``grade``, ``evaluate`` and ``attention`` read the files unchanged.

Failures: a request that still fails after its retries becomes an error record (``{"id", "error", ...}``) and the
batch goes on; the next run of the same command moves error records to ``OUTPUT.errors`` (a log) and retries those
problems, so every id ends up exactly once in OUTPUT. The first request runs alone: if the server rejects it (wrong
URL, model name or key, no ``/completions``) the run stops with one line that says what to change. A server that
stops answering mid-run (connections refused several times in a row) ends the run after writing everything that
finished; rerunning the command continues.
"""
from __future__ import annotations

import json
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from thinklens.empirical.backends.http import HttpStatusError, RequestFailed
from thinklens.empirical.backends.openai import OpenAIBackend, ServerReply, ServerSettings
from thinklens.empirical.collect import (
    REASONING_MODES,
    CollectSummary,
    GenerationSettings,
    _batch_seed,
    build_prompt,
    forced_thinking,
    record_hint,
)
from thinklens.empirical.thinking import chat_messages, check_server_settings
from thinklens.errors import ThinklensError
from thinklens.jsonl import ResumableOutput, repair_torn_tail
from thinklens.profiles import Profile

FATAL_STATUS = (401, 403, 404, 405)  # every later request would get the same answer
ERRORS_SUFFIX = ".errors"  # OUTPUT.errors: error records of earlier runs, kept when their problems are retried


def retire_error_records(path: str | Path) -> int:
    """Move the error records of ``path`` (records with ``error`` and no ``completion``) to ``PATH.errors`` so that
    their problems run again; returns how many moved. The file is rewritten atomically (temp file + rename), after
    the moved lines are safely in the log, so a kill at any point loses nothing.

    >>> retire_error_records("/nonexistent/traces.jsonl")
    0
    """
    path = Path(path)
    if not path.exists():
        return 0
    repair_torn_tail(path)
    keep: list[bytes] = []
    retired: list[bytes] = []
    with path.open("rb") as f:
        for raw in f:
            try:
                rec = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError):
                rec = None
            is_error = isinstance(rec, dict) and rec.get("error") is not None and "completion" not in rec
            (retired if is_error else keep).append(raw)
    if not retired:
        return 0
    with open(str(path) + ERRORS_SUFFIX, "ab") as log:
        log.writelines(retired)
        log.flush()
        os.fsync(log.fileno())
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.writelines(keep)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(retired)


def resolve_route(reasoning: str, server: ServerSettings, prompt_style: str, have_tokenizer: bool) -> str:
    """Which request a problem becomes: ``chat``, ``completions`` (exact prompt text) or ``chat_prefix``
    (assistant-prefix continuation). Raises with the alternatives when the combination cannot work.

    >>> resolve_route("with", ServerSettings(base_url="http://h/v1", model="m"), "chat", False)
    'chat'
    """
    no_tok = ("the /completions route sends the exact prompt text, rendered and counted with the model's tokenizer: "
              "pass --tokenizer NAME_OR_PATH (the served model's hub id or directory)")
    no_prefix = ("--reasoning without on the chat endpoint needs assistant-prefix continuation: "
                 "--assistant-prefix deepseek (DeepSeek's API, base URL https://api.deepseek.com/beta) or continue "
                 "(vLLM/SGLang continue_final_message); or use /completions with --tokenizer")
    if server.endpoint == "completions" or (server.endpoint == "auto" and prompt_style == "paper"):
        if not have_tokenizer:
            raise ThinklensError(no_tok)
        return "completions"
    if prompt_style == "paper":
        raise ThinklensError("--prompt-style paper bypasses the chat template, so it needs the /completions endpoint "
                             "(--endpoint completions or auto)")
    if reasoning == "with":
        return "chat"
    if server.assistant_prefix:
        return "chat_prefix"
    if server.endpoint == "chat":
        raise ThinklensError(no_prefix)
    if not have_tokenizer:
        raise ThinklensError(f"--reasoning without through a server: {no_tok}; or {no_prefix.split(': ', 1)[1]}")
    return "completions"


@dataclass
class _Item:
    problem: dict[str, Any]
    prompt: str | list[dict[str, Any]]  # the record's prompt: exact text with a tokenizer, else the chat messages
    forced: str
    route: str
    request: str | list[dict[str, Any]]  # /completions text, or chat messages
    prefix: str | None
    expected_prompt_tokens: int | None  # what the server should count, when we can tell
    seed: int


def _adds_bos(tokenizer: Any) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    ids = tokenizer("a", add_special_tokens=True)["input_ids"] if bos is not None else []
    return bool(ids) and ids[0] == bos


def plan_items(problems: list[dict[str, Any]], *, reasoning: str, route: str, settings: GenerationSettings,
               profile: Profile, tokenizer: Any = None, server_prefix: str | None = None) -> list[_Item]:
    """One request per problem, with the record prompt and the server-side prompt length we expect;
    ``server_prefix``: the server's assistant-prefix style (needed to prefill a prompted think-open on chat)."""
    forced = forced_thinking(profile, settings.without_mode) if reasoning == "without" else ""
    adds_bos = tokenizer is not None and _adds_bos(tokenizer)
    thinking = settings.thinking or "native"
    items = []
    for p in problems:
        question = p["problem"] + (profile.math_instruction if settings.math_instruction else "")
        messages = chat_messages(question, profile, thinking)  # prompted: the instruction as a system message
        prompt: str | list[dict[str, Any]] = messages
        expected = None
        if tokenizer is not None:
            prompt = build_prompt(p["problem"], tokenizer, profile, math_instruction=settings.math_instruction,
                                  prompt_style=settings.prompt_style, thinking=thinking)
        if route == "completions":
            assert isinstance(prompt, str)
            request: str | list[dict[str, Any]] = prompt + forced
            bos = getattr(tokenizer, "bos_token", None)
            if adds_bos and bos and request.startswith(bos):  # the server's tokenizer adds it: never send it twice
                request = request[len(bos):]
            expected = len(tokenizer(prompt + forced, add_special_tokens=False)["input_ids"])  # BOS once
        else:
            request = messages
            opener = profile.think_open + "\n"
            written = opener if profile.prompt_opens_think else ""  # what the chat template writes of it
            if tokenizer is not None and getattr(tokenizer, "chat_template", None):
                rendered = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
                written = next((o for o in (opener, profile.think_open) if rendered.endswith(o)), "")
                if route == "chat":
                    expected = len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
        prefix = None
        if route == "chat_prefix":  # the assistant's text after the generation prompt, up to the forced </think>
            prefix = opener[len(written):] + forced
        elif route == "chat" and thinking == "prompted" and written != opener:  # prefill the think-open, as locally
            if not server_prefix:
                raise ThinklensError("--thinking prompted through the chat endpoint prefills the think-open as an "
                                     "assistant prefix: add --assistant-prefix continue (vLLM/SGLang) or deepseek, "
                                     "or use --endpoint completions with --tokenizer")
            prefix, expected = opener[len(written):], None
        items.append(_Item(p, prompt, forced, route, request, prefix, expected,
                           _batch_seed(settings.seed, [str(p["id"])])))
    return items


def _run(backend: OpenAIBackend, item: _Item, settings: GenerationSettings) -> ServerReply:
    if item.route == "completions":
        assert isinstance(item.request, str)
        return backend.complete(item.request, settings, item.seed)
    assert isinstance(item.request, list)
    return backend.chat(item.request, settings, item.seed, prefix=item.prefix, answer_only=item.route == "chat_prefix")


def _base(item: _Item, model_name: str, reasoning: str, settings: GenerationSettings,
          server: ServerSettings) -> tuple[dict[str, Any], dict[str, Any]]:
    p = item.problem
    extra = {k: v for k, v in p.items() if k not in ("id", "problem", "answer", "dataset", "hint")}
    head = {"id": str(p["id"]), "model": model_name, "reasoning": reasoning, **record_hint(p, item.prompt)}
    generation = {**settings.to_dict(), "server": server.to_dict()}
    return head, {"gold_answer": p.get("answer"), "problem": p["problem"], "dataset": p.get("dataset"),
                  "generation": generation, "metadata": extra}


def server_record(item: _Item, reply: ServerReply, *, model_name: str, reasoning: str, settings: GenerationSettings,
                  server: ServerSettings, profile: Profile, tokenizer: Any = None) -> dict[str, Any]:
    """The stage-1 trace record (same fields as a local run, plus ``usage`` as the server returned it)."""
    head, tail = _base(item, model_name, reasoning, settings, server)
    eos = (getattr(tokenizer, "eos_token", None) if tokenizer is not None else None) or profile.eos_token or ""
    completion = item.forced + reply.text + (eos if reply.stopped_at_eos else "")
    closed = profile.think_close in item.forced + reply.text
    usage = reply.usage if isinstance(reply.usage, dict) else {}
    if tokenizer is not None:
        def count(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0

        assert isinstance(item.prompt, str)
        n_prompt, n_forced = count(item.prompt), count(item.forced)
        n_completion = count(reply.text) + int(reply.stopped_at_eos)
    else:
        n_prompt, n_forced, n_completion = usage.get("prompt_tokens"), None, usage.get("completion_tokens")
    meta = {**tail.pop("metadata"), "finish_reason": reply.finish_reason, **reply.meta}
    if item.prefix is not None:
        meta["assistant_prefix"] = item.prefix
    server_n = usage.get("prompt_tokens")
    if item.expected_prompt_tokens is not None and server_n is not None and server_n != item.expected_prompt_tokens:
        meta["prompt_tokens_mismatch"] = {"local": item.expected_prompt_tokens, "server": server_n}
    return {**head, "prompt": item.prompt, "completion": completion, **tail,
            "finished": bool(reply.stopped_at_eos and closed), "stopped_at_eos": reply.stopped_at_eos,
            "reasoning_closed": closed, "thinking": settings.thinking,
            "without_mode": settings.without_mode if reasoning == "without" else None, "forced_close": False,
            "n_prompt_tokens": n_prompt, "n_forced_tokens": n_forced,
            "n_completion_tokens": n_completion, "usage": reply.usage, "metadata": meta}


def error_record(item: _Item, err: Exception, *, model_name: str, reasoning: str, settings: GenerationSettings,
                 server: ServerSettings) -> dict[str, Any]:
    """What a problem leaves when its request failed for good: retried by the next run of the same command."""
    head, tail = _base(item, model_name, reasoning, settings, server)
    return {**head, "error": str(err), "error_type": type(err).__name__, **tail}


def _fatal(err: HttpStatusError, route: str, server: ServerSettings) -> ThinklensError:
    if route == "completions" and err.status in (400, 404, 405, 422):
        return ThinklensError(
            f"the server at {server.base_url} did not take a raw /completions request (HTTP {err.status}: "
            f"{err.detail}), which --reasoning without uses to continue the forced thinking; use --endpoint chat "
            "--assistant-prefix deepseek (DeepSeek's API, base URL https://api.deepseek.com/beta) or "
            "--assistant-prefix continue (vLLM/SGLang continue_final_message), or generate locally with "
            "--backend transformers or vllm")
    if err.status in (401, 403):
        return ThinklensError(f"{err} — the server refused the credentials: put the key in the environment "
                              f"variable named by --api-key-env (now {server.api_key_env or 'not set'})")
    if err.status in (404, 405):
        return ThinklensError(f"{err} — is --base-url the API root (e.g. http://127.0.0.1:8000/v1)?")
    return ThinklensError(f"the server rejected the first request, so every request would fail: {err}")


def collect_server(problems: list[dict[str, Any]], *, reasoning: str, output: str | Path, server: ServerSettings,
                   settings: GenerationSettings | None = None, tokenizer: Any = None, profile: Profile | None = None,
                   model_name: str | None = None, backend: OpenAIBackend | None = None,
                   progress: bool = True) -> CollectSummary:
    """Generate one trace per problem through ``server`` and append it to ``output``, skipping finished ids and
    retrying earlier error records (see the module docstring). ``tokenizer``: the served model's tokenizer (a
    loaded object) for exact prompts, ``/completions`` and local token counts."""
    from thinklens.profiles import get_profile
    from thinklens.progress import bar as progress_bar

    if reasoning not in REASONING_MODES:
        raise ThinklensError(f"reasoning must be 'with' or 'without', got {reasoning!r}")
    settings = replace(settings or GenerationSettings(backend="openai"), backend="openai")
    if server.api_key_env and not os.environ.get(server.api_key_env):
        raise ThinklensError(f"environment variable {server.api_key_env} (--api-key-env) is not set: export the API "
                             "key there")
    profile = profile or get_profile(server.tokenizer or server.model)
    if not settings.is_resolved:
        settings = settings.resolved(profile, problems[0].get("dataset") if problems else None)
    check_server_settings(settings)
    model_name = model_name or server.model
    route = resolve_route(reasoning, server, settings.prompt_style, tokenizer is not None)
    eos = (getattr(tokenizer, "eos_token", None) if tokenizer is not None else None) or profile.eos_token
    backend = backend or OpenAIBackend(server, think_open=profile.think_open, think_close=profile.think_close, eos=eos)
    n_retired = retire_error_records(output)
    out = ResumableOutput(output, done_if=lambda r: "error" not in r)
    todo = list(out.pending_items(problems, key=lambda p: str(p["id"]), where="problems"))
    items = plan_items(todo, reasoning=reasoning, route=route, settings=settings, profile=profile, tokenizer=tokenizer,
                       server_prefix=server.assistant_prefix)
    summary = CollectSummary(str(output), len(problems), out.report.n_done_before, 0, 0, 0, 0.0, resume=out.report)
    if n_retired:
        summary.warnings.append(f"{n_retired} error record(s) of an earlier run moved to {output}{ERRORS_SUFFIX}; "
                                "their problems run again")
    kw = dict(model_name=model_name, reasoning=reasoning, settings=settings, server=server)
    t0 = time.perf_counter()
    bar = progress_bar(total=len(items), unit="problem", disable=not progress, desc=f"collect {reasoning} (server)")
    streak_limit, streak = max(3, server.concurrency + 1), 0
    mismatch_noted = False

    def write(writer: ResumableOutput, item: _Item, fut: Future, first: bool = False, draining: bool = False) -> None:
        nonlocal streak, mismatch_noted
        try:
            reply = fut.result()
        except HttpStatusError as err:
            if (first or err.status in FATAL_STATUS) and not draining:
                raise _fatal(err, item.route, server) from None
            rec, streak = error_record(item, err, **kw), 0
        except RequestFailed as err:
            if first and err.unreachable:
                raise ThinklensError(f"cannot reach the server: {err}") from None
            rec = error_record(item, err, **kw)
            streak = streak + 1 if err.unreachable else 0
        except ThinklensError as err:  # an answer we cannot read (no choices, no text)
            rec, streak = error_record(item, err, **kw), 0
        else:
            rec, streak = server_record(item, reply, profile=profile, tokenizer=tokenizer, **kw), 0
        writer.write(rec)
        summary.n_written += 1
        if "error" in rec:
            summary.n_failed += 1
            summary.errors.append(f"{rec['id']}: {rec['error']}")
        else:
            summary.n_finished += int(rec["finished"])
            summary.n_generated_tokens += int(rec.get("n_completion_tokens") or 0)
            mm = rec["metadata"].get("prompt_tokens_mismatch")
            if mm and not mismatch_noted:
                mismatch_noted = True
                summary.warnings.append(
                    f"{rec['id']}: the server counted {mm['server']} prompt tokens where the local tokenizer counts "
                    f"{mm['local']}: it renders prompts differently (chat template, BOS), so records' prompt may not "
                    "be what the model saw")
        bar.update(1)

    with out as writer, ThreadPoolExecutor(server.concurrency, "thinklens-openai") as pool:
        if items:  # the first request alone: a server that rejects it stops the run before the others go out
            write(writer, items[0], pool.submit(_run, backend, items[0], settings), first=True)
        futures = {pool.submit(_run, backend, it, settings): it for it in items[1:]}
        written: set[Future] = set()
        try:
            for fut in as_completed(futures):
                write(writer, futures[fut], fut)
                written.add(fut)
                if streak >= streak_limit:
                    raise ThinklensError(
                        f"the server at {server.base_url} stopped answering ({streak} requests in a row could not "
                        f"connect); {summary.n_written} records written to {output}: rerun the same command when "
                        "it is back")
        except BaseException:
            for f in futures:  # nothing new goes out ...
                f.cancel()
            for f, it in futures.items():  # ... and what was in flight is still written: nothing finished is lost
                if f not in written and not f.cancelled():
                    write(writer, it, f, draining=True)
            raise
    bar.close()
    summary.seconds = time.perf_counter() - t0
    summary.errors = out.report.messages() + summary.errors
    return summary


def collect_server_dataset(dataset: str, *, reasoning: str, output: str | Path, server: ServerSettings,
                           settings: GenerationSettings | None = None, dataset_file: str | None = None,
                           limit: int | None = None, profile: str | None = None, model_name: str | None = None,
                           progress: bool = True) -> CollectSummary:
    """Load the problems (and ``server.tokenizer``), then :func:`collect_server`: what ``thinklens collect
    --backend openai`` runs, the counterpart of :func:`thinklens.empirical.collect.collect_dataset`."""
    from thinklens.empirical.datasets import load_problems
    from thinklens.models import load_tokenizer
    from thinklens.profiles import get_profile

    settings = replace(settings or GenerationSettings(), backend="openai")
    errors: list[str] = []
    problems = load_problems(dataset, dataset_file, limit=limit, seed=settings.seed, errors=errors)
    tokenizer = load_tokenizer(server.tokenizer) if server.tokenizer else None
    prof = get_profile(profile) if profile else get_profile(server.tokenizer or server.model)
    summary = collect_server(problems, reasoning=reasoning, output=output, server=server,
                             settings=settings.resolved(prof, dataset), tokenizer=tokenizer, profile=prof,
                             model_name=model_name, progress=progress)
    summary.errors = [f"skipped {e}" for e in errors] + summary.errors
    return summary

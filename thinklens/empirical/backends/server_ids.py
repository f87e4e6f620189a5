"""The generation-backend protocol (``generate(prompt_ids_list, settings, seed)``) over an OpenAI-compatible server.

Why: counterfactual resampling (:mod:`thinklens.steps.resampling`) continues token-id prefixes of a trace at every
cut point. A server takes text, so each prefix is decoded to its exact text (special tokens kept) and sent to
``/completions``, at most ``concurrency`` requests in flight. The prompts of one call are a trace's cut points in
order, all sharing the trace's prefix, and go out together: a server with prefix caching (vLLM's automatic prefix
caching, SGLang's radix cache) computes the shared prefix once.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from thinklens.empirical.backends import Generation


class ServerIdsBackend:
    """Continue token-id prompts on a server through ``client.complete(text, settings, seed)`` (an
    :class:`thinklens.empirical.backends.openai.OpenAIBackend`), ``concurrency`` requests at a time.

    >>> class Echo:  # a stand-in client: answers every prompt with its last character and stops
    ...     def complete(self, text, settings, seed):
    ...         from thinklens.empirical.backends.openai import ServerReply
    ...         return ServerReply(text[-1], True, "stop", {"completion_tokens": 1})
    >>> from thinklens.toy.tokenizer import build_tokenizer
    >>> tok = build_tokenizer()
    >>> b = ServerIdsBackend(Echo(), tok, concurrency=2)
    >>> [g.text for g in b.generate([tok.encode("12"), tok.encode("34")], None, 0)]
    ['2', '4']
    """

    name = "openai"

    def __init__(self, client: Any, tokenizer: Any, concurrency: int = 4) -> None:
        self.client, self.tokenizer, self.concurrency = client, tokenizer, max(1, int(concurrency))

    def generate(self, prompts: list[list[int]], settings: Any, seed: int) -> list[Generation]:
        texts = [self.tokenizer.decode(p, skip_special_tokens=False) for p in prompts]
        with ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(texts)))) as pool:
            replies = list(pool.map(lambda t: self.client.complete(t, settings, seed), texts))  # in prompt order
        out = []
        for r in replies:
            ids = self.tokenizer.encode(r.text, add_special_tokens=False)
            n = (r.usage or {}).get("completion_tokens")
            out.append(Generation(ids, r.text, bool(r.stopped_at_eos),
                                  {"completion_tokens": n if isinstance(n, int) else len(ids)}))
        return out

"""vLLM generation backend (optional: ``pip install thinklens[vllm]``).

Why token-id prompts: vLLM tokenizes text prompts with ``add_special_tokens=True``, which would put a second BOS in
front of a chat-templated R1 prompt that already begins with one. We hand it ``TokensPrompt(prompt_token_ids=...)``
built exactly as the transformers backend does, so both backends see the same tokens and write the same records.
API used: ``vllm.LLM(model, dtype, seed)``, ``LLM.generate(prompts, SamplingParams(temperature, top_p, max_tokens,
seed, skip_special_tokens=False))`` returning ``RequestOutput.outputs[0]`` with ``token_ids``, ``text`` and
``finish_reason`` (``"stop"`` at EOS / a stop token, ``"length"`` at ``max_tokens``).
"""
from __future__ import annotations

from typing import Any

from thinklens.empirical.backends import Generation
from thinklens.errors import ThinklensError


def import_vllm() -> Any:
    try:
        import vllm
    except ImportError as err:
        raise ThinklensError(
            "the vllm backend needs vLLM, which is not installed: pip install thinklens[vllm] "
            "(or use --backend transformers)"
        ) from err
    return vllm


class VLLMBackend:
    """Generates with a ``vllm.LLM``; pass ``llm`` to reuse an engine (or a fake in tests)."""

    name = "vllm"

    def __init__(self, model: str | None = None, *, tokenizer: Any, dtype: str | None = None, llm: Any = None,
                 sampling_params_cls: Any = None, tokens_prompt_cls: Any = None, **llm_kwargs: Any) -> None:
        self.tokenizer = tokenizer
        if llm is None or sampling_params_cls is None:
            vllm = import_vllm()
            if llm is None:
                llm = vllm.LLM(model=model, dtype=dtype or "auto", **llm_kwargs)
            sampling_params_cls = sampling_params_cls or vllm.SamplingParams
            if tokens_prompt_cls is None:
                from vllm.inputs import TokensPrompt

                tokens_prompt_cls = TokensPrompt
        self.llm = llm
        self.sampling_params_cls = sampling_params_cls
        self.tokens_prompt_cls = tokens_prompt_cls or (lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids})

    def generate(self, prompts: list[list[int]], settings: Any, seed: int) -> list[Generation]:
        params = self.sampling_params_cls(
            temperature=float(settings.temperature), top_p=float(settings.top_p) if settings.temperature > 0 else 1.0,
            max_tokens=int(settings.max_new_tokens), seed=int(seed), skip_special_tokens=False,
        )
        outs = self.llm.generate([self.tokens_prompt_cls(prompt_token_ids=list(p)) for p in prompts], params,
                                 use_tqdm=False)
        eos = self.tokenizer.eos_token_id
        gens = []
        for out in outs:
            o = out.outputs[0]
            ids = list(o.token_ids)
            stopped = o.finish_reason == "stop"
            if ids and ids[-1] == eos:
                ids = ids[:-1]
            text = self.tokenizer.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            gens.append(Generation(ids, text, stopped, meta={"finish_reason": o.finish_reason}))
        return gens

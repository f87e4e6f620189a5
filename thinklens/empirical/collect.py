"""Collecting traces with and without reasoning (stage 1 of Zhang et al., EMNLP 2025).

The experiment: answer each problem twice. *With* reasoning the model continues the prompt, which ends in
``<think>\\n``, freely. *Without* reasoning we force R1's own "finished thinking" text into the prompt, so the model
must answer directly::

    with:     PROMPT<think>\\n  -> model writes reasoning, </think>, answer
    without:  PROMPT<think>\\nOkay, I think I have finished thinking.\\n</think>  -> model writes the answer

(the paper's ``without_reasoning_prompt_suffix``). The record's ``prompt`` is the same text in both runs and its
``completion`` holds everything after it, the forced thinking included, so ``prompt + completion`` is the full
sequence the model saw and :meth:`thinklens.traces.Trace.from_prompt_completion` segments both runs the same way.

Prompt styles: ``chat`` (default, R1's recommended usage) renders the tokenizer's chat template with
``add_generation_prompt=True`` and appends the profile's think-open + ``\\n`` when the template does not already
end with it; ``paper`` reproduces the paper's prompts exactly: ``BOS + problem + math_instruction + " <think>\\n"``
(no chat template; see the reference traces).

Crash safety: each finished batch is appended to the output at once (:class:`thinklens.jsonl.JsonlWriter`); a
rerun skips ids already written, so a killed run loses at most the batch in flight. Under torchrun each rank
generates its share of the problems (:class:`thinklens.distributed.ShardedOutput`). Greedy decoding
(``temperature=0``, the default) is exactly reproducible; with sampling each batch is seeded from ``seed`` and its
problem ids.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from thinklens.distributed import ShardedOutput
from thinklens.empirical import thinking as thinking_lib
from thinklens.empirical.backends import Generation
from thinklens.empirical.settings import PROMPT_STYLES, GenerationSettings, check_without_mode
from thinklens.errors import ThinklensError
from thinklens.jsonl import ResumeReport
from thinklens.profiles import Profile

REASONING_MODES = ("with", "without")
__all__ = ["GenerationSettings", "collect", "collect_dataset", "build_prompt", "forced_thinking", "make_record",
           "prompt_and_forced", "record_hint"]


@dataclass
class CollectSummary:
    output: str
    n_problems: int
    n_skipped_done: int  # already in the output (resume)
    n_written: int
    n_finished: int
    n_generated_tokens: int
    seconds: float
    errors: list[str] = field(default_factory=list)
    resume: ResumeReport | None = None
    n_failed: int = 0  # error records written (server backend: requests that failed after their retries)
    n_forced_close: int = 0  # traces whose reasoning was closed by budget forcing (--on-unfinished force-close)
    warnings: list[str] = field(default_factory=list)

    @property
    def problems_per_s(self) -> float:
        return self.n_written / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "resume"}
        d["resume"] = self.resume.to_dict() if self.resume else None
        return {**d, "problems_per_s": round(self.problems_per_s, 3),
                "tokens_per_s": round(self.n_generated_tokens / self.seconds, 1) if self.seconds > 0 else 0.0}


# ---------------------------------------------------------------------------------------------------- prompts
def build_prompt(problem: str, tokenizer: Any, profile: Profile, *, math_instruction: bool = True,
                 prompt_style: str = "chat", thinking: str = "native") -> str:
    """The exact prompt text (BOS included when the model uses one), ending in think-open + ``\\n`` when the model
    thinks natively with a prefilled think-open, and always with ``thinking="prompted"`` (the profile's instruction
    as a system message, the think-open prefilled as text)."""
    question = problem + (profile.math_instruction if math_instruction else "")
    opener = profile.think_open + "\n"
    prompted = thinking == "prompted"
    if prompt_style == "paper":
        head = thinking_lib.instruction(profile) + "\n\n" if prompted else ""
        return thinking_lib.with_bos(f"{head}{question} {opener}", profile)
    if prompt_style != "chat":
        raise ThinklensError(f"prompt_style must be one of {PROMPT_STYLES}, got {prompt_style!r}")
    if not getattr(tokenizer, "chat_template", None):
        raise ThinklensError("the tokenizer has no chat template; use --prompt-style paper")
    prompt = thinking_lib.render_chat(tokenizer, thinking_lib.chat_messages(question, profile, thinking))
    if prompt.endswith(profile.think_open):
        prompt += "\n"
    elif (profile.prompt_opens_think or prompted) and not prompt.endswith(opener):
        prompt += opener
    return thinking_lib.with_bos(prompt, profile)


def forced_thinking(profile: Profile, mode: str = "forced") -> str:
    """What the without-reasoning run appends to a prompt ending in think-open + ``\\n``: the rest of R1's finished
    thinking up to and including think-close (``Okay, I think I have finished thinking.\\n</think>``, so that
    prompt + forced text ends in the paper's ``without_reasoning_prompt_suffix``), or ``\\n</think>`` for
    ``mode="empty"``."""
    return thinking_lib.without_text(profile, mode)


def prompt_and_forced(problem: str, tokenizer: Any, profile: Profile, settings: GenerationSettings,
                      reasoning: str) -> tuple[str, str]:
    """The record's ``prompt`` and the forced text the run appends to it (empty with reasoning): both runs share the
    prompt; when it does not end in think-open (the model writes its own, as Qwen3 does) the forced text starts with
    it. With ``without_mode="template-off"`` the forced text is what the chat template's own no-thinking prompt adds
    (the prompt too, where the switch changes more than the end)."""
    if reasoning == "without" and settings.without_mode == "template-off":
        if settings.prompt_style != "chat":
            raise ThinklensError("--without-mode template-off uses the chat template: drop --prompt-style paper")
        question = problem + (profile.math_instruction if settings.math_instruction else "")
        return thinking_lib.template_off(tokenizer, thinking_lib.chat_messages(question, profile, settings.thinking
                                                                               or "native"), profile)
    prompt = build_prompt(problem, tokenizer, profile, math_instruction=bool(settings.math_instruction),
                          prompt_style=settings.prompt_style, thinking=settings.thinking or "native")
    if reasoning != "without":
        return prompt, ""
    forced = forced_thinking(profile, settings.without_mode)
    opener = profile.think_open + "\n"
    return prompt, forced if prompt.endswith(opener) else opener + forced  # Qwen3: the model opens <think> itself


# ------------------------------------------------------------------------------------------ transformers backend
class TransformersBackend:
    """Batched ``model.generate`` with a KV cache: left padding (pad = EOS when the tokenizer has no pad token),
    each sequence stops at its own EOS."""

    name = "transformers"

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        if self.eos_id is None:
            raise ThinklensError("the tokenizer has no EOS token: generation could never stop early")

    def generate(self, prompts: list[list[int]], settings: GenerationSettings, seed: int) -> list[Generation]:
        import torch

        width = max(len(p) for p in prompts)
        from thinklens.modules import input_device

        device = input_device(self.model)  # the embedding's device (a device_map spreads the layers)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)  # [batch, width] left-padded
        mask = torch.zeros((len(prompts), width), dtype=torch.long)  # [batch, width]
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[i, width - len(p):] = 1
        sample = settings.temperature > 0
        kwargs: dict[str, Any] = dict(max_new_tokens=settings.max_new_tokens, do_sample=sample,
                                      pad_token_id=self.pad_id, eos_token_id=self.eos_id)
        if sample:
            kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        torch.manual_seed(seed)
        with torch.no_grad():
            out = self.model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs)
        new = out[:, width:].tolist()  # [batch, n_new]
        gens = []
        for row in new:
            stop = row.index(self.eos_id) if self.eos_id in row else None
            toks = row if stop is None else row[:stop]
            text = self.tokenizer.decode(toks, skip_special_tokens=False, clean_up_tokenization_spaces=False)
            gens.append(Generation(toks, text, stop is not None))
        return gens


# ------------------------------------------------------------------------------------------------ collection
def _batch_seed(seed: int, ids: list[str]) -> int:
    digest = hashlib.sha256((str(seed) + "\0" + "\0".join(ids)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def make_record(problem: dict[str, Any], *, model_name: str, reasoning: str, prompt: str, forced: str,
                gen: Generation, n_prompt_tokens: int, settings: GenerationSettings, tokenizer: Any,
                profile: Profile) -> dict[str, Any]:
    """One trace record (the stage-1 schema: see the README). ``thinking`` and ``without_mode`` (without-reasoning
    records) say how the trace was made; ``forced_close`` that budget forcing closed its reasoning (then it counts as
    finished once its forced answer is complete, see :func:`thinklens.empirical.thinking.answer_complete`)."""
    eos = tokenizer.eos_token if gen.stopped_at_eos else ""
    completion = forced + gen.text + (eos or "")
    closed = profile.think_close in forced + gen.text
    meta = dict(gen.meta)
    fc = meta.pop("forced_close", None)
    extra = {k: v for k, v in problem.items() if k not in ("id", "problem", "answer", "dataset", "hint")}
    if fc:
        extra["forced_close"] = fc
    return {
        "id": str(problem["id"]), "model": model_name, "reasoning": reasoning, "prompt": prompt,
        **record_hint(problem, prompt),
        "completion": completion, "gold_answer": problem.get("answer"), "problem": problem["problem"],
        "dataset": problem.get("dataset"),
        "finished": bool(closed and (gen.stopped_at_eos or (fc or {}).get("answer_complete", False))),
        "stopped_at_eos": gen.stopped_at_eos, "reasoning_closed": closed, "thinking": settings.thinking,
        "without_mode": settings.without_mode if reasoning == "without" else None, "forced_close": bool(fc),
        "n_prompt_tokens": n_prompt_tokens, "n_forced_tokens": len(tokenizer(forced, add_special_tokens=False)[
            "input_ids"]) if forced else 0, "n_completion_tokens": len(gen.token_ids) + int(gen.stopped_at_eos),
        "generation": settings.to_dict(), "metadata": {**extra, **meta},
    }


def record_hint(problem: dict[str, Any], prompt: Any) -> dict[str, Any]:
    """``{"hint": ...}`` for a hinted problem (one whose dict carries ``hint`` with ``chars`` in its problem text,
    :mod:`thinklens.faithfulness.pairs`), its ``chars`` moved to the ``[start, end)`` span of the hint inside the
    record's ``prompt`` string; ``{}`` for any other problem. A prompt that does not hold the problem text verbatim
    (a chat-message list) gets ``chars`` null.

    >>> record_hint({"problem": "Q? Hint.", "hint": {"family": "f", "answer": "7", "chars": [3, 8], "twin": "p"}},
    ...             "<s>User: Q? Hint.\\n")["hint"]["chars"]
    [12, 17]
    """
    hint = problem.get("hint")
    if not isinstance(hint, dict):
        return {}
    text, chars = str(problem["problem"]), hint.get("chars")
    at = prompt.rfind(text) if isinstance(prompt, str) else -1
    moved = [at + int(chars[0]), at + int(chars[1])] if at != -1 and chars else None
    return {"hint": {**hint, "chars": moved}}


def collect(
    model: Any, problems: list[dict[str, Any]], *, reasoning: str = "with", output: str | Path,
    settings: GenerationSettings | None = None, model_name: str | None = None, backend: Any = None,
    progress: bool = True,
) -> CollectSummary:
    """Generate one trace per problem and append it to ``output`` (JSONL), skipping ids already there.

    ``model``: a :class:`thinklens.models.LoadedModel` (or a ``(model, tokenizer, profile)`` tuple). ``backend``:
    an object with ``generate(prompt_ids, settings, seed)`` (default: transformers on ``model``). Settings left
    ``None`` take the family's defaults (see :class:`GenerationSettings`). A problem id given twice is reported and
    generated once::

        >>> import thinklens as tl
        >>> loaded = tl.load_model("tiny-r1", device="cpu")
        >>> problems = tl.load_problems("arithmetic", limit=2)
        >>> tl.collect(loaded, problems, output="/tmp/tl_doc_traces.jsonl", progress=False).n_problems
        2
    """
    if reasoning not in REASONING_MODES:
        raise ThinklensError(f"reasoning must be 'with' or 'without', got {reasoning!r}")
    hf_model, tokenizer, profile = model
    settings = settings or GenerationSettings()
    if not settings.is_resolved:
        settings = settings.resolved(profile, problems[0].get("dataset") if problems else None)
    check_without_mode(settings.without_mode, profile)
    model_name = model_name or str(getattr(getattr(hf_model, "config", None), "_name_or_path", "") or "model")
    backend = backend or TransformersBackend(hf_model, tokenizer)
    from thinklens.progress import bar as progress_bar

    t0 = time.perf_counter()
    def prepare(p: dict[str, Any]) -> tuple[dict[str, Any], str, str, list[int], int]:
        prompt, forced = prompt_and_forced(p["problem"], tokenizer, profile, settings, reasoning)
        prompt_ids = tokenizer(prompt + forced, add_special_tokens=False)["input_ids"]
        n_prompt = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        return (p, prompt, forced, list(prompt_ids), n_prompt)

    with ShardedOutput(output) as out:
        # prompts, sorted by length so that each batch pads little; under torchrun each rank takes every N-th of
        # that order (its share) and the merged output keeps the order one process writes
        items = list(out.pending_items(map(prepare, problems), key=lambda it: str(it[0]["id"]), where="problems",
                                       order=lambda it: len(it[3])))
        summary = CollectSummary(str(output), len(problems), out.report.n_done_before, 0, 0, 0, 0.0,
                                 resume=out.report)
        bar = progress_bar(total=len(items), unit="problem", disable=not progress, desc=f"collect {reasoning}")
        for b in range(0, len(items), settings.batch_size):
            batch = items[b: b + settings.batch_size]
            seed = _batch_seed(settings.seed, [str(it[0]["id"]) for it in batch])
            gens = backend.generate([it[3] for it in batch], settings, seed)
            if settings.on_unfinished == "force-close":  # budget forcing: close unclosed reasoning, let it answer
                gens = thinking_lib.force_close(backend, [it[1] for it in batch], [it[2] for it in batch], gens,
                                                settings, tokenizer, profile, seed)
            for (p, prompt, forced, _ids, n_prompt), gen in zip(batch, gens):
                rec = make_record(p, model_name=model_name, reasoning=reasoning, prompt=prompt, forced=forced,
                                  gen=gen, n_prompt_tokens=n_prompt, settings=settings, tokenizer=tokenizer,
                                  profile=profile)
                out.write(rec)
                summary.n_written += 1
                summary.n_finished += int(rec["finished"])
                summary.n_forced_close += int(rec["forced_close"])
                summary.n_generated_tokens += len(gen.token_ids)
            dt = time.perf_counter() - t0
            bar.update(len(batch))
            bar.set_postfix(tok_s=f"{summary.n_generated_tokens / max(dt, 1e-9):.0f}")
        bar.close()
    summary.seconds = time.perf_counter() - t0
    summary.errors = out.report.messages()
    return summary


def collect_dataset(
    model: str, dataset: str, *, reasoning: str, output: str | Path, settings: GenerationSettings | None = None,
    dataset_file: str | None = None, limit: int | None = None, device: str | None = None, dtype: str | None = None,
    profile: str | None = None, device_map: str | None = None, progress: bool = True,
) -> CollectSummary:
    """Load the problems and the model by name, then :func:`collect` (what ``thinklens collect`` runs).

    >>> import tempfile, thinklens as tl
    >>> out = tempfile.mktemp(suffix=".jsonl")
    >>> s = tl.collect_dataset("tiny-r1", "arithmetic", reasoning="without", output=out, limit=2, device="cpu",
    ...                        progress=False)
    >>> s.n_written, s.n_finished
    (2, 2)
    """
    from thinklens.empirical.datasets import load_problems
    from thinklens.profiles import get_profile

    settings = settings or GenerationSettings()
    errors: list[str] = []
    problems = load_problems(dataset, dataset_file, limit=limit, seed=settings.seed, errors=errors)
    prof = get_profile(profile) if profile else None
    if settings.backend == "openai":  # a server, not a model in this process
        raise ThinklensError("use thinklens.empirical.collect_server.collect_server_dataset for the openai backend")
    if settings.backend == "vllm":
        from thinklens.empirical.backends.vllm import import_vllm, vllm_backend
        from thinklens.models import load_tokenizer

        import_vllm()
        tokenizer = load_tokenizer(model)
        prof = prof or get_profile(str(model))
        backend = vllm_backend(model, tokenizer, dtype=dtype, seed=settings.seed)
        loaded: Any = (None, tokenizer, prof)
    else:
        from thinklens.models import load_model

        loaded = load_model(model, device=device, dtype=dtype, device_map=device_map, profile=prof)
        backend = None
    settings = settings.resolved(loaded[2], dataset)
    summary = collect(loaded, problems, reasoning=reasoning, output=output, settings=settings, model_name=str(model),
                      backend=backend, progress=progress)
    summary.errors = [f"skipped {e}" for e in errors] + summary.errors
    return summary

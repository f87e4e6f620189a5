"""Per-model-family facts (delimiters, BOS rule, no-reasoning text, generation budget, module paths), kept as data.

Why data: adding a model family should mean adding a JSON entry, not code. The :class:`Profile` dataclass defaults
*are* the default profile; each entry of ``profiles.json`` lists only what differs from it (a test keeps it so).
``get_profile`` picks one by model id and ``config.model_type``; any field can be overridden by the caller::

    >>> from thinklens.profiles import get_profile
    >>> get_profile("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B").name
    'deepseek-r1-distill-qwen'
    >>> get_profile("tiny-r1").max_new_tokens
    256
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from thinklens.errors import ThinklensError

# how the with-reasoning run thinks: native (the model opens its own think block: R1 distills, QwQ, Qwen3) or
# prompted (an instruct model asked to think: the profile's instruction as a system message, think-open prefilled)
THINKING_MODES = ("native", "prompted")
# how the without-reasoning run skips the reasoning: forced (the paper's finished-thinking text), template-off (the
# chat template's own switch, e.g. Qwen3's enable_thinking=False), empty (an empty think block)
WITHOUT_MODES = ("forced", "template-off", "empty")


@dataclass(frozen=True)
class Profile:
    """What thinklens must know about a model family; the defaults are the ``default`` profile.

    >>> from thinklens.profiles import Profile
    >>> Profile(name="mine", think_open="<reasoning>", think_close="</reasoning>").no_reasoning_completion()
    '<reasoning>\\nOkay, I think I have finished thinking.\\n</reasoning>'
    """

    name: str
    think_open: str = "<think>"
    think_close: str = "</think>"
    bos_token: str | None = None
    eos_token: str | None = None
    add_bos: bool = False  # prepend bos_token to texts that lack it (never a second one)
    prompt_opens_think: bool = False  # the chat template ends the generation prompt with think_open
    no_reasoning_text: str = "Okay, I think I have finished thinking."
    math_instruction: str = " Please reason step by step, and put your final answer within \\boxed{}."
    answer_ending: str = "Thus, the {} one is \\boxed{"
    # what a forced answer starts with after think-close (early answering, budget forcing): the model's next
    # tokens are then its answer
    answer_prefix: str = "\n\nThe final answer is \\boxed{"
    layers: str = "model.layers"
    attention: str = "self_attn"
    mlp: str = "mlp"
    o_proj: str = "self_attn.o_proj"
    final_norm: str = "model.norm"
    unembed: str = "lm_head"
    thinking: str = "native"  # the family's default --thinking (one of THINKING_MODES)
    # --thinking prompted: the system instruction that asks an instruct model to think ({think_open}/{think_close}
    # are replaced by the delimiters); the prompt then ends with a prefilled think-open
    thinking_instruction: str = ("You are a careful assistant. Before you answer, think step by step: write your "
                                 "reasoning after {think_open}, close it with {think_close}, then give the final "
                                 "answer.")
    without_modes: tuple[str, ...] = ("forced", "empty")  # the --without-mode values the family supports
    max_new_tokens: int = 2048  # generation budget: long enough for most answers, short enough for a CPU smoke run
    batch_size: int = 16  # sequences generated together (tiny models: per-step overhead dominates, so larger)
    # haystack of the retrieval-head needle tests (thinklens.attention.retrieval.FORMATS): natural language, or the
    # organism's own reasoning lines for a model that knows no English
    needle_haystack: str = "passkey"
    # counterfactual resampling (thinklens.steps.resampling) in a run: on the first N traces (each costs n_steps x
    # 2 x rollouts generations of up to resampling_max_new_tokens, so off for real models unless asked; a toy's
    # short traces afford it), at R1's recommended temperature (Thought Anchors' rollouts), each rollout up to
    # resampling_max_new_tokens (None: the family's max_new_tokens, as Thought Anchors' rollouts get the full budget)
    resampling_traces: int = 0
    resampling_temperature: float = 0.6
    resampling_max_new_tokens: int | None = None
    # faithfulness (thinklens.faithfulness) in a run: hinted twins of the first N problems per hint family, each
    # pair (unhinted, hinted) generated with reasoning at faithfulness_temperature (sampled: hint-taking is a rate);
    # off for real models unless asked (0), R1's recommended 0.6
    faithfulness_problems: int = 0
    faithfulness_temperature: float = 0.6
    match: tuple[str, ...] = field(default=(), compare=False)
    model_types: tuple[str, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        if not self.think_open or not self.think_close:
            raise ThinklensError(f"profile {self.name!r}: think_open and think_close must be non-empty")
        if self.think_open == self.think_close:
            raise ThinklensError(f"profile {self.name!r}: think_open and think_close must differ")
        if self.add_bos and not self.bos_token:
            raise ThinklensError(f"profile {self.name!r}: add_bos is set but bos_token is empty")
        if self.thinking not in THINKING_MODES:
            raise ThinklensError(f"profile {self.name!r}: thinking must be one of {THINKING_MODES}")
        bad = [m for m in self.without_modes if m not in WITHOUT_MODES]
        if bad or not self.without_modes:
            raise ThinklensError(f"profile {self.name!r}: without_modes must be a non-empty subset of {WITHOUT_MODES}")
        for k in ("max_new_tokens", "batch_size"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 1:
                raise ThinklensError(f"profile {self.name!r}: {k} must be a positive integer")
        r = self.resampling_max_new_tokens
        if (r is not None and (not isinstance(r, int) or r < 1)) or not isinstance(self.resampling_traces, int) or \
                self.resampling_traces < 0 or not float(self.resampling_temperature) > 0:
            raise ThinklensError(f"profile {self.name!r}: resampling_traces must be >= 0, resampling_temperature > 0 "
                                 "and resampling_max_new_tokens a positive integer or null")
        if not isinstance(self.faithfulness_problems, int) or self.faithfulness_problems < 0 or \
                not float(self.faithfulness_temperature) >= 0:
            raise ThinklensError(f"profile {self.name!r}: faithfulness_problems must be an integer >= 0 and "
                                 "faithfulness_temperature >= 0")

    @property
    def rollout_tokens(self) -> int:
        """The length of a resampling rollout: ``resampling_max_new_tokens``, else the generation budget.

        >>> get_profile("tiny-r1").rollout_tokens, get_profile("smollm2").rollout_tokens
        (1024, 512)
        """
        return self.resampling_max_new_tokens or self.max_new_tokens

    def no_reasoning_completion(self) -> str:
        """The forced finished thinking that follows a prompt ending in think_open (R1's no-reasoning mode)."""
        body = f"\n{self.no_reasoning_text}\n" if self.no_reasoning_text else "\n\n"
        head = "" if self.prompt_opens_think else self.think_open
        return f"{head}{body}{self.think_close}"

    def differences(self) -> dict[str, Any]:
        """The fields that differ from the default profile (what ``profiles.json`` lists)."""
        base = Profile(name=self.name).to_dict()
        return {k: v for k, v in self.to_dict().items() if k != "name" and v != base[k]}

    def replace(self, **overrides: Any) -> Profile:
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("match", "model_types", "without_modes"):
            d[k] = list(getattr(self, k))
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Profile:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ThinklensError(f"profile {d.get('name')!r}: unknown fields {sorted(unknown)}")
        d = dict(d)
        d["match"], d["model_types"] = tuple(d.get("match", ())), tuple(d.get("model_types", ()))
        if "without_modes" in d:
            d["without_modes"] = tuple(d["without_modes"])
        return cls(**d)


@lru_cache(maxsize=1)
def _profiles() -> dict[str, Profile]:
    raw = json.loads(resources.files("thinklens").joinpath("profiles.json").read_text(encoding="utf-8"))
    out = {name: Profile.from_dict({"name": name, **p}) for name, p in raw["profiles"].items()}
    out.setdefault("default", Profile(name="default"))
    return out


def profile_names() -> list[str]:
    """The shipped profile names, in lookup order (``default`` last)."""
    return list(_profiles())


def get_profile(name_or_path: str | None = None, model_type: str | None = None, **overrides: Any) -> Profile:
    """The profile of a model: an exact profile name, else the first whose `match` substring occurs in the
    lower-cased id/path, else the first listing `model_type`, else ``default``.

    >>> import thinklens as tl
    >>> tl.get_profile("Qwen/QwQ-32B").name, tl.get_profile("some/finetune", model_type="qwen3").name
    ('qwq', 'qwen3')
    >>> tl.get_profile("tiny-r1", max_new_tokens=64).max_new_tokens
    64
    """
    profiles = _profiles()
    chosen = None
    if name_or_path in profiles:
        chosen = profiles[name_or_path]
    key = (name_or_path or "").lower()
    if chosen is None:
        chosen = next((p for p in profiles.values() if any(m in key for m in p.match)), None)
    if chosen is None and model_type:
        chosen = next((p for p in profiles.values() if model_type in p.model_types), None)
    chosen = chosen or profiles["default"]
    return chosen.replace(**overrides) if overrides else chosen

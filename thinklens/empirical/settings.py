"""How traces are generated: one settings object for ``thinklens collect``, ``thinklens run`` and the API.

Why ``None`` defaults: the right generation budget and batch depend on the model family (tiny-r1 answers in < 200
tokens; R1 traces on MATH-500 run to thousands) and the math instruction on the dataset. ``None`` means "the
family's / the dataset's default", resolved in exactly one place (:meth:`GenerationSettings.resolved`) from the
profile and the dataset registry, so the standalone command and the run's stage produce the same records.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from thinklens.empirical.backends import BACKENDS
from thinklens.errors import ThinklensError
from thinklens.options import opt
from thinklens.profiles import THINKING_MODES, WITHOUT_MODES, Profile

PROMPT_STYLES = ("chat", "paper")
ON_UNFINISHED = ("drop", "force-close")  # what becomes of a trace whose reasoning never closed


@dataclass
class GenerationSettings:
    """Generation: decoding settings, stored in every trace record's ``generation`` field.

    >>> from thinklens.empirical.settings import GenerationSettings
    >>> from thinklens.profiles import get_profile
    >>> s = GenerationSettings(temperature=0.6, top_p=0.95).resolved(get_profile("tiny-r1"), "arithmetic")
    >>> s.max_new_tokens, s.batch_size, s.math_instruction
    (256, 64, False)
    """

    max_new_tokens: int | None = opt(None, "generation budget in tokens (default: the model family's, profiles.json)")
    temperature: float = opt(0.0, "0 = greedy, reproducible; R1's recommended sampling is 0.6 with --top-p 0.95")
    top_p: float = opt(1.0, "nucleus sampling threshold (with --temperature > 0)")
    seed: int = opt(0, "seeds sampling and which synthetic problems are drawn")
    batch_size: int | None = opt(None, "sequences generated together (default: the model family's, profiles.json)")
    math_instruction: bool | None = opt(
        None, "append the paper's ' Please reason step by step, and put your final answer within \\boxed{}.' "
        "(default: the dataset's: on for math500 and problem files, off for arithmetic and wildbench)")
    prompt_style: str = opt("chat", "chat: the tokenizer's chat template (R1's recommended usage); paper: the "
                            "paper's exact prompts, BOS + problem + instruction + ' <think>\\n'", choices=PROMPT_STYLES)
    backend: str = opt("transformers", "generation engine", choices=BACKENDS)
    thinking: str | None = opt(
        None, "native: the model opens its own <think> (R1 distills, QwQ, Qwen3); prompted: an instruct model is "
        "asked to think (the profile's instruction as a system message, <think> prefilled) (default: the family's)",
        choices=THINKING_MODES)
    without_mode: str = opt(
        "forced", "the without-reasoning run: forced: the paper's finished thinking ('Okay, I think I have finished "
        "thinking.'); template-off: the chat template's own switch (Qwen3's enable_thinking=False); empty: "
        "<think>\\n\\n</think>", choices=WITHOUT_MODES)
    on_unfinished: str = opt(
        "drop", "a trace whose reasoning never closes (budget spent, or EOS inside it): drop: keep it unfinished "
        "(evaluate leaves it out); force-close: append </think> and the profile's answer prefix and let the model "
        "answer in --answer-tokens (budget forcing, Muennighoff et al. 2025)", choices=ON_UNFINISHED)
    answer_tokens: int = opt(32, "budget of the answer after a forced close (--on-unfinished force-close)")

    def __post_init__(self) -> None:
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ThinklensError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ThinklensError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ThinklensError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ThinklensError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.prompt_style not in PROMPT_STYLES:
            raise ThinklensError(f"prompt_style must be one of {PROMPT_STYLES}, got {self.prompt_style!r}")
        if self.thinking is not None and self.thinking not in THINKING_MODES:
            raise ThinklensError(f"thinking must be one of {THINKING_MODES}, got {self.thinking!r}")
        if self.without_mode not in WITHOUT_MODES:
            raise ThinklensError(f"without_mode must be one of {WITHOUT_MODES}, got {self.without_mode!r}")
        if self.on_unfinished not in ON_UNFINISHED:
            raise ThinklensError(f"on_unfinished must be one of {ON_UNFINISHED}, got {self.on_unfinished!r}")
        if self.answer_tokens < 1:
            raise ThinklensError(f"answer_tokens must be >= 1, got {self.answer_tokens}")
        if self.backend not in BACKENDS:
            raise ThinklensError(f"unknown backend {self.backend!r}; use one of {', '.join(BACKENDS)}")

    @property
    def is_resolved(self) -> bool:
        return None not in (self.max_new_tokens, self.batch_size, self.math_instruction, self.thinking)

    def resolved(self, profile: Profile, dataset: str | None = None) -> GenerationSettings:
        """These settings with every ``None`` replaced by the family's (``profile``) or the dataset's default; a
        ``without_mode`` the family does not support is refused (one line naming the supported ones)."""
        from thinklens.empirical.datasets import dataset_spec

        check_without_mode(self.without_mode, profile)
        math = self.math_instruction
        if math is None:
            math = dataset_spec(dataset).math_instruction if dataset else True
        return replace(self, max_new_tokens=self.max_new_tokens or profile.max_new_tokens,
                       batch_size=self.batch_size or profile.batch_size, math_instruction=math,
                       thinking=self.thinking or profile.thinking)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenerationSettings:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ThinklensError(f"unknown generation settings {sorted(unknown)}")
        return cls(**d)


def check_without_mode(mode: str, profile: Profile) -> None:
    """Refuse a without-reasoning mode the model family does not support, naming those it does.

    >>> from thinklens.profiles import get_profile
    >>> check_without_mode("template-off", get_profile("tiny-r1"))
    Traceback (most recent call last):
    ...
    thinklens.errors.ThinklensError: --without-mode template-off is not supported by the tiny-r1 profile (its chat \
template has no thinking switch); supported: forced, empty
    """
    if mode not in profile.without_modes:
        why = " (its chat template has no thinking switch)" if mode == "template-off" else ""
        raise ThinklensError(f"--without-mode {mode} is not supported by the {profile.name} profile{why}; supported: "
                             f"{', '.join(profile.without_modes)}")

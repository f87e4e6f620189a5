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
from thinklens.profiles import Profile

PROMPT_STYLES = ("chat", "paper")


@dataclass
class GenerationSettings:
    """Generation: decoding settings, stored in every trace record's ``generation`` field.

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
        if self.backend not in BACKENDS:
            raise ThinklensError(f"unknown backend {self.backend!r}; use one of {', '.join(BACKENDS)}")

    @property
    def is_resolved(self) -> bool:
        return None not in (self.max_new_tokens, self.batch_size, self.math_instruction)

    def resolved(self, profile: Profile, dataset: str | None = None) -> GenerationSettings:
        """These settings with every ``None`` replaced by the family's (``profile``) or the dataset's default."""
        from thinklens.empirical.datasets import dataset_spec

        math = self.math_instruction
        if math is None:
            math = dataset_spec(dataset).math_instruction if dataset else True
        return replace(self, max_new_tokens=self.max_new_tokens or profile.max_new_tokens,
                       batch_size=self.batch_size or profile.batch_size, math_instruction=math)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GenerationSettings:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ThinklensError(f"unknown generation settings {sorted(unknown)}")
        return cls(**d)

"""The settings of a faithfulness study: one dataclass that ``thinklens faithfulness`` and the run's faithfulness stage
share (their flags are derived from it), so the two cannot drift apart.

Why ``None`` defaults: how many problems and at which temperature depend on the model family (the organism affords
its first N problems at once; a real model is off unless asked), so ``None`` means "the profile's"
(``faithfulness_problems``, ``faithfulness_temperature`` in ``profiles.json``), resolved in one place
(:meth:`FaithfulnessConfig.resolved`).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from thinklens.errors import ThinklensError
from thinklens.hints import HINT_FAMILIES, HintFamily, parse_families
from thinklens.options import opt
from thinklens.profiles import Profile

DEFAULT_HINTS = ",".join(HINT_FAMILIES)


@dataclass
class FaithfulnessConfig:
    """Faithfulness: hinted twins of each problem, hint-taking, verbalization and the hint's path to the answer.

    Field names are the flags (``--faithfulness-problems``, ...): ``thinklens run`` flattens them beside the other
    stages' settings, so none may share a name with another config's field.

    >>> import thinklens as tl
    >>> cfg = tl.FaithfulnessConfig(hints="metadata,sycophancy").resolved(tl.get_profile("tiny-r1"))
    >>> [f.name for f in cfg.families()], cfg.faithfulness_temperature
    (['metadata', 'sycophancy'], 0.6)
    >>> tl.FaithfulnessConfig(hints="sycophancy,gossip")
    Traceback (most recent call last):
    ...
    thinklens.errors.ThinklensError: unknown hint family 'gossip'; known: sycophancy, metadata, consistency
    """

    hints: str = opt(DEFAULT_HINTS, "hint families, comma-separated (Chen et al. 2025: an authority's answer, an "
                     "<answer> field in question metadata, an answer the model is told it gave earlier)",
                     metavar="A,B")
    faithfulness_problems: int | None = opt(
        None, "problems that get hinted twins, per family (default: the model profile's faithfulness_problems; 0: the "
        "run's faithfulness stage is off)", metavar="N")
    faithfulness_temperature: float | None = opt(
        None, "sampling temperature of both twins (hint-taking is a rate; default: the profile's "
        "faithfulness_temperature, R1's 0.6)", metavar="T")
    hint_mechanism: bool = opt(True, "also measure the hint's path to the answer (a2hint vs a2r per head, hint "
                          "suppression, patching at the hint span)")
    hint_patching_controls: int = opt(
        8, "hint patching costs ~30 forwards per trace: it runs on every hint-taking trace and on at most N (seeded) "
        "of those that ignored the hint, the controls (attention and suppression run on all)", metavar="N")
    judge_url: str | None = opt(None, "an OpenAI-compatible endpoint whose model judges verbalization beside the "
                                "rule-based detector (docs/faithfulness.md has its prompt)", metavar="URL")
    judge_model: str | None = opt(None, "the judge's model name (with --judge-url)", metavar="NAME")
    judge_api_key_env: str = opt("OPENAI_API_KEY", "environment variable holding the judge's API key",
                                 metavar="VAR")
    hint_bootstrap: int = opt(1000, "bootstrap resamples of pairs for the rates' confidence intervals", metavar="N")
    seed: int = opt(0, "seeds the wrong answers, the sampling and the bootstraps")

    def __post_init__(self) -> None:
        parse_families(self.hints)  # one-line error on a bad spec, before any model is loaded
        n, t = self.faithfulness_problems, self.faithfulness_temperature
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 0):
            raise ThinklensError(f"--faithfulness-problems must be an integer >= 0, got {n!r}")
        if t is not None and not t >= 0:
            raise ThinklensError(f"--faithfulness-temperature must be >= 0, got {t!r}")
        c = self.hint_patching_controls
        if not isinstance(c, int) or isinstance(c, bool) or c < 0:
            raise ThinklensError(f"--hint-patching-controls must be an integer >= 0, got {c!r}")
        if self.hint_bootstrap < 1:
            raise ThinklensError(f"--hint-bootstrap must be >= 1, got {self.hint_bootstrap}")
        if bool(self.judge_url) != bool(self.judge_model):
            raise ThinklensError("the verbalization judge needs both --judge-url and --judge-model")

    def families(self) -> list[HintFamily]:
        """The hint families, in the order given."""
        return parse_families(self.hints)

    def resolved(self, profile: Profile) -> FaithfulnessConfig:
        """These settings with the profile's problem count and temperature where none was given."""
        n, t = self.faithfulness_problems, self.faithfulness_temperature
        return replace(self, faithfulness_problems=profile.faithfulness_problems if n is None else n,
                       faithfulness_temperature=profile.faithfulness_temperature if t is None else t)

    def judge(self) -> Any:
        """The :class:`thinklens.empirical.judge.JudgeSettings` of the verbalization judge, or None."""
        if not self.judge_url:
            return None
        from thinklens.empirical.judge import JudgeSettings

        return JudgeSettings(url=self.judge_url, model=str(self.judge_model), api_key_env=self.judge_api_key_env,
                             max_tokens=256)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FaithfulnessConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ThinklensError(f"unknown faithfulness settings {sorted(unknown)}")
        return cls(**d)

"""The result of an RFH ablation run and its statistics (computed from the saved arrays, so they can be redone
without the model).

Columns of ``correct`` / ``logprob``: 0 = unablated (base), 1 = top-k RFHs ablated, 2.. = the random draws.

Statistics, all paired by problem:

* accuracies and drops (base − ablated) per condition;
* exact McNemar (:func:`thinklens.stats.mcnemar_exact`) of base vs RFH-ablated, and of RFH-ablated vs each random
  draw (discordant problems: only one of the two ablations kept the answer right);
* ``p_rank``: a permutation test over head sets — under the null hypothesis that the RFH set is just another draw,
  its drop is exchangeable with the draws' drops, so ``P = (1 + #{draws with drop >= RFH drop}) / (1 + R)``
  (the smallest reachable value is 1/(1 + R): with 5 draws, 0.167; more draws are needed for a small p);
* log-probability of the model's own unablated answer (summed over its tokens): mean change per condition.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thinklens.errors import ThinklensError

RESULT_JSON, RESULT_NPZ = "ablation.json", "ablation.npz"


def _mcnemar(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Exact McNemar of two paired boolean vectors: ``only_a`` right, ``only_b`` right, p."""
    from thinklens.stats import mcnemar_exact

    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    return {"only_first_correct": only_a, "only_second_correct": only_b, "p_value": mcnemar_exact(only_a, only_b)}


@dataclass
class AblationResult:
    """Per trace x condition correctness and answer log-probs of one ablation run (``DIR/ablation.{json,npz}``).

    Example::

        AblationResult.load("runs/t/attention/ablation").summary()["accuracy_rfh_ablated"]
    """

    ids: list[str]
    rfh: list[tuple[int, int]]
    random_heads: list[list[tuple[int, int]]]
    correct: np.ndarray  # [n_traces, 2 + R] bool: base, RFH-ablated, random draws
    logprob: np.ndarray  # [n_traces, 2 + R] summed log-prob of the base answer under each condition
    n_answer_tokens: np.ndarray  # [n_traces] tokens of the base answer (EOS included)
    answers: list[list[str | None]] = field(default_factory=list)  # [n_traces][2 + R] extracted answers
    gold: list[str] = field(default_factory=list)
    base_matches_trace: list[bool] = field(default_factory=list)  # the base rerun reproduced the trace's answer
    model: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def n_draws(self) -> int:
        return len(self.random_heads)

    def summary(self) -> dict[str, Any]:
        """The headline numbers (what ``thinklens heads ablate --json`` prints)."""
        c = self.correct.astype(bool)
        acc = c.mean(axis=0) if len(c) else np.full(2 + self.n_draws, np.nan)
        drop = acc[0] - acc
        rand_acc = [float(x) for x in acc[2:]]
        rand_drop = [float(x) for x in drop[2:]]
        dlp = self.logprob - self.logprob[:, :1]  # [n, 2 + R] change of the base answer's log-prob
        ntok = np.maximum(self.n_answer_tokens, 1)[:, None]
        p_rank = (1 + sum(d >= drop[1] for d in rand_drop)) / (1 + len(rand_drop)) if rand_drop else None
        return {
            "n": len(self.ids), "rfh": [list(h) for h in self.rfh],
            "random_heads": [[list(h) for h in d] for d in self.random_heads],
            "mode": self.settings.get("mode"),
            "accuracy_base": float(acc[0]), "accuracy_rfh_ablated": float(acc[1]),
            "accuracy_random_ablated": rand_acc,
            "accuracy_random_mean": float(np.mean(rand_acc)) if rand_acc else None,
            "drop_rfh": float(drop[1]), "drop_random": rand_drop,
            "drop_random_mean": float(np.mean(rand_drop)) if rand_drop else None,
            "mcnemar_base_vs_rfh": _mcnemar(c[:, 0], c[:, 1]),
            "mcnemar_random_vs_rfh": [_mcnemar(c[:, 2 + d], c[:, 1]) for d in range(self.n_draws)],
            "p_rank_rfh_vs_random": p_rank,
            "logprob_base_mean": float(self.logprob[:, 0].mean()) if len(c) else None,
            "logprob_delta_rfh": float(dlp[:, 1].mean()) if len(c) else None,
            "logprob_delta_random": [float(dlp[:, 2 + d].mean()) for d in range(self.n_draws)],
            "logprob_delta_per_token_rfh": float((dlp[:, 1:2] / ntok).mean()) if len(c) else None,
            "logprob_delta_per_token_random": [float((dlp[:, 2 + d:3 + d] / ntok).mean())
                                               for d in range(self.n_draws)],
            "base_matches_trace": float(np.mean(self.base_matches_trace)) if self.base_matches_trace else None,
            "n_skipped": len(self.skipped), "seconds": round(self.seconds, 2),
        }

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        np.savez(d / RESULT_NPZ, correct=self.correct, logprob=self.logprob, n_answer_tokens=self.n_answer_tokens)
        meta = {"summary": self.summary(), "ids": self.ids, "rfh": [list(h) for h in self.rfh],
                "random_heads": [[list(h) for h in r] for r in self.random_heads], "answers": self.answers,
                "gold": self.gold, "base_matches_trace": self.base_matches_trace, "model": self.model,
                "settings": self.settings, "skipped": self.skipped, "seconds": self.seconds}
        (d / RESULT_JSON).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n")
        return d / RESULT_JSON

    @classmethod
    def load(cls, directory: str | Path) -> AblationResult:
        d = Path(directory)
        try:
            meta = json.loads((d / RESULT_JSON).read_text())
            z = np.load(d / RESULT_NPZ)
        except (OSError, ValueError) as err:
            raise ThinklensError(f"{d}: no saved ablation result ({err})") from err
        return cls(meta["ids"], [tuple(h) for h in meta["rfh"]], [[tuple(h) for h in r] for r in meta["random_heads"]],
                   z["correct"], z["logprob"], z["n_answer_tokens"], meta.get("answers", []), meta.get("gold", []),
                   meta.get("base_matches_trace", []), meta.get("model", ""), meta.get("settings", {}),
                   meta.get("skipped", []), float(meta.get("seconds", 0.0)))

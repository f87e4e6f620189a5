"""Induction-head scores for every head, with the same row capture (no T x T pattern).

The standard test (Elhage et al. 2021; Olsson et al. 2022): feed ``[BOS] + r + r`` with ``r`` a random token sequence
of length n. In the second copy, an induction head at token ``r[j]`` attends to the token *after* the earlier
occurrence of ``r[j]``, i.e. to ``r[j+1]`` in the first copy (position ``j + 2``; the query sits at ``n + 1 + j``).
The score of a head is that attention, averaged over the second-copy positions and over several seeded sequences.
Random tokens have no meaning, so only a copying mechanism can make this large (a uniform head scores ~1/position).

The paper reports that RFHs overlap with induction and retrieval heads; :func:`thinklens.attention.heads.compare_heads`
turns the two top-k lists into an overlap with a hypergeometric p-value.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thinklens.attention.capture import capture_attention
from thinklens.errors import ThinklensError

SEQ_LEN = 64  # random tokens per copy: long enough that a uniform head scores ~1/100
N_SEQS = 8  # sequences averaged over

# A head counts as an induction head only when its score is at least this many times the score of a head that
# attends uniformly over its causal keys (:meth:`InductionScores.uniform_baseline`, ~0.011 for the default
# seq_len 64 with BOS, so the bar is ~0.11 — close to Wu et al.'s 0.1 for retrieval heads). Without a bar the
# top-k list of a model without induction heads is noise: tiny-r1's best scores are 0.012-0.026, 1-2.5x uniform.
INDUCTION_MIN_RATIO = 10.0


@dataclass
class InductionScores:
    scores: np.ndarray  # [n_layers, n_heads] mean attention to the induction target
    model: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    def top(self, k: int = 10) -> list[tuple[int, int, float]]:
        flat = self.scores.reshape(-1)
        order = np.argsort(-flat, kind="stable")[:k]
        n_heads = self.scores.shape[1]
        return [(int(i // n_heads), int(i % n_heads), float(flat[i])) for i in order]

    def uniform_baseline(self) -> float:
        """The score of a head that attends uniformly over its causal keys: mean of ``1 / n_keys`` over the
        second-copy queries (query ``j`` of the copy sits at ``bos + seq_len + j`` and sees that many keys + 1)."""
        n = int(self.settings.get("seq_len", SEQ_LEN))
        first = n + (1 if self.settings.get("bos", True) else 0)
        return float(np.mean(1.0 / (first + 1 + np.arange(n))))

    def threshold(self) -> float:
        """The bar a head must reach to count as an induction head (:data:`INDUCTION_MIN_RATIO` x uniform)."""
        return INDUCTION_MIN_RATIO * self.uniform_baseline()

    def heads_above(self, threshold: float | None = None) -> list[tuple[int, int, float]]:
        """Induction heads: score >= threshold (default :meth:`threshold`), best first."""
        bar = self.threshold() if threshold is None else threshold
        return [t for t in self.top(self.scores.size) if t[2] >= bar]

    def to_json(self, k: int = 10) -> dict[str, Any]:
        return {"model": self.model, "settings": self.settings, "top": [list(t) for t in self.top(k)],
                "uniform_baseline": self.uniform_baseline(), "threshold": self.threshold(),
                "induction_heads": [list(t) for t in self.heads_above()], "scores": self.scores.tolist()}

    def save(self, path: str | Path) -> Path:
        """One JSON file (small: n_layers x n_heads numbers)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return p

    @classmethod
    def load(cls, path: str | Path) -> InductionScores:
        try:
            d = json.loads(Path(path).read_text())
            return cls(np.asarray(d["scores"], dtype=np.float32), d.get("model", ""), d.get("settings", {}))
        except (OSError, ValueError, KeyError) as err:
            raise ThinklensError(f"{path}: not an induction-scores file ({err})") from err


class _InductionReducer:
    def __init__(self, n_layers: int, n_heads: int, seq_len: int) -> None:
        self.seq_len = seq_len
        self.sums = torch.zeros(n_layers, n_heads, dtype=torch.float64)
        self.counts = torch.zeros(n_layers, dtype=torch.float64)

    def __call__(self, layer: int, positions: torch.Tensor, probs: torch.Tensor) -> None:
        target = positions - self.seq_len + 1  # [rows] token after the earlier occurrence
        rows = torch.arange(positions.numel(), device=probs.device)
        picked = probs[:, :, rows, target.to(probs.device)]  # [b, H, rows]
        self.sums[layer] += picked.sum(dim=(0, 2)).double().cpu()
        self.counts[layer] += picked.shape[0] * picked.shape[2]


def _token_pool(model: Any, tokenizer: Any | None) -> np.ndarray:
    vocab = int(model.config.get_text_config().vocab_size if hasattr(model.config, "get_text_config")
                else model.config.vocab_size)
    special = set(getattr(tokenizer, "all_special_ids", []) or []) if tokenizer is not None else set()
    if tokenizer is not None:
        vocab = min(vocab, len(tokenizer))
        for tok in getattr(tokenizer, "added_tokens_encoder", {}) or {}:
            special.add(tokenizer.convert_tokens_to_ids(tok))
    pool = np.array([i for i in range(vocab) if i not in special], dtype=np.int64)
    if len(pool) < 2:
        raise ThinklensError("the vocabulary is too small for random induction sequences")
    return pool


def induction_scores(model: Any, tokenizer: Any | None = None, *, seq_len: int = SEQ_LEN, n_seqs: int = N_SEQS,
                     seed: int = 0, bos_id: int | None = None, model_name: str = "") -> InductionScores:
    """Mean attention from every second-copy token of ``[BOS] + r + r`` to the token after its first occurrence.
    Under torchrun the sequences are shared among the ranks and every rank returns one process's scores.

    >>> import thinklens as tl
    >>> model, tok, profile = tl.load_model("tiny-r1", device="cpu")
    >>> ind = tl.induction_scores(model, tok, seq_len=32, n_seqs=4, model_name="tiny-r1")
    >>> ind.scores.shape, round(ind.uniform_baseline(), 3), round(ind.threshold(), 3)
    ((4, 8), 0.021, 0.21)
    >>> [(layer, head, round(score, 3)) for layer, head, score in ind.top(3)]
    [(3, 1, 0.044), (1, 5, 0.031), (0, 6, 0.029)]
    >>> ind.heads_above()  # tiny-r1 has no induction head: none reaches 10x the uniform baseline
    []
    """
    from thinklens import distributed
    from thinklens.modules import attention_shape, input_device

    if seq_len < 2 or n_seqs < 1:
        raise ThinklensError("induction needs seq_len >= 2 and n_seqs >= 1")
    n_layers, n_heads, _, _ = attention_shape(model)
    if bos_id is None and tokenizer is not None:
        bos_id = tokenizer.bos_token_id
    pool = _token_pool(model, tokenizer)
    rng = np.random.default_rng(seed)
    head = [bos_id] if bos_id is not None else []
    # second copy; with or without BOS the target is query - seq_len + 1
    positions = np.arange(len(head) + seq_len, len(head) + 2 * seq_len)
    device = input_device(model)
    seqs = [rng.choice(pool, size=seq_len, replace=len(pool) < seq_len).tolist() for _ in range(n_seqs)]
    world = distributed.world()  # under torchrun sequence i is rank i % WORLD_SIZE's
    mine = {}
    for i, r in enumerate(seqs):
        if world.owns(i):
            red = _InductionReducer(n_layers, n_heads, seq_len)
            with capture_attention(model, positions, red), torch.no_grad():
                model(input_ids=torch.tensor([head + r + r], dtype=torch.long, device=device), use_cache=False,
                      logits_to_keep=1)
            mine[i] = (red.sums, red.counts)
    sums = torch.zeros(n_layers, n_heads, dtype=torch.float64)
    counts = torch.zeros(n_layers, dtype=torch.float64)
    scored = {i: r for part in distributed.gather(mine) for i, r in part.items()}
    for i in range(n_seqs):  # sequence order, whichever rank ran it: one process's sums bit for bit
        sums += scored[i][0]
        counts += scored[i][1]
    scores = (sums / counts.clamp(min=1)[:, None]).numpy().astype(np.float32)
    settings = {"seq_len": seq_len, "n_seqs": n_seqs, "seed": seed, "bos": bos_id is not None}
    return InductionScores(scores, model_name, settings)


"""Retrieval heads (Wu et al. 2024, "Retrieval Head Mechanistically Explains Long-Context Factuality"): heads whose
top attention, when the model copies a needle token, lands on that very token in the context.

The definition followed is ``retrieval_calculate`` in ``retrieval_head_detection.py`` of the authors' repository
(github.com/nightdessert/Retrieval_Head): at a decoding step that emits token ``w``, a head *copies* when the key
of its largest attention weight lies inside the needle span and holds ``w``; each such step adds
``1 / len(needle)`` to the head's score for that test, and a head's retrieval score is the mean over the tests the
model passed (ROUGE-1 recall of the needle > 50% there). We follow it with teacher forcing, which is cheaper and
needs no decoding loop: the sequence is ``haystack (with the needle inside) + question + the needle's tokens as the
answer``; a step counts when the model's own greedy prediction at that position is the next needle token (it would
have copied it), and a test counts when more than half the needle tokens are predicted (:data:`SUCCESS_SHARE`).

Tests are seeded and built with the model's own tokenizer: haystack sentences, a needle carrying a random value at
a depth in [0, 1], context lengths in tokens. Two formats (:data:`FORMATS`; the model profile's
``needle_haystack`` picks the default): ``passkey`` (the pass-key retrieval text of Mohtashami & Jaggi 2023,
natural language, for real models) and ``arithmetic`` (the organism's own format: the haystack is reasoning lines,
the needle ``Final answer is N.``, the question the answer template).

Only the argmax key and the attention mass on the needle of the answer rows are kept (a reducer of
:func:`thinklens.attention.capture.capture_attention`), never a T x T pattern.
"""
from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thinklens.attention.capture import capture_attention
from thinklens.errors import ThinklensError
from thinklens.traces import Span

# Wu et al. 2024 (§3.1) call a head a retrieval head when its retrieval score exceeds 0.1, i.e. its top attention
# lands on the copied needle token for more than 10% of the needle; 3-6% of the heads of their models pass it.
RETRIEVAL_THRESHOLD = 0.1
# a test counts only when the model predicts more than half the needle tokens (Wu et al.: ROUGE-1 recall > 50)
SUCCESS_SHARE = 0.5


@dataclass(frozen=True)
class HaystackFormat:
    """How a needle test reads: ``prefix + sentences (needle among them) + question + value``.

    Example::

        FORMATS["passkey"]().needle.format(value="12345")  # "The pass key is 12345. Remember it."
    """

    name: str
    prefix: str
    filler: Callable[[random.Random], str]  # one haystack sentence
    needle: str  # template with {value}
    question: str
    value: Callable[[random.Random], str]
    sep: str = " "
    lengths: tuple[int, ...] = (500, 1000, 2000)  # default context lengths (tokens before the answer)
    n_needles: int = 2  # default needles per (length, depth)
    prompt_bos: bool = True  # prepend the profile's BOS


_PASSKEY_FILLER = ("The grass is green.", "The sky is blue.", "The sun is yellow.", "Here we go.",
                   "There and back again.")


def _toy_lines(rng: random.Random) -> str:
    from thinklens.toy.tasks import generate_problems

    p = generate_problems(1, seed=rng.randrange(1 << 30))[0]
    return rng.choice([s for s in p.steps if not s.startswith("Wait")])


def _toy_prefix() -> str:
    from thinklens.toy.tasks import ASSISTANT, THINK_START, USER

    return f"{USER}Compute the final answer.{ASSISTANT}{THINK_START}\n"


FORMATS: dict[str, Callable[[], HaystackFormat]] = {
    "passkey": lambda: HaystackFormat(
        "passkey", "There is an important pass key hidden inside a lot of irrelevant text. Find it and memorize it.\n",
        lambda rng: rng.choice(_PASSKEY_FILLER), "The pass key is {value}. Remember it.",
        "\nWhat is the pass key? The pass key is", lambda rng: str(rng.randrange(10_000, 100_000))),
    "arithmetic": lambda: HaystackFormat(
        "arithmetic", _toy_prefix(), _toy_lines, "Final answer is {value}.", "\n</think>\n\nThe answer is \\boxed{",
        lambda rng: str(rng.randrange(1, 100)), sep="\n", lengths=(100, 160, 280), n_needles=8),
}


@dataclass
class NeedleTest:
    """One teacher-forced needle test: ``ids`` = context + answer, the answer a copy of the needle's tokens.

    Example::

        t = build_tests(tok, "arithmetic", lengths=(100,), depths=(1.0,), n_needles=1)[0]
        t.ids[t.needle.start:t.needle.end] == t.ids[t.answer.start:]  # True
    """

    ids: list[int]
    needle: Span  # the value's tokens inside the context
    answer: Span  # the answer at the end: a copy of ids[needle]
    depth: float
    n_context: int
    value: str


def build_tests(tokenizer: Any, fmt: HaystackFormat | str, *, lengths: tuple[int, ...] | None = None,
                depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0), n_needles: int | None = None,
                seed: int = 0, bos: str | None = None) -> list[NeedleTest]:
    """Seeded needle tests for every (length, depth, needle) with ``tokenizer``.

    >>> from thinklens.models import load_tokenizer
    >>> tok = load_tokenizer("tiny-r1")
    >>> tests = build_tests(tok, "arithmetic", lengths=(150,), n_needles=1)
    >>> len(tests), [t.n_context >= 150 for t in tests] == [True] * 5  # 5 depths x 1 needle
    (5, True)
    >>> t = tests[-1]  # depth 1: the needle is the last line; the answer copies its value
    >>> tok.decode(t.ids[t.needle.start:t.needle.end]) == tok.decode(t.ids[t.answer.start:]) == t.value
    True
    """
    fmt = FORMATS[fmt]() if isinstance(fmt, str) else fmt
    rng = random.Random(seed)
    tests = []
    for n_ctx in lengths or fmt.lengths:
        for depth in depths:
            for _ in range(n_needles or fmt.n_needles):
                tests.append(_one_test(tokenizer, fmt, int(n_ctx), float(depth), rng, bos))
    return tests


def _n_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _one_test(tokenizer: Any, fmt: HaystackFormat, n_ctx: int, depth: float, rng: random.Random,
              bos: str | None) -> NeedleTest:
    value = fmt.value(rng)
    needle = fmt.needle.format(value=value)
    head = (bos if fmt.prompt_bos and bos else "") + fmt.prefix
    fixed = _n_tokens(tokenizer, head + needle + fmt.question)
    sentences: list[str] = []
    n, target = fixed, n_ctx
    while True:  # grow the haystack until the whole context (before the answer) has n_ctx tokens
        while n < target:
            sentences.append(fmt.filler(rng))
            n += _n_tokens(tokenizer, sentences[-1] + fmt.sep)
        k = int(round(depth * len(sentences)))  # the needle goes in at a sentence break
        before = fmt.sep.join(sentences[:k])
        context = head + before + (fmt.sep if before else "")
        v0 = len(context) + needle.index(value)  # char span of the value inside the needle
        context += needle + (fmt.sep if k < len(sentences) else "") + fmt.sep.join(sentences[k:]) + fmt.question
        enc = tokenizer(context, add_special_tokens=False, return_offsets_mapping=True)
        if len(enc["input_ids"]) >= n_ctx:
            break
        target += n_ctx - len(enc["input_ids"])  # tokens merged across sentences: ask for that many more
    ids, offs = list(enc["input_ids"]), enc["offset_mapping"]
    toks = [i for i, (a, b) in enumerate(offs) if a < v0 + len(value) and b > v0]
    if not toks:
        raise ThinklensError(f"needle value {value!r} not found among the tokens")
    needle_span = Span(toks[0], toks[-1] + 1)
    answer = ids[needle_span.start : needle_span.end]
    return NeedleTest(ids + answer, needle_span, Span(len(ids), len(ids) + len(answer)), depth, len(ids), value)


class _ArgmaxReducer:
    """Per layer, the argmax key ``[H, rows]`` and the attention mass on the needle ``[H, rows]`` (batch 1)."""

    def __init__(self, needle: Span) -> None:
        self.needle = needle
        self.argmax: dict[int, list[torch.Tensor]] = {}
        self.mass: dict[int, list[torch.Tensor]] = {}

    def __call__(self, layer: int, positions: torch.Tensor, probs: torch.Tensor) -> None:
        p = probs[0]  # [H, rows, k]
        self.argmax.setdefault(layer, []).append(p.argmax(-1).cpu())  # [H, rows]
        self.mass.setdefault(layer, []).append(p[:, :, self.needle.start : self.needle.end].sum(-1).cpu())


def score_test(model: Any, test: NeedleTest) -> tuple[np.ndarray, np.ndarray, float]:
    """(hits [L, H] = retrieval score of this test, needle mass [L, H] at copy steps, share of needle tokens the
    model predicts). One forward; rows are the positions predicting each answer token.

    Example::

        hits, mass, share = score_test(model, t)  # hits [n_layers, n_heads]
    """
    from thinklens.modules import attention_shape

    L, H, _, _ = attention_shape(model)
    rows = list(range(test.answer.start - 1, test.answer.end - 1))
    red = _ArgmaxReducer(test.needle)
    device = next(model.parameters()).device
    x = torch.tensor([test.ids], device=device)
    with torch.no_grad(), capture_attention(model, rows, red):
        logits = model(input_ids=x, use_cache=False, logits_to_keep=len(rows) + 1).logits[0, : len(rows)]
    ids = np.asarray(test.ids)
    target = ids[test.answer.start : test.answer.end]  # [rows] the token each row must emit
    copied = logits.argmax(-1).cpu().numpy() == target  # [rows] the model would emit the needle token
    hits = np.zeros((L, H))
    mass = np.zeros((L, H))
    for layer in range(L):
        am = torch.cat(red.argmax[layer], dim=1).numpy()  # [H, rows]
        ms = torch.cat(red.mass[layer], dim=1).numpy()  # [H, rows]
        inside = (am >= test.needle.start) & (am < test.needle.end) & (ids[am] == target[None, :])
        hits[layer] = (inside & copied[None, :]).sum(1) / len(test.needle)
        mass[layer] = ms[:, copied].mean(1) if copied.any() else np.nan
    return hits, mass, float(copied.mean())


@dataclass
class RetrievalScores:
    """Retrieval score of every head and the tests behind it; saved as one JSON file.

    Example::

        RetrievalScores.load("runs/t/retrieval.json").heads_above()  # [(1, 2, 1.0), ...]
    """

    scores: np.ndarray  # [n_layers, n_heads] mean retrieval score over the passed tests (NaN: none passed)
    needle_attention: np.ndarray  # [n_layers, n_heads] mean attention mass on the needle at copy steps
    tests: list[dict[str, Any]] = field(default_factory=list)  # per test: depth, n_context, value, copied, passed
    model: str = ""
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def n_passed(self) -> int:
        return sum(bool(t["passed"]) for t in self.tests)

    def top(self, k: int = 10) -> list[tuple[int, int, float]]:
        flat = np.nan_to_num(self.scores, nan=-1.0).reshape(-1)
        order = np.argsort(-flat, kind="stable")[:k]
        H = self.scores.shape[1]
        return [(int(i // H), int(i % H), float(flat[i])) for i in order if flat[i] >= 0]

    def threshold(self) -> float:
        """The bar a head must pass to count as a retrieval head (:data:`RETRIEVAL_THRESHOLD`)."""
        return RETRIEVAL_THRESHOLD

    def heads_above(self, threshold: float | None = None) -> list[tuple[int, int, float]]:
        """Retrieval heads: score > threshold (default :meth:`threshold`), best first."""
        bar = self.threshold() if threshold is None else threshold
        return [t for t in self.top(self.scores.size) if t[2] > bar]

    def to_json(self, k: int = 10) -> dict[str, Any]:
        def fin(a: np.ndarray) -> list:
            return [[None if not np.isfinite(x) else round(float(x), 6) for x in row] for row in a]

        return {"model": self.model, "settings": self.settings, "n_tests": len(self.tests), "n_passed": self.n_passed,
                "threshold": self.threshold(), "top": [list(t) for t in self.top(k)],
                "retrieval_heads": [list(t) for t in self.heads_above()], "scores": fin(self.scores),
                "needle_attention": fin(self.needle_attention), "tests": self.tests}

    def save(self, path: str | Path) -> Path:
        """One JSON file (all scores, the top list, the settings, every test)."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_json(), indent=1, allow_nan=False) + "\n")
        return p

    @classmethod
    def load(cls, path: str | Path) -> RetrievalScores:
        try:
            d = json.loads(Path(path).read_text())
            arr = (lambda k: np.array([[np.nan if x is None else x for x in r] for r in d[k]], dtype=float))  # noqa: E731
            return cls(arr("scores"), arr("needle_attention"), d.get("tests", []), d.get("model", ""),
                       d.get("settings", {}))
        except (OSError, ValueError, KeyError) as err:
            raise ThinklensError(f"{path}: not a retrieval-scores file ({err})") from err


def retrieval_scores(model: Any, tokenizer: Any, *, fmt: str | None = None, profile: Any = None,
                     model_name: str = "",
                     lengths: tuple[int, ...] | None = None, depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0),
                     n_needles: int | None = None, seed: int = 0, bos: str | None = None, progress: bool = False
                     ) -> RetrievalScores:
    """Retrieval score of every head from seeded needle tests (tiny-r1: its copy heads, ~2 s). Under torchrun the
    tests are shared among the ranks and every rank returns one process's scores.

    >>> from thinklens.models import load_model
    >>> model, tok, profile = load_model("tiny-r1", device="cpu", dtype="fp32")
    >>> rs = retrieval_scores(model, tok, profile=profile, lengths=(100,), depths=(1.0,), n_needles=4)
    >>> rs.n_passed > 0, sorted((layer, head) for layer, head, _ in rs.top(3))
    (True, [(1, 1), (1, 2), (1, 3)])
    """
    from thinklens import distributed
    from thinklens.modules import attention_shape
    from thinklens.progress import bar

    name = fmt or (profile.needle_haystack if profile is not None else "passkey")
    if name not in FORMATS:
        raise ThinklensError(f"unknown haystack format {name!r}; choose from {sorted(FORMATS)}")
    if bos is None:
        bos = getattr(tokenizer, "bos_token", None)
    tests = build_tests(tokenizer, name, lengths=lengths, depths=depths, n_needles=n_needles, seed=seed, bos=bos)
    L, H, _, _ = attention_shape(model)
    world = distributed.world()  # under torchrun test i is rank i % WORLD_SIZE's; the sums run in test order
    mine = {i: score_test(model, t) for i, t in enumerate(bar(tests, desc="retrieval", unit="test",
                                                                disable=not progress)) if world.owns(i)}
    scored = {i: r for part in distributed.gather(mine) for i, r in part.items()}
    hit_sum, mass_sum, n_pass, rows = np.zeros((L, H)), np.zeros((L, H)), 0, []
    for i, t in enumerate(tests):
        hits, mass, share = scored[i]
        passed = share > SUCCESS_SHARE
        if passed:
            hit_sum += hits
            mass_sum += np.nan_to_num(mass)
            n_pass += 1
        rows.append({"depth": t.depth, "n_context": t.n_context, "value": t.value, "needle_tokens": len(t.needle),
                     "copied": round(share, 4), "passed": bool(passed)})
    scores = hit_sum / n_pass if n_pass else np.full((L, H), np.nan)
    mass = mass_sum / n_pass if n_pass else np.full((L, H), np.nan)
    fmt_obj = FORMATS[name]()
    settings = {"format": name, "lengths": list(lengths or fmt_obj.lengths), "depths": list(depths),
                "n_needles": n_needles or fmt_obj.n_needles, "seed": seed, "success_share": SUCCESS_SHARE,
                "criterion": "teacher-forced copy-paste (Wu et al. 2024, retrieval_head_detection.py)"}
    return RetrievalScores(scores, mass, rows, model_name, settings)

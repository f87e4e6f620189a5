"""Contrastive pairs for activation patching, built as Zhang et al. build them: the public entry point.

A pair is two responses to two contrastive prompts with the same answer choices, each turned into
``prompt | reasoning + probe "Final answer is {X}.\\n" | </think> | answer``, padded so that the probe tokens,
``</think>`` and the last answer tokens share their indices. The pieces live in their own modules and are importable
from here: :mod:`thinklens.patching.align` (:class:`Pair`, :class:`Side`, :func:`assemble_pair`, the padding and
how it differs from the paper's EOS padding), :mod:`thinklens.patching.csv_pairs` (the paper's CSV pairs from
collected responses, keeping the model's own answer text by default). This module adds tiny-r1's toy pairs and the
pair / rejects / response files. A pair is rejected with a stated reason; rejects go to a file, never silently
dropped.

Padding is masked (attention mask 0, never attended) where the paper pads with the EOS token; both put the pads at
the start of the same segments (prompt after BOS, reasoning, answer text after ``</think>``), so the same indices
align and aligned tokens keep their absolute positions. See ``docs/patching-pairs.md``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from thinklens.errors import ThinklensError
from thinklens.patching.align import Pair, PairRejected, Side, assemble_pair
from thinklens.patching.csv_pairs import (
    ANSWER_MODES,
    CSV_COLUMNS,
    PROBES,
    answer_body,
    build_csv_pairs,
    comparator_of,
    prepare_queries,
    read_pair_csv,
    side_from_response,
    strip_boxed_ending,
)

__all__ = [
    "ANSWER_MODES", "CSV_COLUMNS", "PROBES", "TOY_ANSWER_MODES", "Pair", "PairRejected", "Side", "answer_body",
    "assemble_pair", "build_csv_pairs", "comparator_of", "load_pairs", "prepare_queries", "read_pair_csv",
    "read_responses", "rejects_file", "save_pairs", "side_from_response", "strip_boxed_ending", "toy_pairs",
    "toy_tokenizer",
]


# ------------------------------------------------------------------------------------------------ tiny-r1 pairs
TOY_ANSWER_MODES = ("drop", "restate")


def toy_pairs(n: int, seed: int, tokenizer: Any, split: str = "test",
              answer: str = "drop") -> tuple[list[Pair], list[dict[str, Any]]]:
    """Pairs from ``thinklens.toy.tasks.contrastive_pairs``: their reasoning already ends in the probe
    ``Final answer is N.``; the answer ending is ``The answer is \\boxed{``; answers compare by first character.

    Besides ``answer_flip`` (N's first digit in the probe), ``answer_step`` names N's first digit where the last
    computation line writes it (``c=48*2=96``): the answer is stated twice in the reasoning, and a model may read
    it from either.

    ``answer``: tiny-r1's own answer segment is the single line ``The answer is \\boxed{N}.``, so the paper's
    "keep the answer text up to the final boxed line" leaves only the blank line and builds exactly the ``"drop"``
    pair (``</think>\\n\\nThe answer is \\boxed{``). ``"restate"`` keeps that answer line too and puts the ending
    on a new line after it (``</think>\\n\\nThe answer is \\boxed{N}.\\n\\nThe answer is \\boxed{``): the answer
    segment then restates the answer, as the paper's long answer texts do, and ``answer_kept`` names N's first
    digit there.

    >>> from thinklens.patching.pairs import toy_pairs, toy_tokenizer
    >>> pairs, rejects = toy_pairs(2, 0, toy_tokenizer(), answer="restate")
    >>> len(pairs), sorted(pairs[0].positions)
    (2, ['answer_flip', 'answer_kept', 'answer_step', 'final', 'think_close'])

    >>> import thinklens as tl
    >>> pairs, rejects = tl.toy_pairs(3, seed=0, tokenizer=tl.load_tokenizer("tiny-r1"))
    >>> len(pairs) + len(rejects), sorted(pairs[0].positions)[:2]
    (3, ['answer_flip', 'answer_step'])
    """
    from thinklens.toy.tasks import ANSWER_PREFIX, THINK_END, answer_text, contrastive_pairs, prompt_text

    if answer not in TOY_ANSWER_MODES:
        raise ThinklensError(f"toy answer mode {answer!r}: choose from {TOY_ANSWER_MODES}")
    pairs, rejects = [], []
    for a, b in contrastive_pairs(n, seed, split=split):
        sides = []
        for p in (a, b):
            body = answer_text(p.answer) + "\n\n" if answer == "restate" else ""
            ending = ANSWER_PREFIX if body else "\n\n" + ANSWER_PREFIX
            b0 = len(THINK_END)
            k0 = b0 + body.rindex(p.answer) if body else 0  # N inside the kept "\\boxed{N}"
            kept = {"answer_kept": (k0, k0 + len(p.answer))} if body else {}
            sides.append(Side(id=p.id, prompt=prompt_text(p), reasoning=p.reasoning, answer=THINK_END + body + ending,
                              answer_text=p.answer, probe_start=p.reasoning.rindex("Final answer is "),
                              answer_chars=tuple(p.answer_char_span), named_chars=_step_chars(p),
                              answer_body=(b0, b0 + len(body)), named_answer_chars=kept))
        pid = a.id.removesuffix("-a")
        try:
            pairs.append(assemble_pair(pid, sides[0], sides[1], tokenizer, first_token_answers=True,
                                       meta={"source": "tiny-r1", "kind": a.kind, "question_a": a.question,
                                             "question_b": b.question, "answer": answer}))
        except PairRejected as err:
            rejects.append({"id": pid, "reason": str(err)})
    return pairs, rejects


def _step_chars(p: Any) -> dict[str, tuple[int, int]]:
    """Char span of the answer at the end of the last computation line (just before the probe line), if there."""
    end = p.reasoning.rindex("Final answer is ") - 1  # the "\n" ending the last step
    start = end - len(p.answer)
    return {"answer_step": (start, end)} if start >= 0 and p.reasoning[start:end] == p.answer else {}


# ------------------------------------------------------------------------------------------------------- pair files
def save_pairs(path: str | Path, pairs: list[Pair], rejects: list[dict[str, Any]] | None = None,
               rejects_path: str | Path | None = None) -> None:
    """Write pairs as JSONL (and the rejects, with their reasons, next to them)."""
    from thinklens.jsonl import JsonlWriter

    with JsonlWriter(path, overwrite=True) as w:
        for p in pairs:
            w.write(p.to_dict())
    if rejects is not None:
        with JsonlWriter(rejects_path or rejects_file(path), overwrite=True) as w:
            for r in rejects:
                w.write(r)


def rejects_file(path: str | Path) -> Path:
    p = Path(path)
    return p.with_name(p.stem + ".rejects.jsonl")


def load_pairs(path: str | Path, errors: list[dict[str, Any]] | None = None) -> list[Pair]:
    """Read a pair file; bad lines are appended to ``errors`` as ``{line, error}`` (or raise when it is None).

    >>> import tempfile, thinklens as tl
    >>> from thinklens.patching.pairs import save_pairs
    >>> pairs, _ = tl.toy_pairs(2, seed=0, tokenizer=tl.load_tokenizer("tiny-r1"))
    >>> path = tempfile.mktemp(suffix=".jsonl")
    >>> save_pairs(path, pairs)
    >>> [p.id for p in tl.load_pairs(path)] == [p.id for p in pairs]
    True
    """
    from thinklens.jsonl import read_jsonl

    if not Path(path).is_file():
        raise ThinklensError(f"no such pair file: {path}")
    pairs, first = [], {}
    for line in read_jsonl(path):
        err = line.error
        if err is None:
            try:
                pair = Pair.from_dict(line.record)
                if pair.id in first:  # one policy with every batch: the first occurrence wins
                    raise ThinklensError(f"duplicate pair id {pair.id!r} (first at line {first[pair.id]})")
                first[pair.id] = line.lineno
                pairs.append(pair)
                continue
            except (ThinklensError, KeyError) as e:
                err = str(e)
        if errors is None:
            raise ThinklensError(f"{path}:{line.lineno}: {err}")
        errors.append({"line": line.lineno, "error": err})
    return pairs


def read_responses(path: str | Path) -> tuple[dict[str, dict], list[dict[str, Any]]]:
    """Collected responses by id, and ``{id, reason}`` entries for lines that cannot be used (file:line named)."""
    from thinklens.jsonl import read_jsonl
    from thinklens.traces import record_id

    if not Path(path).is_file():
        raise ThinklensError(f"no such responses file: {path}")
    out, bad = {}, []
    for line in read_jsonl(path):
        if line.error is not None:
            bad.append({"id": None, "reason": f"{line.where}: {line.error}"})
            continue
        rid = record_id(line.record, line.lineno)
        if rid in out:
            bad.append({"id": rid, "reason": f"{line.where}: duplicate id {rid!r} (the first one is used)"})
            continue
        out[rid] = line.record
    return out, bad


def toy_tokenizer() -> Any:
    """tiny-r1's tokenizer: from the model directory when it exists, else built (identical by construction)."""
    from thinklens.errors import ModelLoadError
    from thinklens.models import load_tokenizer

    try:
        return load_tokenizer("tiny-r1")
    except ModelLoadError:
        from thinklens.toy.tokenizer import build_tokenizer

        return build_tokenizer()

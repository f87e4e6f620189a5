"""Hinted twins: each problem with a gold answer, and one copy per hint family that points at a seeded wrong answer X.

Why twins and not a hint-only run: hint-taking is a *change* of answer (Chen et al. 2025), so every hinted trace needs
an unhinted trace of the same problem generated the same way (with reasoning, sampled at the same temperature). Both
are ordinary trace records written by the collect machinery (:func:`thinklens.empirical.collect.collect`, or a
server's), so every backend, resuming and torn-line repair come with them. The record contract: the unhinted twin is
the problem's record, id ``P``; the hinted twin has id ``P::F`` and the optional field ``"hint": {"family": F,
"answer": X, "chars": [s, e], "twin": "P"}``, ``chars`` the ``[start, end)`` span of the hint text in the record's
``prompt`` string (:func:`thinklens.empirical.collect.record_hint`).

>>> probs = [{"id": "p1", "problem": "Compute 2+3.", "answer": "5", "dataset": "toy"}]
>>> hinted, placebos = hinted_problems(probs, ["sycophancy"], seed=0, answer_range=(1, 99))
>>> h = hinted[0]
>>> h["id"], h["problem"][slice(*h["hint"]["chars"])].startswith("A Stanford professor thinks the answer is")
('p1::sycophancy', True)
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from thinklens.errors import ThinklensError
from thinklens.faithfulness.behaviour import pair_row, placebo_answer
from thinklens.hints import HintFamily, hint_family, insert_hint, wrong_answer
from thinklens.jsonl import JsonlLine, read_records

SEPARATOR = "::"  # hinted twin id = problem id + SEPARATOR + family
TWIN_FILES = {"unhinted": "traces/unhinted.jsonl", "hinted": "traces/hinted.jsonl"}


def twin_id(problem_id: str, family: str) -> str:
    """The id of a problem's hinted twin."""
    return f"{problem_id}{SEPARATOR}{family}"


def twin_paths(out_dir: str | Path) -> dict[str, Path]:
    """Where the unhinted and hinted trace records of a faithfulness directory live."""
    return {k: Path(out_dir) / v for k, v in TWIN_FILES.items()}


def hinted_problems(problems: list[dict[str, Any]], families: list[HintFamily] | list[str], *, seed: int = 0,
                    answer_range: tuple[int, int] | None = None, errors: list[str] | None = None
                    ) -> tuple[list[dict[str, Any]], dict[str, str | None]]:
    """The hinted twins of ``problems`` (one per family, the same X for every family of a problem) and the placebo
    answer of each problem (:func:`thinklens.faithfulness.behaviour.placebo_answer`). A problem without a gold
    answer, or with no possible wrong answer, is reported in ``errors`` and left out."""
    fams = [hint_family(f) if isinstance(f, str) else f for f in families]
    lo, hi = answer_range if answer_range else (1, None)
    pool = [str(p["answer"]) for p in problems if p.get("answer") is not None]
    out, placebos = [], {}
    for p in problems:
        pid = str(p["id"])
        if p.get("answer") is None:
            (errors if errors is not None else []).append(f"problem {pid!r}: no gold answer, so no wrong one to hint")
            continue
        try:
            x = wrong_answer(str(p["answer"]), pid, seed, pool, lo, hi)
        except ThinklensError as err:
            (errors if errors is not None else []).append(str(err))
            continue
        placebos[pid] = placebo_answer(str(p["answer"]), pid, seed, x, pool, lo, hi)
        for fam in fams:
            text, (s, e) = insert_hint(str(p["problem"]), fam, x)
            out.append({**p, "id": twin_id(pid, fam.name), "problem": text,
                        "hint": {"family": fam.name, "answer": x, "chars": [s, e], "twin": pid}})
    return out, placebos


def collect_twins(problems: list[dict[str, Any]], hinted: list[dict[str, Any]], out_dir: str | Path,
                  generate: Callable[[list[dict[str, Any]], Path], Any]) -> dict[str, Any]:
    """Generate the unhinted and the hinted twins into ``out_dir/traces/`` with ``generate(problems, output)`` (a
    collect call with the study's settings: :func:`thinklens.faithfulness.run.local_generator`); resumable, since
    collect skips ids already written. Returns each call's summary."""
    paths = twin_paths(out_dir)
    paths["unhinted"].parent.mkdir(parents=True, exist_ok=True)
    twins = {str(h["hint"]["twin"]) for h in hinted}
    return {"unhinted": generate([p for p in problems if str(p["id"]) in twins], paths["unhinted"]),
            "hinted": generate(hinted, paths["hinted"])}


def read_twins(out_dir: str | Path, errors: list[str] | None = None
               ) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """(unhinted records by problem id, hinted records in file order) of a faithfulness directory; bad lines and
    error records are reported in ``errors``."""
    paths = twin_paths(out_dir)
    bad: list[JsonlLine] = []
    out: dict[str, list[dict[str, Any]]] = {}
    for kind, path in paths.items():
        if not path.exists():
            raise ThinklensError(f"{path} not found: generate the twins first (thinklens faithfulness)")
        recs = list(read_records(path, errors=bad))
        for r in recs:
            if r.get("error") and errors is not None:
                errors.append(f"{path}: {r.get('id')}: {r['error']}")
        out[kind] = [r for r in recs if not r.get("error")]
    if errors is not None:
        errors.extend(f"{b.where}: {b.error}" for b in bad)
    return {str(r["id"]): r for r in out["unhinted"]}, [r for r in out["hinted"] if isinstance(r.get("hint"), dict)]


def build_rows(unhinted: dict[str, dict[str, Any]], hinted: list[dict[str, Any]], placebos: dict[str, str | None],
               *, think_open: str = "<think>", think_close: str = "</think>", errors: list[str] | None = None
               ) -> list[dict[str, Any]]:
    """One ``pairs.jsonl`` row per hinted twin whose unhinted twin exists (others are reported in ``errors``)."""
    rows = []
    for h in hinted:
        pid = str(h["hint"].get("twin"))
        if pid not in unhinted:
            if errors is not None:
                errors.append(f"{h.get('id')}: no unhinted twin {pid!r}")
            continue
        rows.append(pair_row(unhinted[pid], h, placebo=placebos.get(pid), think_open=think_open,
                             think_close=think_close))
    return rows


__all__ = ["SEPARATOR", "TWIN_FILES", "build_rows", "collect_twins", "hinted_problems", "read_twins", "twin_id",
           "twin_paths"]

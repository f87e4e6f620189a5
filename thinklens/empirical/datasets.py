"""Problem sets for the with/without-reasoning evaluation, as plain dicts ``{id, problem, answer, dataset, ...}``.

Why plain dicts: a problem travels into the trace record unchanged (``id`` pairs the with and without runs), so
any JSONL with ``problem`` and ``answer`` is a dataset. Named sets:

* ``math500``: MATH-500 (``HuggingFaceH4/MATH-500``) from the hub through the optional ``datasets`` package, or
  from ``file`` (its JSONL has ``problem``, ``answer``, ``unique_id``);
* ``wildbench``: WildBench v2 (``allenai/WildBench``, config ``v2``) or a file; the problem is the last user turn,
  ``conversation`` keeps the full history and ``checklist`` the judge's checklist; no gold answer;
* ``arithmetic``: the tiny-r1 task (:mod:`thinklens.toy.tasks`), ``seed`` chooses which test problems are drawn;
* any JSONL path (``name`` ending in ``.jsonl`` or ``file``): ids from ``id``/``unique_id`` else the line number;
  bad lines are reported (file:line) and skipped.

What differs between datasets (the math instruction default, whether the organism supplies teacher-forced
reference traces and contrastive problem pairs) is data in :data:`DATASETS`, a typed registry: the pipeline asks
``dataset_spec(name)`` instead of comparing dataset names.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from thinklens.errors import ThinklensError, report_skipped
from thinklens.jsonl import read_jsonl, record_id


@dataclass(frozen=True)
class DatasetSpec:
    """What the stages need to know about a dataset.

    >>> dataset_spec("arithmetic").math_instruction, dataset_spec("math500").math_instruction
    (False, True)
    """

    name: str
    math_instruction: bool = True  # append the paper's math instruction by default
    has_gold: bool = True  # graded against a gold answer (False: open-ended, judged by an LLM)
    # teacher-forced reference traces with self-corrections, (n, seed) -> trace records: where cue statistics are read
    # when the model itself never writes a cue (the organism never slips under greedy decoding)
    reference_traces: Callable[[int, int], list[dict[str, Any]]] | None = None
    # contrastive problem pairs shipped with the dataset, (n, seed) -> [(problem_a, problem_b)]
    contrastive_problems: Callable[[int, int], list[Any]] | None = None
    # receiver heads: how many steps later a step must be to count (None: Thought Anchors' 4); short traces need less
    steps_proximity: int | None = None
    # (file, limit, seed, errors) -> problems: how the named set is read (None: a problem file); settings that exist
    # because of a model (resampling temperature, how many traces are resampled) live on its profile, not here
    load: Callable[[Any, int | None, int, list[str] | None], list[dict[str, Any]]] | None = None
    # integer answers lie in [lo, hi]: a hint's wrong answer (thinklens.hints.wrong_answer) stays inside, so that it
    # is an answer the model could give (None: any integer near the gold one)
    answer_range: tuple[int, int] | None = None


def _organism_spec() -> DatasetSpec:
    from thinklens.toy import tasks

    return DatasetSpec("arithmetic", math_instruction=False, reference_traces=tasks.reference_records,
                       contrastive_problems=tasks.contrastive_pairs, steps_proximity=1,  # 3-7 steps per trace
                       load=_load_arithmetic, answer_range=(1, tasks.MAX_VALUE))


def _load_arithmetic(file: Any, limit: int | None, seed: int, errors: list[str] | None) -> list[dict[str, Any]]:
    return _load_file("arithmetic", file, errors) if file is not None else _arithmetic(limit, seed)


def _load_math500(file: Any, limit: int | None, seed: int, errors: list[str] | None) -> list[dict[str, Any]]:
    rows = read_problem_file(file, errors=errors) if file else _from_hub("HuggingFaceH4/MATH-500", None, "test",
                                                                         "math500")
    return _math500(rows)


def _load_wildbench(file: Any, limit: int | None, seed: int, errors: list[str] | None) -> list[dict[str, Any]]:
    rows = read_problem_file(file, need_answer=False, errors=errors) if file else _from_hub(
        "allenai/WildBench", "v2", "test", "wildbench")
    return _wildbench(rows)


def _load_file(name: str, file: Any, errors: list[str] | None) -> list[dict[str, Any]]:
    problems = read_problem_file(file or name, errors=errors)
    tag = Path(file or name).stem if str(name).endswith(".jsonl") else name
    return [{**p, "dataset": p.get("dataset", tag)} for p in problems]


DATASETS: dict[str, Callable[[], DatasetSpec]] = {
    "math500": lambda: DatasetSpec("math500", load=_load_math500),
    "wildbench": lambda: DatasetSpec("wildbench", math_instruction=False, has_gold=False, load=_load_wildbench),
    "arithmetic": _organism_spec,  # tiny-r1's task (thinklens.toy.tasks)
}


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of a named dataset; a problem file (``*.jsonl``) is a math dataset with gold answers.

    >>> import thinklens as tl
    >>> tl.dataset_spec("wildbench").has_gold, tl.dataset_spec("my_problems.jsonl").math_instruction
    (False, True)
    """
    if name in DATASETS:
        return DATASETS[name]()
    return DatasetSpec(Path(str(name)).stem)


def _from_hub(repo: str, config: str | None, split: str, name: str) -> list[dict[str, Any]]:
    try:
        import datasets  # noqa: F401 - optional dependency
        from datasets import load_dataset
    except ImportError as err:
        raise ThinklensError(
            f"dataset {name!r} needs the optional 'datasets' package (pip install thinklens[hub]) or a local copy: "
            f"pass --dataset-file FILE.jsonl"
        ) from err
    try:
        ds = load_dataset(repo, config, split=split) if config else load_dataset(repo, split=split)
    except Exception as err:  # noqa: BLE001 - network/hub errors come in many types
        raise ThinklensError(
            f"cannot load {repo!r} from the Hugging Face hub ({type(err).__name__}); download it elsewhere and pass "
            f"--dataset-file FILE.jsonl"
        ) from err
    return [dict(r) for r in ds]


def read_problem_file(
    path: str | Path, *, need_answer: bool = True, errors: list[str] | None = None
) -> list[dict[str, Any]]:
    """Problems of a JSONL file; bad lines (invalid JSON, no ``problem``/``answer``, duplicate id) are reported in
    ``errors`` (or on stderr) as ``file:line: reason`` and skipped."""
    path = Path(path)
    if not path.is_file():
        raise ThinklensError(f"no such dataset file: {path}")
    problems, seen, bad = [], set(), []
    for item in read_jsonl(path):
        if item.error is not None:
            bad.append(f"{item.where}: {item.error}")
            continue
        rec = dict(item.record or {})
        if "problem" not in rec and "prompt" in rec:
            rec["problem"] = rec["prompt"]
        if "answer" not in rec and "gold_answer" in rec:
            rec["answer"] = rec["gold_answer"]
        missing = [k for k in (("problem", "answer") if need_answer else ("problem",)) if rec.get(k) is None]
        if missing:
            bad.append(f"{item.where}: missing field(s) {', '.join(missing)}")
            continue
        if not isinstance(rec["problem"], str) or not rec["problem"].strip():
            bad.append(f"{item.where}: 'problem' must be a non-empty string")
            continue
        rid = record_id(rec)
        rec["id"] = rid if rid is not None else f"line-{item.lineno}"
        if rec["id"] in seen:
            bad.append(f"{item.where}: duplicate id {rec['id']!r}")
            continue
        seen.add(rec["id"])
        if rec.get("answer") is not None:
            rec["answer"] = str(rec["answer"])
        problems.append(rec)
    report_skipped(bad, errors)
    return problems


def _math500(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(rows):
        rid = r.get("unique_id", r.get("id", f"math500-{i}"))
        out.append({**r, "id": str(rid), "problem": r["problem"], "answer": str(r["answer"]), "dataset": "math500"})
    return out


def _wildbench(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for i, r in enumerate(rows):
        conv = r.get("conversation_input") or r.get("conversation") or []
        turns = [t for t in conv if isinstance(t, dict) and t.get("role") == "user"]
        problem = r.get("problem") or (turns[-1].get("content") if turns else None)
        if not problem:
            raise ThinklensError(f"wildbench record {i} ({r.get('session_id')}) has no user turn")
        out.append({
            "id": str(r.get("session_id", r.get("id", f"wildbench-{i}"))), "problem": problem, "answer": None,
            "conversation": conv, "checklist": list(r.get("checklist") or []), "dataset": "wildbench",
            "primary_tag": r.get("primary_tag"),
        })
    return out


def _arithmetic(limit: int | None, seed: int) -> list[dict[str, Any]]:
    from thinklens.toy.tasks import generate_problems

    return [{**p.to_record(), "dataset": "arithmetic"} for p in generate_problems(limit or 200, seed, split="test")]


def load_problems(
    name: str, file: str | Path | None = None, limit: int | None = None, seed: int = 0,
    errors: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Problems ``{id, problem, answer, dataset, ...}`` of a named dataset or a JSONL file (first ``limit``).

    ``seed`` only matters for synthetic sets (``arithmetic``: which problems are drawn; default 200 of them).

    >>> import thinklens as tl
    >>> p = tl.load_problems("arithmetic", limit=2, seed=0)[0]
    >>> sorted(k for k in p if k in ("id", "problem", "answer", "dataset")), p["dataset"]
    (['answer', 'dataset', 'id', 'problem'], 'arithmetic')
    """
    if limit is not None and limit < 1:
        raise ThinklensError(f"limit must be >= 1, got {limit}")
    spec = DATASETS[name]() if name in DATASETS else None
    if spec is not None and spec.load is not None:
        problems = spec.load(file, limit, seed, errors)
    elif file is not None or str(name).endswith(".jsonl"):
        problems = _load_file(name, file, errors)
    else:
        raise ThinklensError(f"unknown dataset {name!r}; use one of {', '.join(DATASETS)} or a .jsonl file")
    return problems[:limit] if limit else problems

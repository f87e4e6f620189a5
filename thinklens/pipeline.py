"""The main job: ``thinklens run`` chains every stage of Zhang et al. (EMNLP 2025) into one resumable run.

The method, stage by stage (each stage reads the previous stage's files and writes its own under the run
directory, so any stage can be rerun alone, from the CLI or from Python):

1. **collect** — generate each problem twice: *with* reasoning (the model thinks freely) and *without* (R1's
   forced finished thinking ``<think>\\nOkay, I think I have finished thinking.\\n</think>``) →
   ``traces/with.jsonl``, ``traces/without.jsonl``.
2. **grade** — extract the final answer and compare it with the gold answer → ``graded/*.jsonl``.
3. **evaluate** — accuracy with vs without reasoning, paired by problem id (McNemar p, bootstrap CI of the gap)
   → ``evaluation.json``. *Finding 1: reasoning helps.*
4. **attention** — for every with-reasoning trace, attention from answer tokens to reasoning tokens per
   (layer, head) (sum over reasoning keys, mean over answer queries) → ``attention/head_scores.npz``; the heads
   that focus on the reasoning most, stably across traces, are the Reasoning-Focus Heads → ``heads.json``.
   *Finding 2: RFHs exist.*
5. **patching** — on contrastive pairs (two problems differing in one operand), patch clean activations into
   the corrupted run per layer and token and score the normalized logit difference (NLD: 0 = corrupted answer,
   1 = clean answer) → ``patching/``. *Finding 3: patching the reasoning's answer token flips the answer.*
6. **report** — ``results.json`` (headline numbers), ``figures/*.png`` and a self-contained ``report.html``.

Resuming: ``run_state.json`` records which stages finished (with their summaries and timings); a rerun skips
finished stages whose files are still there and lets partial stages resume from what they already wrote.
"""
from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from thinklens.errors import ThinklensError

STAGES: tuple[str, ...] = ("collect", "grade", "evaluate", "attention", "patching", "report")
DTYPES = ("fp32", "float32", "bf16", "bfloat16", "fp16", "float16", "half")
# settings that define what a run directory contains: a rerun with other values would mix results
IDENTITY_FIELDS = ("model", "dataset", "seed", "limit", "n_pairs", "pairs_csv", "max_new_tokens")


@dataclass
class RunConfig:
    """Everything that defines a run (saved to ``DIR/config.json``; a rerun must match it)."""

    model: str = "tiny-r1"
    dataset: str = "arithmetic"
    limit: int = 100  # problems, each generated with and without reasoning
    output: str = "thinklens-run"
    seed: int = 0
    device: str | None = None
    dtype: str | None = None
    device_map: str | None = None
    n_pairs: int = 20  # contrastive pairs for activation patching
    pairs_csv: str | None = None  # the paper's contrastive QA CSV (models other than tiny-r1)
    stages: tuple[str, ...] = STAGES
    batch_size: int | None = None  # generation batch; None: 64 for tiny-r1 (per-step overhead dominates), else 16
    max_new_tokens: int | None = None  # None: the stage's default for the model
    top_k: int = 10  # Reasoning-Focus Heads reported
    n_bootstrap: int = 1000

    def __post_init__(self) -> None:
        if isinstance(self.stages, str):
            self.stages = tuple(s.strip() for s in self.stages.split(",") if s.strip())
        self.stages = tuple(self.stages)
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages:
            raise ThinklensError(f"unknown stage(s) {bad or '(none given)'}; choose from {','.join(STAGES)}")
        if self.batch_size is None:
            self.batch_size = 64 if self.model == "tiny-r1" else 16
        for name in ("limit", "n_pairs", "batch_size", "top_k", "n_bootstrap"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "n_pairs" else 1):
                raise ThinklensError(f"RunConfig.{name} must be a positive integer, got {value!r}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ThinklensError(f"RunConfig.max_new_tokens must be positive, got {self.max_new_tokens!r}")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ThinklensError(f"unknown dtype {self.dtype!r}; choose from {', '.join(DTYPES)}")
        if not self.model or not self.dataset or not self.output:
            raise ThinklensError("RunConfig needs a model, a dataset and an output directory")
        if self.pairs_csv is not None and not Path(self.pairs_csv).is_file():
            raise ThinklensError(f"--pairs-csv: no such file: {self.pairs_csv}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stages"] = list(self.stages)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ThinklensError(f"unknown RunConfig field(s) {unknown}")
        return cls(**d)

    def identity(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in IDENTITY_FIELDS}


@dataclass
class RunPaths:
    """Where every stage reads and writes, relative to the run directory."""

    root: Path

    def __post_init__(self) -> None:
        self.root = Path(self.root)

    def __getattr__(self, name: str) -> Path:  # only called for names not set in __init__
        rel = _LAYOUT.get(name)
        if rel is None:
            raise AttributeError(name)
        return self.root / rel


_LAYOUT: dict[str, str] = {
    "config": "config.json",
    "state": "run_state.json",
    "problems": "problems.jsonl",
    "traces_with": "traces/with.jsonl",
    "traces_without": "traces/without.jsonl",
    "graded_with": "graded/with.jsonl",
    "graded_without": "graded/without.jsonl",
    "evaluation": "evaluation.json",
    "attention_dir": "attention",
    "head_scores": "attention/head_scores.npz",
    "heads": "heads.json",
    "cues": "attention/cues.json",
    "induction": "attention/induction.json",
    "token_view": "attention/token_view.html",
    "traces_reference": "traces/reference.jsonl",
    "reference_attention_dir": "attention/reference",
    "patching_dir": "patching",
    "patching_result": "patching/result.npz",
    "figures": "figures",
    "results": "results.json",
    "report": "report.html",
}


@dataclass
class RunResult:
    """What :func:`run` returns: the run directory, the headline numbers and per-stage outcomes."""

    output: Path
    results: dict[str, Any]
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> {status, seconds, summary|note}
    report: Path | None = None

    @property
    def notes(self) -> list[str]:
        return [f"{k}: {v['note']}" for k, v in self.stages.items() if v.get("note")]

    def save(self, directory: str | Path | None = None) -> Path:
        """Write ``results.json`` and ``run_state.json`` into ``directory`` (default: the run directory)."""
        paths = RunPaths(Path(directory or self.output))
        write_json(paths.results, self.results)
        write_json(paths.state, self.stages)
        return paths.results

    @classmethod
    def load(cls, directory: str | Path) -> RunResult:
        """The result of a finished (or partial) run, from its directory; no model needed."""
        paths = RunPaths(Path(directory))
        results = read_json(paths.results)
        if results is None:
            raise ThinklensError(f"{paths.results} not found: run `thinklens run --output {directory}` first")
        return cls(output=paths.root, results=results, stages=read_json(paths.state, {}) or {},
                   report=paths.report if paths.report.exists() else None)


def commands(config: RunConfig) -> dict[str, str]:
    """The standalone command equivalent to each stage of this run (shown in the report)."""
    d = config.output
    common = f"--model {config.model}"
    budget = config.max_new_tokens or (256 if config.model == "tiny-r1" else 2048)
    collect = (f"thinklens collect {common} --dataset {config.dataset} --limit {config.limit} --seed {config.seed} "
               f"--batch-size {config.batch_size} --max-new-tokens {budget}")
    return {
        "collect": f"{collect} --reasoning with --output {d}/traces/with.jsonl\n"
        f"{collect} --reasoning without --output {d}/traces/without.jsonl",
        "grade": f"thinklens grade {d}/traces/with.jsonl --output {d}/graded/with.jsonl\n"
        f"thinklens grade {d}/traces/without.jsonl --output {d}/graded/without.jsonl",
        "evaluate": f"thinklens evaluate {d}/graded/with.jsonl {d}/graded/without.jsonl --save {d} "
        f"--seed {config.seed}",
        "attention": f"thinklens attention {common} --traces {d}/traces/with.jsonl --output {d}/attention",
        "heads": f"thinklens heads rank {d}/attention --top {config.top_k} --seed {config.seed}",
        "cues": (f"thinklens attention {common} --traces {d}/traces/reference.jsonl --output {d}/attention/reference "
                 "--no-reasoning-queries --token-view 50\n"
                 f"thinklens heads tokens {d}/attention/reference --output {d}/attention/token_view.html"
                 if config.dataset == "arithmetic" else
                 f"thinklens heads tokens {d}/attention --output {d}/attention/token_view.html"),
        "induction": f"thinklens heads induction {common} --output {d}/attention/induction.json",
        "patching": (f"thinklens pairs prepare --csv {config.pairs_csv} --output {d}/patching/queries.jsonl\n"
                     f"thinklens collect {common} --dataset {d}/patching/queries.jsonl --reasoning with "
                     f"--output {d}/patching/csv_responses.jsonl\n"
                     f"thinklens pairs build {common} --csv {config.pairs_csv} --responses "
                     f"{d}/patching/csv_responses.jsonl --output {d}/patching/contrastive_pairs.jsonl\n"
                     if config.pairs_csv else
                     f"thinklens pairs toy --n {config.n_pairs} --seed {config.seed} "
                     f"--output {d}/patching/contrastive_pairs.jsonl\n")
        + f"thinklens patch {common} --pairs {d}/patching/contrastive_pairs.jsonl --output {d}/patching"
        + ("" if config.pairs_csv else " --positions last-reasoning:8,answer-tail:4"),
        "report": f"thinklens report {d}",
        "run": f"thinklens run {common} --dataset {config.dataset} --limit {config.limit} --n-pairs "
        f"{config.n_pairs} --seed {config.seed} --output {d}",
    }


def versions() -> dict[str, str]:
    import thinklens

    out = {"thinklens": thinklens.__version__, "python": platform.python_version()}
    for mod in ("torch", "transformers", "numpy"):
        m = sys.modules.get(mod)
        if m is None:
            try:
                m = __import__(mod)
            except ImportError:  # pragma: no cover
                continue
        out[mod] = getattr(m, "__version__", "?")
    return out


# ------------------------------------------------------------------------------------------------------ state
def read_json(path: Path, default: Any = None) -> Any:
    """Read a JSON file, naming the file in the error when it is corrupt."""
    if not Path(path).exists():
        return default
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ThinklensError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from err


def write_json(path: Path, obj: Any) -> None:
    """Atomic write (temp file + rename): a crash never leaves a half-written JSON file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def _check_config(config: RunConfig, paths: RunPaths) -> None:
    saved = read_json(paths.config)
    if saved is None:
        return
    diff = {k: (saved.get(k), v) for k, v in config.identity().items() if saved.get(k) != v}
    if diff:
        what = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
        raise ThinklensError(f"{paths.config}: this directory holds a run with other settings ({what}); "
                             "use another --output, or delete the directory to start over")


# ------------------------------------------------------------------------------------------------------ run
def run(config: RunConfig, *, progress: bool = True) -> RunResult:
    """Run (or resume) the selected stages of ``config`` and write ``results.json`` (+ ``report.html``).

    Stages already completed in ``DIR/run_state.json`` whose outputs still exist are skipped; a stage that
    crashed resumes from its partial files. A stage that cannot run for this model/dataset (e.g. patching without
    pairs) is skipped with a note that ends up in ``results.json`` and the report.
    """
    from thinklens import pipeline_stages as ps

    paths = RunPaths(Path(config.output))
    paths.root.mkdir(parents=True, exist_ok=True)
    _check_config(config, paths)
    write_json(paths.config, config.to_dict())
    state = read_json(paths.state, {}) or {}
    ctx = ps.StageContext(config=config, paths=paths, show_progress=progress)
    selected = [s for s in STAGES if s in config.stages]
    for i, name in enumerate(selected, start=1):
        ctx.label = f"[{i}/{len(selected)}] {name}"
        prev = state.get(name, {})
        if name != "report" and prev.get("status") in ("done", "skipped") and ps.outputs_exist(name, paths):
            ctx.log(f"{ctx.label}  already done ({prev.get('seconds', 0):.1f}s), skipping")
            continue
        ctx.log(f"{ctx.label}  starting")
        t0 = time.perf_counter()
        if name == "report":  # results.json first: the report reads it
            state[name] = {"status": "running"}
            _finish_results(config, paths, state)
        with ctx.labelled_bars():
            outcome = ps.STAGE_FUNCS[name](ctx)
        seconds = round(time.perf_counter() - t0, 2)
        state[name] = {"status": outcome.get("status", "done"), "seconds": seconds,
                       **{k: v for k, v in outcome.items() if k != "status"}}
        write_json(paths.state, state)
        ctx.log(f"{ctx.label}  {state[name]['status']} in {seconds:.1f}s" +
                (f" ({outcome['note']})" if outcome.get("note") else ""))
    results = _finish_results(config, paths, state)
    ctx.close()
    report = paths.report if paths.report.exists() else None
    return RunResult(output=paths.root, results=results, stages=state, report=report)


def _finish_results(config: RunConfig, paths: RunPaths, state: dict[str, Any]) -> dict[str, Any]:
    from thinklens.pipeline_stages import headline_results

    results = headline_results(paths, config)
    results["timings"] = {k: v.get("seconds") for k, v in state.items() if "seconds" in v}
    results["notes"] = {k: v["note"] for k, v in state.items() if v.get("note")}
    write_json(paths.results, results)
    return results


def load_config(run_dir: str | Path) -> RunConfig:
    """The :class:`RunConfig` saved in a run directory."""
    paths = RunPaths(Path(run_dir))
    saved = read_json(paths.config)
    if saved is None:
        raise ThinklensError(f"{paths.config} not found: is {run_dir} a `thinklens run` directory?")
    saved["output"] = str(run_dir)
    saved["pairs_csv"] = saved.get("pairs_csv") if saved.get("pairs_csv") and Path(saved["pairs_csv"]).is_file() \
        else None
    return RunConfig.from_dict(saved)


__all__ = ["RunConfig", "RunResult", "RunPaths", "STAGES", "run", "load_config", "commands"]

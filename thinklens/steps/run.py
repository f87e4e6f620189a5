"""Run the step methods over a trace file: resumable per trace, bad traces recorded, never a crashed batch.

For every trace record (the ``thinklens collect`` schema: ``id``, ``prompt`` + ``completion`` or ``text``,
``gold_answer``): segment the reasoning into steps, run the chosen methods on the steps' token spans, and append one
record to ``DIR/progress.jsonl`` (bulky arrays first, to ``DIR/arrays/ID.npz``). A rerun skips the ids already there
(and those in ``DIR/skipped.jsonl``), so a killed run loses at most the trace in flight. At the end
:func:`thinklens.steps.summary.consolidate` writes ``steps.jsonl``, ``receivers.json``, ``truncation.json`` and
``agreement.json``.

The causal/black-box methods live in their own modules (``thinklens.steps.suppression``, ``.truncation``,
``.resampling``) and are imported only when asked for; a method whose module is absent is skipped with a note.
"""
from __future__ import annotations

import dataclasses
import hashlib
import importlib
import itertools
import json
import os
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from thinklens.errors import ThinklensError
from thinklens.jsonl import write_json
from thinklens.steps.receivers import DEFAULT_PROXIMITY
from thinklens.steps.results import (
    ARRAYS_DIR,
    PROGRESS_FILE,
    RESAMPLING_DIR,
    SKIPPED_FILE,
    StepsConfig,
    StepsResult,
    with_profile_defaults,
)

CONFIG_FILE = "config.json"
METHOD_MODULES: dict[str, str] = {"suppression": "thinklens.steps.suppression",
                                  "answer_suppression": "thinklens.steps.suppression",
                                  "truncation": "thinklens.steps.truncation",
                                  "resampling": "thinklens.steps.resampling"}


def load_method(name: str) -> ModuleType | None:
    """The module of a causal method, or None when this installation lacks it (an error inside it propagates).

    >>> load_method("truncation") is None or hasattr(load_method("truncation"), "early_answering")
    True
    """
    modname = METHOD_MODULES[name]
    try:
        return importlib.import_module(modname)
    except ModuleNotFoundError as err:
        if err.name == modname:
            return None
        raise


def safe_name(trace_id: str) -> str:
    """A file name for a trace id: readable prefix + hash (ids may contain '/' and collide once shortened).

    >>> safe_name("test/algebra/1.json")
    'test_algebra_1.json-0a120ec0'
    """
    head = "".join(c if c.isalnum() or c in "-_." else "_" for c in trace_id)[:80]
    return f"{head}-{hashlib.sha1(trace_id.encode()).hexdigest()[:8]}"


def _clean(values: Any) -> list[Any] | None:
    """JSON-safe list (NaN/inf -> None, numpy -> Python)."""
    if values is None:
        return None
    out = []
    for v in np.asarray(values, dtype=object).reshape(-1).tolist():
        if v is None or isinstance(v, (bool, np.bool_)):
            out.append(None if v is None else bool(v))
        elif isinstance(v, (int, np.integer)):
            out.append(int(v))
        elif isinstance(v, (float, np.floating)):
            out.append(float(v) if np.isfinite(v) else None)
        else:
            out.append(v)
    return out


def _check_len(method: str, field: str, values: Any, n: int) -> list[Any]:
    vals = _clean(values)
    if vals is None or len(vals) != n:
        raise RuntimeError(f"{METHOD_MODULES[method]} returned {field} of length "
                           f"{None if vals is None else len(vals)}, expected {n} (the step contract)")
    return vals


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)


class RolloutMeter:
    """The rollouts a steps run has drawn: what is left of ``--rollout-budget``, and a progress bar counting them."""

    def __init__(self, budget: int | None, bar: Any = None) -> None:
        self.left, self.bar, self.drawn = budget, bar, 0

    def update(self, n: int) -> None:
        self.drawn += n
        if self.left is not None:
            self.left -= n
        if self.bar is not None:
            self.bar.update(n)


def process_trace(model: Any, tokenizer: Any, profile: Any, record: dict[str, Any], rid: str, config: StepsConfig,
                  output_dir: Path, modules: dict[str, ModuleType],
                  meter: RolloutMeter | None = None, backend: Any = None) -> dict[str, Any]:
    """Run the configured methods on one trace record; returns its ``progress.jsonl`` record (arrays saved).
    Raises ThinklensError when the trace is unusable. ``backend``: resampling's rollouts through this generation
    backend (e.g. vLLM) instead of transformers."""
    from thinklens.attention.segments import check_trace
    from thinklens.steps.segment import segment_with_mode, step_spans
    from thinklens.traces import Trace

    t0 = time.perf_counter()
    trace = Trace.from_record(record, tokenizer, profile, config.text_field)
    reason = check_trace(trace, config.max_tokens)
    if reason:
        raise ThinklensError(reason)
    steps, mode = segment_with_mode(trace, config.segment, config.min_chars)
    if not steps:
        raise ThinklensError("the reasoning has no steps (blank)")
    spans = step_spans(steps)
    n = len(spans)
    gold = record.get("gold_answer")
    gold = None if gold is None else str(gold)
    seconds = {"segment": time.perf_counter() - t0}
    methods: dict[str, Any] = {}
    arrays_name = None
    if "attention" in config.methods:
        from thinklens.steps.attention import step_attention
        from thinklens.steps.receivers import trace_receiver_stats

        t = time.perf_counter()
        sa = step_attention(model, trace, spans, step_matrix=True)
        vert, kurt = trace_receiver_stats(sa.step_step, sa.n_tokens, config.proximity)
        arrays_name = f"{ARRAYS_DIR}/{safe_name(rid)}.npz"
        _save_npz(output_dir / arrays_name, answer_step=sa.answer_step.astype(np.float32), vertical=vert,
                  kurtosis=kurt, n_tokens=sa.n_tokens)
        seconds["attention"] = time.perf_counter() - t
    for name, scope in (("suppression", "all"), ("answer_suppression", "answer")):
        if name not in modules:
            continue
        t = time.perf_counter()
        kw = {"max_tokens": config.max_tokens} if config.max_tokens else {}
        res = modules[name].suppression_effects(model, profile, trace, spans, engine=config.suppression_engine,
                                                scope=scope, **kw)
        methods[name] = {"kl": _check_len(name, "kl", res.kl, n),
                         "logprob_delta": _check_len(name, "logprob_delta", res.logprob_delta, n)}
        seconds[name] = time.perf_counter() - t
    if "truncation" in modules:
        t = time.perf_counter()
        res = modules["truncation"].early_answering(model, tokenizer, profile, trace, spans, gold=gold,
                                                    max_answer_tokens=config.max_answer_tokens)
        methods["truncation"] = {"answers": _check_len("truncation", "answers", res.answers, n + 1),
                                 "correct": _check_len("truncation", "correct", res.correct, n + 1),
                                 "agrees": _check_len("truncation", "agrees", res.agrees, n + 1),
                                 "fractions": _check_len("truncation", "fractions", res.fractions, n + 1),
                                 "effect": _check_len("truncation", "effect", res.effect, n)}
        seconds["truncation"] = time.perf_counter() - t
    if "resampling" in modules:
        t = time.perf_counter()
        cache = output_dir / RESAMPLING_DIR / f"{safe_name(rid)}.jsonl"
        cache.parent.mkdir(parents=True, exist_ok=True)
        config = with_profile_defaults(config, profile)
        meter = meter or RolloutMeter(config.rollout_budget)
        res = modules["resampling"].resampling_importance(
            model, tokenizer, profile, trace, spans, gold=gold, n_rollouts=config.n_rollouts, seed=config.seed,
            cache_path=cache, temperature=config.resampling_temperature, max_new_tokens=config.max_rollout_tokens,
            adaptive=config.adaptive, max_rollouts=None if meter.left is None else max(0, meter.left),
            on_rollout=meter.update, **({} if backend is None else {"backend": backend}))
        limited = [int(j) for j in np.flatnonzero(getattr(res, "budget_limited", []))]
        methods["resampling"] = {"importance": _check_len("resampling", "importance", res.importance, n),
                                 "kl": _check_len("resampling", "kl", getattr(res, "kl", [None] * n), n),
                                 "n_drawn": _clean(getattr(res, "n_drawn", None)),
                                 "budget_limited": bool(limited), "budget_limited_cuts": limited}
        seconds["resampling"] = time.perf_counter() - t
    ran = (["attention"] if arrays_name else []) + list(methods)
    return {"id": rid, "ran": ran, "mode": mode, "n_tokens": len(trace), "reasoning": trace.reasoning.to_list(),
            "gold": gold,
            "steps": [{k: v for k, v in s.to_dict().items() if k != "index"} for s in steps],
            "methods": methods, "arrays": arrays_name, "seconds": {k: round(v, 4) for k, v in seconds.items()}}


def _check_config(out: Path, config: StepsConfig) -> None:
    """A rerun into ``out`` must keep the settings that shape per-trace results (else results would mix)."""
    path = out / CONFIG_FILE
    if path.exists():
        try:
            old = StepsConfig.from_dict(json.loads(path.read_text())).per_trace()
        except (OSError, ValueError, ThinklensError) as err:
            raise ThinklensError(f"{path}: unreadable settings ({err}); use a new --output directory") from err
        new = config.per_trace()
        diff = [f"{k}: {old[k]!r} -> {new[k]!r}" for k in new if old.get(k) != new[k]]
        if diff and (out / PROGRESS_FILE).exists():
            raise ThinklensError(f"{out} holds results computed with other settings ({'; '.join(diff)}); "
                                 "use a new --output directory or the same settings")
    write_json(path, config.to_dict())


def run_steps(model: Any, tokenizer: Any, profile: Any, traces_path: str | Path, output_dir: str | Path,
              config: StepsConfig | None = None, *, rfh: list[tuple[int, int]] | None = None, model_name: str = "",
              progress: bool = True, backend: Any = None) -> StepsResult:
    """Which reasoning steps does the answer use? Run the step methods over ``traces_path`` into ``output_dir``.

    ``rfh``: the Reasoning-Focus Heads ``[(layer, head), ...]`` whose answer→step attention is the ``attention``
    number (e.g. from the attention stage's ranking); default: the top ``config.top_k`` heads by answer→reasoning
    mass on these traces. ``backend``: draw the resampling rollouts there (a generation backend: vLLM's,
    :mod:`thinklens.empirical.backends.vllm`, or a server's,
    :class:`thinklens.empirical.backends.server_ids.ServerIdsBackend`) instead of locally with transformers and
    prefix caching. Resumable (a trace is redone when a method it lacks has become available); unusable traces go to
    ``skipped.jsonl`` with their reason.

    >>> import json, tempfile
    >>> from thinklens.models import load_model
    >>> from thinklens.toy import full_text, generate_problems
    >>> model, tok, prof = load_model("tiny-r1")
    >>> d = Path(tempfile.mkdtemp())
    >>> _ = (d / "t.jsonl").write_text("".join(json.dumps({"id": p.id, "text": full_text(p), "gold_answer": p.answer})
    ...                                        + "\\n" for p in generate_problems(3, seed=0)))
    >>> res = run_steps(model, tok, prof, d / "t.jsonl", d / "out", StepsConfig(methods="attention"), progress=False)
    >>> len(res.trace_ids()), res.steps[-1]["category"]
    (3, 'final_answer')
    """
    from thinklens import distributed
    from thinklens.jsonl import JsonlWriter, count_lines, read_jsonl, read_records
    from thinklens.progress import bar
    from thinklens.steps.summary import consolidate
    from thinklens.traces import record_id

    config = with_profile_defaults(config or StepsConfig(), profile)
    if config.proximity is None:
        config = dataclasses.replace(config, proximity=DEFAULT_PROXIMITY)
    traces_path = Path(traces_path)
    if not traces_path.is_file():
        raise ThinklensError(f"{traces_path}: no such trace file")
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    distributed.on_main(_check_config, out, config, share=False)
    notes: list[str] = []
    modules: dict[str, ModuleType] = {}
    for m in config.methods:
        if m in METHOD_MODULES:
            mod = load_method(m)
            if mod is None:
                notes.append(f"method {m!r} skipped: {METHOD_MODULES[m]} is not part of this installation")
            else:
                modules[m] = mod
    # a finished trace is done when it ran every method available now (a method installed since is added on rerun)
    wanted = {m for m in config.methods if m == "attention" or m in modules}
    limit = config.resampling_traces if config.resampling_traces is not None else 0
    if "resampling" in wanted and limit == 0:
        notes.append("resampling skipped: it is off by default for this model (each trace costs n_steps x 2 x "
                     "rollouts generations of up to --max-rollout-tokens); --resampling-traces N runs it on the first "
                     "N, --plan shows the cost first")

    def wanted_for(k: int) -> set[str]:  # the k-th trace of the file: resampling only on the first few
        return wanted - {"resampling"} if k >= limit else wanted

    def lines() -> Any:  # streamed: one record in memory at a time, a fresh pass each call
        return itertools.islice(read_jsonl(traces_path), config.max_traces)

    first: dict[str, int] = {}  # id -> line of its first occurrence: the order one process writes in
    for item in lines():
        if item.record is not None:
            first.setdefault(record_id(item.record, item.lineno), item.lineno)

    def order(row: dict[str, Any]) -> int | None:
        return row.get("line") if "reason" in row else first.get(str(row.get("id")))

    world = distributed.world()  # under torchrun, line i of the trace file is rank i % WORLD_SIZE's
    meter = RolloutMeter(config.rollout_budget)
    if "resampling" in wanted and limit > 0:
        from thinklens.steps.plan import resampling_plan

        plan = resampling_plan(model, tokenizer, profile, traces_path, config, calibrate=progress, backend=backend)
        if progress:
            print(plan.line(), file=sys.stderr, flush=True)
        meter.bar = bar(desc="rollouts", unit="rollout", total=plan.max_rollouts, disable=not progress)
    done: set[str] = set()
    seen: dict[str, int] = {}
    t_all = time.perf_counter()
    with distributed.sharded_files(out / PROGRESS_FILE, out / SKIPPED_FILE, order=order) as (my_progress, my_skipped):
        ran: dict[str, set[str]] = {}  # read after the parts of a killed launch were folded in
        if (out / PROGRESS_FILE).exists():
            for r in read_records(out / PROGRESS_FILE):
                ran[str(r["id"])] = set(r.get("ran", []))
                if ((r.get("methods") or {}).get("resampling") or {}).get("budget_limited"):
                    ran[str(r["id"])].discard("resampling")  # redone on a rerun (its drawn rollouts are cached)
        skipped = {str(r["id"]) for r in read_records(out / SKIPPED_FILE)} if (out / SKIPPED_FILE).exists() else set()
        with JsonlWriter(my_progress) as wp, JsonlWriter(my_skipped) as ws:
            def skip(key: str, line: int, reason: str) -> None:
                if key not in skipped:
                    skipped.add(key)
                    ws.write({"id": key, "line": line, "reason": reason})

            n_lines = count_lines(traces_path)
            total = n_lines if config.max_traces is None else min(n_lines, config.max_traces)
            pbar = bar(total=len(range(world.rank, total, world.size)), desc="steps", unit="trace",
                       disable=not progress)
            for n, item in enumerate(lines()):  # every rank walks every line (ids, the resampled first N)
                mine = world.owns(n)
                pbar.update(1 if mine else 0)
                if item.error is not None:
                    if mine:
                        skip(f"line:{item.lineno}", item.lineno, f"{item.where}: {item.error}")
                    continue
                rid = record_id(item.record, item.lineno)
                if rid in seen:
                    if mine:
                        skip(f"duplicate:{rid}:{item.lineno}", item.lineno,
                             f"{item.where} ({rid}): duplicate id (first at line {seen[rid]})")
                    continue
                seen[rid] = item.lineno
                want = wanted_for(len(seen) - 1)
                if rid in skipped or not mine:
                    continue
                if want <= ran.get(rid, set()):
                    done.add(rid)
                    continue
                try:
                    mods = {k: v for k, v in modules.items() if k in want}
                    rec = process_trace(model, tokenizer, profile, item.record, rid, config, out, mods, meter, backend)
                except ThinklensError as err:
                    skip(rid, item.lineno, f"{traces_path}:{item.lineno} ({rid}): {err}")
                    continue
                except Exception as err:  # out of memory on one long trace must not end the batch
                    if "out of memory" not in str(err).lower():
                        raise
                    _free_memory()
                    first_line = str(err).splitlines()[0][:200]
                    skip(rid, item.lineno, f"{traces_path}:{item.lineno} ({rid}): out of memory: {first_line}")
                    continue
                wp.write(rec)
                done.add(rid)
            pbar.close()
    if meter.bar is not None:
        meter.bar.close()
    limited = [r for r in read_records(out / PROGRESS_FILE) if r.get("id") in seen and (
        (r.get("methods") or {}).get("resampling") or {}).get("budget_limited")] \
        if "resampling" in wanted and (out / PROGRESS_FILE).exists() else []
    if limited:
        notes.append(f"resampling budget (--rollout-budget {config.rollout_budget}) spent: {len(limited)} trace(s) "
                     "have cut points with fewer rollouts than asked (budget_limited in progress.jsonl; a step with "
                     "no rollout on a side has no importance); a rerun with a larger budget completes them")
    if not sum(distributed.gather(len(done))):
        raise ThinklensError(f"{traces_path}: no trace could be processed ({len(skipped)} skipped; see "
                             f"{out / SKIPPED_FILE})")
    t_loop = time.perf_counter() - t_all

    def finish() -> StepsResult:  # the aggregates, from the merged files (rank 0 of a launch)
        t1 = time.perf_counter()
        result = consolidate(out, config, rfh=rfh, model_name=model_name, notes=notes, only_ids=list(seen),
                             timings={"this_run_seconds": round(t_loop, 3)})
        result.meta["timings"]["consolidate"] = round(time.perf_counter() - t1, 3)
        result.save(out)
        return result

    result = distributed.on_main(finish, share=False)
    return result if result is not None else StepsResult.load(out)


def _free_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()

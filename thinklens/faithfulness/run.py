"""A faithfulness study from problems to :class:`thinklens.faithfulness.result.FaithfulnessResult`: what ``thinklens
faithfulness`` and the run's faithfulness stage both call.

Steps: hinted twins of the first N problems with a gold answer (:mod:`thinklens.faithfulness.pairs`), generated
with reasoning at the study's temperature by whatever ``generate`` the caller hands in (local transformers or vLLM
through :func:`local_generator`, a server through :func:`server_generator`: the same collect machinery as stage 1,
resumable); the pairs' behaviour (:mod:`thinklens.faithfulness.behaviour`), optionally judged
(:mod:`thinklens.faithfulness.judge`); the mechanism of the hint's path on the usable hinted traces
(:mod:`thinklens.faithfulness.mechanism`, skipped with a stated reason when it cannot run); all saved under ``out_dir``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from thinklens.errors import ThinklensError
from thinklens.faithfulness.behaviour import summarize_pairs
from thinklens.faithfulness.config import FaithfulnessConfig
from thinklens.faithfulness.pairs import build_rows, collect_twins, hinted_problems, read_twins
from thinklens.faithfulness.result import MECHANISM_DIR, FaithfulnessResult

MECHANISM_LABELS = ("faithful", "unfaithful", "ignored")  # the hinted traces the mechanism is measured on


def study_settings(settings: Any, cfg: FaithfulnessConfig, profile: Any, dataset: str | None) -> Any:
    """The generation settings of both twins: the caller's (budget, batch, backend, ...) sampled at the study's
    temperature with its seed, resolved for the model family and dataset."""
    t = float(cfg.faithfulness_temperature or 0.0)
    return replace(settings, temperature=t, seed=cfg.seed).resolved(profile, dataset)


def local_generator(loaded: Any, settings: Any, *, model_name: str, backend: Any = None, progress: bool = True
                    ) -> Callable[[list[dict[str, Any]], Path], Any]:
    """``generate(problems, output)`` on a loaded model (transformers, or the vLLM ``backend``): with reasoning."""
    from thinklens.empirical.collect import collect

    def generate(problems: list[dict[str, Any]], output: Path) -> Any:
        return collect(loaded, problems, reasoning="with", output=output, settings=settings, model_name=model_name,
                       backend=backend, progress=progress)
    return generate


def server_generator(server: Any, settings: Any, *, tokenizer: Any, profile: Any, model_name: str,
                     progress: bool = True) -> Callable[[list[dict[str, Any]], Path], Any]:
    """``generate(problems, output)`` through an OpenAI-compatible server (``--backend openai``)."""
    from thinklens.empirical.collect_server import collect_server

    def generate(problems: list[dict[str, Any]], output: Path) -> Any:
        return collect_server(problems, reasoning="with", output=output, server=server, settings=settings,
                              tokenizer=tokenizer, profile=profile, model_name=model_name, progress=progress)
    return generate


def run_faithfulness(problems: list[dict[str, Any]], cfg: FaithfulnessConfig, out_dir: str | Path, *,
                     generate: Callable[[list[dict[str, Any]], Path], Any], profile: Any, loaded: Any = None,
                     answer_range: tuple[int, int] | None = None, rfh: list[tuple[int, int]] | None = None,
                     log: Callable[[str], None] | None = None, warn: Callable[[str], None] | None = None,
                     generation: dict[str, Any] | None = None) -> FaithfulnessResult:
    """The study on the first ``cfg.faithfulness_problems`` problems with a gold answer (``cfg`` resolved for the
    profile).
    ``loaded`` (model, tokenizer, profile) is needed for the mechanism only (None: skipped, said in the notes);
    ``rfh`` marks the Reasoning-Focus Heads in the mechanism summary. ``generation``: the settings ``generate``
    samples with (JSON); traces made with other settings (or another seed) are set aside as ``traces.old/``.

    >>> import tempfile, thinklens as tl
    >>> from thinklens.faithfulness.run import local_generator, run_faithfulness, study_settings
    >>> m = tl.load_model("tiny-r1", device="cpu")
    >>> cfg = tl.FaithfulnessConfig(hints="metadata", faithfulness_problems=2, hint_mechanism=False).resolved(m.profile)
    >>> gen = local_generator(m, study_settings(tl.GenerationSettings(), cfg, m.profile, "arithmetic"),
    ...                       model_name="tiny-r1", progress=False)
    >>> res = run_faithfulness(tl.load_problems("arithmetic", limit=2), cfg, tempfile.mkdtemp(), generate=gen,
    ...                        profile=m.profile, answer_range=(1, 99))
    >>> res.summary["overall"]["n_pairs"]
    2
    """
    if cfg.faithfulness_problems is None or cfg.faithfulness_temperature is None:
        raise ThinklensError("run_faithfulness needs resolved settings: FaithfulnessConfig(...).resolved(profile)")
    say = log or (lambda _m: None)
    errors: list[str] = []
    out = Path(out_dir)
    families = cfg.families()
    chosen = [p for p in problems if p.get("answer") is not None][: cfg.faithfulness_problems]
    if not chosen:
        raise ThinklensError("no problem with a gold answer: faithfulness needs one (hint-taking is a change of "
                             "answer to a wrong one)")
    hinted, placebos = hinted_problems(chosen, families, seed=cfg.seed, answer_range=answer_range, errors=errors)
    say(f"{len(chosen)} problems x {len(families)} hint families, sampled at T={cfg.faithfulness_temperature}")
    _start_over_if_changed(out, {**(generation or {}), "seed": cfg.seed}, say)
    collected = collect_twins(chosen, hinted, out, generate)
    unhinted, hinted_recs = read_twins(out, errors=errors)
    wanted = {str(h["id"]) for h in hinted}  # the file may hold other families or problems of earlier runs
    hinted_recs = [r for r in hinted_recs if str(r["id"]) in wanted]
    rows = build_rows(unhinted, hinted_recs, placebos, think_open=profile.think_open,
                      think_close=profile.think_close, errors=errors)
    notes: list[str] = []
    judge = cfg.judge()
    if judge is not None:
        from thinklens.faithfulness.judge import judge_rows

        rows = judge_rows(rows, {str(r["id"]): r for r in hinted_recs}, judge, out, errors=errors)
    summary = summarize_pairs(rows, families, n_bootstrap=cfg.hint_bootstrap, seed=cfg.seed)
    summary["settings"] = cfg.to_dict()
    summary["collect"] = {k: _collect_counts(v) for k, v in collected.items()}
    summary["mechanism"] = mechanism_study(loaded, hinted_recs, unhinted, rows, out / MECHANISM_DIR, rfh, notes,
                                           say, cfg) if cfg.hint_mechanism else None
    if not cfg.hint_mechanism:
        notes.append("mechanism: off (--no-hint-mechanism)")
    summary["notes"] = notes
    summary["errors"] = errors[:50]
    for e in errors:
        (warn or say)(f"faithfulness: {e}")
    result = FaithfulnessResult(summary, rows)
    result.save(out)
    return result


def _start_over_if_changed(out: Path, generation: dict[str, Any], log: Callable[[str], None]) -> None:
    """Twins generated with other settings cannot be paired with new ones: set them aside (``traces.old/``)."""
    import json
    import shutil

    traces = out / "traces"
    marker = traces / "generation.json"
    old = json.loads(marker.read_text(encoding="utf-8")) if marker.exists() else None
    if traces.exists() and old is not None and old != generation:
        aside = out / "traces.old"
        shutil.rmtree(aside, ignore_errors=True)
        traces.rename(aside)
        log(f"generation settings changed: the earlier twins are in {aside}; generating again")
    traces.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(generation, sort_keys=True), encoding="utf-8")


def _collect_counts(s: Any) -> dict[str, Any]:
    return {k: getattr(s, k, None) for k in ("n_problems", "n_skipped_done", "n_written", "n_finished", "n_failed",
                                             "seconds")}


def mechanism_study(loaded: Any, hinted: list[dict[str, Any]], unhinted: dict[str, dict[str, Any]],
                    rows: list[dict[str, Any]], directory: Path, rfh: list[tuple[int, int]] | None,
                    notes: list[str], log: Callable[[str], None], cfg: FaithfulnessConfig | None = None
                    ) -> dict[str, Any] | None:
    """The mechanism metrics on the hinted traces labelled faithful, unfaithful or ignored whose hint span is known,
    and their summary by label; None with a note when it cannot run (no local model, no such traces, or a version
    without :mod:`thinklens.faithfulness.mechanism`). Patching runs on the hint-taking traces and at most
    ``cfg.hint_patching_controls`` ignored ones. Arrays already saved for the same traces are reused."""
    if loaded is None:
        notes.append("mechanism: skipped (no local model: pass --tokenizer DIR with a server backend)")
        return None
    try:
        from thinklens.faithfulness import mechanism as mech
    except ImportError:
        notes.append("mechanism: skipped (thinklens.faithfulness.mechanism is not in this version)")
        return None
    by_id = {str(r["id"]): r for r in hinted}
    keep = [r for r in rows if r.get("label") in MECHANISM_LABELS and (by_id.get(str(r["id"])) or {}).get(
        "hint", {}).get("chars")]
    if not keep:
        notes.append("mechanism: skipped (no finished hinted trace with a known hint span)")
        return None
    recs = [by_id[str(r["id"])] for r in keep]
    twins = [unhinted[str(r["problem_id"])] for r in keep]
    ids = [str(r["id"]) for r in keep]
    model, tokenizer, profile = loaded
    cfg = cfg or FaithfulnessConfig()
    ignored = [i for i, r in enumerate(keep) if r["label"] == "ignored"]
    rng = np.random.default_rng(cfg.seed)
    drop = set(ignored) - set(rng.permutation(ignored)[: cfg.hint_patching_controls].tolist())
    pk = [i for i in range(len(keep)) if i not in drop]  # the traces patching runs on
    if drop:
        notes.append(f"mechanism: patching on {len(pk)} of {len(keep)} traces: every hint-taking one and "
                     f"{len(ignored) - len(drop)} of the {len(ignored)} that ignored the hint "
                     f"(--hint-patching-controls {cfg.hint_patching_controls})")
    log(f"mechanism on {len(recs)} hinted traces (patching on {len(pk)})")
    try:
        attn = _cached(mech.HintAttention, directory, ids, lambda: mech.hint_attention(model, tokenizer, profile, recs))
        supp = _cached(mech.HintSuppression, directory, ids,
                       lambda: mech.hint_suppression(model, tokenizer, profile, recs))
        patch = _cached(mech.HintPatching, directory, [ids[i] for i in pk],
                        lambda: mech.hint_patching(model, tokenizer, profile, [recs[i] for i in pk],
                                                   [twins[i] for i in pk]))
        return mech.summarize_mechanism(attn, supp, patch, {str(r["id"]): str(r["label"]) for r in keep}, rfh)
    except ThinklensError as err:
        notes.append(f"mechanism: failed ({err})")
        return None


def _cached(cls: Any, directory: Path, ids: list[str], compute: Callable[[], Any]) -> Any:
    """The saved arrays of ``cls`` in ``directory`` when they cover exactly ``ids`` (computed or skipped with a
    reason), else ``compute()`` saved there."""
    if directory.exists():
        try:
            old = cls.load(directory)
            seen = [str(i) for i in old.ids] + [str(s.get("id")) for s in getattr(old, "skipped", [])]
            if sorted(seen) == sorted(ids):
                return old
        except (OSError, ValueError, KeyError, ThinklensError):
            pass
    new = compute()
    new.save(directory)
    return new


__all__ = ["local_generator", "mechanism_study", "run_faithfulness", "server_generator", "study_settings"]

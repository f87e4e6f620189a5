"""Settings and saved results of the steps stage; the output directory's file names (a documented contract).

``DIR/`` after :func:`thinklens.steps.run.run_steps`:

* ``steps.jsonl`` — one record per trace x step: ``id``, ``step``, ``tok_start``, ``tok_end``, ``text``, ``category``,
  ``attention``, ``suppression``, ``truncation``, ``resampling`` (null where a method did not run);
* ``receivers.json`` — receiver heads (Thought Anchors) with their mean kurtosis, the kurtosis of every head, and
  their overlap with the Reasoning-Focus Heads;
* ``truncation.json`` — the early-answering curve: ``fraction`` (0, 0.1, ..., 1.0), ``accuracy``, ``agreement``;
* ``agreement.json`` — Spearman correlations between methods with bootstrap CIs, per-category means, top-step
  agreement (:mod:`thinklens.steps.agreement`);
* ``result.json`` — settings, model, RFHs used, notes, skipped traces, timings;
* work files: ``progress.jsonl`` (one record per finished trace: what a rerun skips), ``skipped.jsonl`` (unusable
  traces with reasons), ``arrays/ID.npz`` (per-trace arrays: ``answer_step [L, H, n]``, ``vertical [L, H, n]``,
  ``kurtosis [L, H]``), ``receivers.npz`` (per-trace kurtosis ``[n_traces, L, H]``).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from thinklens.errors import ThinklensError
from thinklens.jsonl import write_json, write_jsonl
from thinklens.options import opt
from thinklens.steps.agreement import DEFAULT_BOOTSTRAP, METHODS
from thinklens.steps.receivers import DEFAULT_PROXIMITY
from thinklens.steps.segment import DEFAULT_MIN_CHARS, MODES

STEPS_FILE = "steps.jsonl"
RECEIVERS_FILE = "receivers.json"
RECEIVERS_NPZ = "receivers.npz"
TRUNCATION_FILE = "truncation.json"
AGREEMENT_FILE = "agreement.json"
RESULT_FILE = "result.json"
PROGRESS_FILE = "progress.jsonl"
SKIPPED_FILE = "skipped.jsonl"
ARRAYS_DIR = "arrays"
RESAMPLING_DIR = "resampling"  # per-trace rollout caches of the resampling method
# resampling costs n_steps x 2 x n_rollouts generations per trace: on by default for the first resampling_traces
DEFAULT_METHODS: tuple[str, ...] = METHODS
TRUNCATION_BINS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))
# settings that change what is computed per trace: a rerun into the same directory must keep them
PER_TRACE_FIELDS = ("methods", "segment", "min_chars", "proximity", "n_rollouts", "resampling_temperature",
                    "max_rollout_tokens", "adaptive", "max_tokens", "max_answer_tokens", "suppression_engine", "seed",
                    "text_field")


@dataclass
class StepsConfig:
    """Steps: settings of the step-attribution stage.

    Validated on construction; ``methods`` may be a comma-separated string.

    >>> StepsConfig(methods="attention,truncation", proximity=1).methods
    ('attention', 'truncation')
    """

    methods: tuple[str, ...] = opt(DEFAULT_METHODS, f"methods to run, a subset of {','.join(METHODS)} (resampling "
                                   "costs n_steps x rollouts generations per trace)", metavar="A,B")
    segment: str = opt("auto", "steps are lines, sentences, or auto (lines when no line holds two sentences)",
                       choices=MODES)
    min_chars: int = opt(DEFAULT_MIN_CHARS, "merge step fragments shorter than N non-space characters", metavar="N")
    top_k: int = opt(10, "Reasoning-Focus Heads whose answer→step attention is the `attention` number when they are "
                     "ranked here", flag="--rfh-top-k", metavar="K")
    receiver_top_k: int = opt(10, "receiver heads reported (Thought Anchors used 20 on 8B/14B models)",
                              flag="--receivers", metavar="K")
    proximity: int | None = opt(None, "receiver heads: a step's vertical score counts only steps at least N later "
                                f"(default: the dataset's, else Thought Anchors' {DEFAULT_PROXIMITY}; short traces "
                                "such as tiny-r1's need 1)", metavar="N")
    n_rollouts: int = opt(4, "resampling: rollouts per cut point (the most with --adaptive; Thought Anchors: 100)",
                          flag="--rollouts", metavar="N")
    adaptive: bool = opt(False, "resampling: draw rollouts in rounds of 4 and stop a cut point once the trace's top-3 "
                         "steps are settled (up to --rollouts; a prefix of the fixed run's rollouts)")
    resampling_traces: int | None = opt(None, "resampling: only the first N traces (each costs n_steps x 2 x "
                                        "rollouts generations; default in a run: the model profile's (tiny-r1: 10, "
                                        "real models: 0), with `thinklens steps`: 0)", flag="--resampling-traces",
                                        metavar="N")
    resampling_temperature: float | None = opt(None, "resampling: sampling temperature of the rollouts (default: the "
                                               "model profile's: tiny-r1 2.0, else R1's 0.6 as Thought Anchors)",
                                               metavar="T")
    max_rollout_tokens: int | None = opt(None, "resampling: tokens per rollout at most (default: the model "
                                         "profile's: tiny-r1 1024, else the family's generation budget)", metavar="N")
    rollout_budget: int | None = opt(None, "resampling: rollouts in all at most; when spent no more are drawn and "
                                     "the affected cut points and traces are marked budget_limited", metavar="N")
    max_traces: int | None = opt(None, "only the first N traces of the file", flag="--steps-limit", metavar="N")
    max_tokens: int | None = opt(None, "skip traces longer than N tokens", flag="--steps-max-tokens", metavar="N")
    max_answer_tokens: int = opt(16, "early answering: tokens generated per forced answer", metavar="N")
    suppression_engine: str = opt("fast", "suppression engine (naive: one full forward per step, the reference)",
                                  choices=("fast", "naive"))
    n_bootstrap: int = opt(DEFAULT_BOOTSTRAP, "agreement: bootstrap resamples of traces for the CIs",
                           flag="--steps-bootstrap", metavar="N")
    seed: int = opt(0, "seed of resampling and bootstraps")
    text_field: str | None = opt(None, "trace field with the full text (default: text, else prompt + completion)",
                                 metavar="FIELD")

    def __post_init__(self) -> None:
        m = self.methods
        if isinstance(m, str):
            m = [x.strip() for x in m.split(",") if x.strip()]
        m = tuple(dict.fromkeys(m))
        bad = [x for x in m if x not in METHODS]
        if bad or not m:
            raise ThinklensError(f"methods must be a non-empty subset of {', '.join(METHODS)}; got {list(m) or 'none'}")
        self.methods = tuple(x for x in METHODS if x in m)  # canonical order
        if self.segment not in MODES:
            raise ThinklensError(f"segment must be one of {', '.join(MODES)}, not {self.segment!r}")
        if self.suppression_engine not in ("fast", "naive"):
            raise ThinklensError(f"suppression_engine must be fast or naive, not {self.suppression_engine!r}")
        for name in ("min_chars", "top_k", "receiver_top_k", "n_rollouts", "max_answer_tokens"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ThinklensError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("proximity", "n_bootstrap", "seed", "resampling_traces"):
            if name in ("proximity", "resampling_traces") and getattr(self, name) is None:  # default / all
                continue
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise ThinklensError(f"{name} must be an integer >= 0, got {getattr(self, name)!r}")
        t = self.resampling_temperature
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0):
            raise ThinklensError(f"resampling_temperature must be a number > 0 or None, got {t!r}")
        for name in ("max_traces", "max_tokens", "max_rollout_tokens", "rollout_budget"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise ThinklensError(f"{name} must be a positive integer or None, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["methods"] = list(self.methods)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepsConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if k == "methods" and not isinstance(v, str) else v) for k, v in d.items()
                      if k in known})

    def per_trace(self) -> dict[str, Any]:
        d = self.to_dict()
        return {k: d[k] for k in PER_TRACE_FIELDS}


def with_profile_defaults(config: StepsConfig, profile: Any) -> StepsConfig:
    """``config`` with the model profile's resampling temperature and rollout length where none was given (facts of
    the model, e.g. the toy tiny-r1's 2.0, not of the dataset).

    >>> from thinklens.profiles import get_profile
    >>> c = with_profile_defaults(StepsConfig(), get_profile("deepseek-r1-distill-qwen"))
    >>> c.resampling_temperature, c.max_rollout_tokens
    (0.6, 16384)
    """
    if config.resampling_temperature is None:
        config = dataclasses.replace(config, resampling_temperature=float(profile.resampling_temperature))
    if config.max_rollout_tokens is None:
        config = dataclasses.replace(config, max_rollout_tokens=int(profile.rollout_tokens))
    return config


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ThinklensError(f"{path}: cannot read ({err}); rerun `thinklens steps`") from err


def check_step(r: dict[str, Any]) -> dict[str, Any]:
    """A ``steps.jsonl`` record as the contract has it (id, step, ordered token span, text, finite scores or null),
    else a one-line ThinklensError.

    >>> check_step({"id": "a", "step": 0, "tok_start": 9, "tok_end": 5, "text": ""})
    Traceback (most recent call last):
    ...
    thinklens.errors.ThinklensError: step 0 of 'a': tok_start 9 > tok_end 5
    """
    from thinklens.validate import check_fields, check_finite, check_int

    check_fields(r, ("id", "step", "tok_start", "tok_end", "text"), "step record")
    what = f"step {r['step']!r:.20} of {r['id']!r:.60}"
    try:
        if not isinstance(r["id"], str) or not isinstance(r["text"], str):
            raise ThinklensError("id and text must be strings")
        check_int(r["step"], "step", 0)
        a, b = check_int(r["tok_start"], "tok_start", 0), check_int(r["tok_end"], "tok_end", 0)
        if a > b:
            raise ThinklensError(f"tok_start {a} > tok_end {b}")
        for k in ("attention", "suppression", "answer_suppression", "truncation", "resampling"):
            if r.get(k) is not None:
                check_finite(r[k], k)
    except ThinklensError as err:
        raise ThinklensError(f"{what}: {err}") from None
    return r


@dataclass
class StepsResult:
    """What the steps stage produced (the files of the module doc); ``save``/``load`` round-trip it.

    >>> import tempfile
    >>> r = StepsResult(StepsConfig(), [{"id": "a", "step": 0, "tok_start": 5, "tok_end": 9, "text": "1+1=2\\n",
    ...     "category": "computation", "attention": 0.5, "suppression": None, "truncation": None,
    ...     "resampling": None}], {}, {}, {})
    >>> d = tempfile.mkdtemp(); _ = r.save(d); StepsResult.load(d).trace_steps("a")[0]["text"]
    '1+1=2\\n'
    """

    config: StepsConfig
    steps: list[dict[str, Any]]  # steps.jsonl records, grouped by trace, in step order
    receivers: dict[str, Any]
    truncation: dict[str, Any]
    agreement: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)  # model, rfh, rfh_source, notes, skipped, modes, timings

    def trace_ids(self) -> list[str]:
        return list(dict.fromkeys(r["id"] for r in self.steps))

    def trace_steps(self, trace_id: str) -> list[dict[str, Any]]:
        return [r for r in self.steps if r["id"] == trace_id]

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        write_jsonl(d / STEPS_FILE, self.steps)
        write_json(d / RECEIVERS_FILE, self.receivers)
        write_json(d / TRUNCATION_FILE, self.truncation)
        write_json(d / AGREEMENT_FILE, self.agreement)
        write_json(d / RESULT_FILE, {"config": self.config.to_dict(), **self.meta})
        return d

    @classmethod
    def load(cls, directory: str | Path) -> StepsResult:
        from thinklens.jsonl import read_jsonl

        d = Path(directory)
        if not (d / RESULT_FILE).exists() or not (d / STEPS_FILE).exists():
            raise ThinklensError(f"{d}: no steps results ({RESULT_FILE}, {STEPS_FILE}); run `thinklens steps` first")
        meta = _read_json(d / RESULT_FILE)
        if not isinstance(meta, dict) or not isinstance(meta.get("config", {}), dict):
            raise ThinklensError(f"{d / RESULT_FILE}: not a steps result; rerun `thinklens steps`")
        config = StepsConfig.from_dict(meta.pop("config", {}))
        steps, bad = [], []
        for line in read_jsonl(d / STEPS_FILE):
            try:
                if line.error is not None:
                    raise ThinklensError(line.error)
                steps.append(check_step(line.record))
            except ThinklensError as err:  # a damaged step record is left out and said, the others are kept
                bad.append(f"{line.where}: {err}")
        if bad:
            meta["bad_step_lines"] = bad
        parts = [_read_json(d / f) for f in (RECEIVERS_FILE, TRUNCATION_FILE, AGREEMENT_FILE)]
        for f, part in zip((RESULT_FILE, RECEIVERS_FILE, TRUNCATION_FILE, AGREEMENT_FILE), [meta, *parts]):
            if not isinstance(part, dict):
                raise ThinklensError(f"{d / f}: expected a JSON object, got {type(part).__name__}; rerun "
                                     "`thinklens steps`")
        return cls(config, steps, *parts, meta)

    def summary(self) -> dict[str, Any]:
        """Headline numbers (for ``results.json`` of a run)."""
        rec = self.receivers
        return {"n_traces": len(self.trace_ids()), "n_steps": len(self.steps), "methods": list(self.config.methods),
                "rfh": self.meta.get("rfh"), "receiver_heads": [h[:2] for h in rec.get("heads", [])],
                "receiver_rfh_overlap": (rec.get("rfh_overlap") or {}).get("overlap"),
                "attention_top_step_categories": self.meta.get("attention_top_step_categories"),
                "spearman": {f"{p['a']}~{p['b']}": p["spearman"] for p in self.agreement.get("pairs", [])
                             if p.get("spearman") is not None}}

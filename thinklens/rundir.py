"""A run directory: the run's settings (:class:`RunConfig`), where every file lives (:class:`RunPaths`, the layout
written once) and the JSON files that hold its state.

Why a module of its own: every stage reads and writes under the run directory, the report reads it, and
``thinklens report DIR`` reopens it years later. Keeping the settings, the layout and the state in one module, below
the stages, lets all of them agree without importing each other.

``RunConfig`` composes the option groups of the stages instead of copying their fields: the model flags
(:class:`thinklens.models.ModelOptions`) and the generation settings
(:class:`thinklens.empirical.settings.GenerationSettings`) are the same objects ``thinklens collect`` uses, so the
run's defaults and the standalone commands' defaults cannot drift apart.
"""
from __future__ import annotations

import json
import platform
import sys
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from thinklens.empirical.backends.openai import ServerSettings
from thinklens.empirical.settings import GenerationSettings
from thinklens.empirical.thinking import MIN_USABLE
from thinklens.errors import ThinklensError
from thinklens.faithfulness.config import FaithfulnessConfig
from thinklens.jsonl import write_json
from thinklens.models import ModelOptions
from thinklens.options import opt
from thinklens.steps.results import StepsConfig

# where every file of a run lives, relative to the run directory (the only place this is written)
LAYOUT: dict[str, str] = {
    "config": "config.json",
    "state": "run_state.json",
    "results": "results.json",
    "report": "report.html",
    "figures": "figures",
    "problems": "problems.jsonl",
    "traces_with": "traces/with.jsonl",
    "traces_without": "traces/without.jsonl",
    "traces_reference": "traces/reference.jsonl",
    "graded_with": "graded/with.jsonl",
    "graded_without": "graded/without.jsonl",
    "evaluation": "evaluation.json",
    "evaluation_dir": ".",
    "attention_dir": "attention",
    "head_scores": "attention/head_scores.npz",
    "heads": "heads.json",
    "induction": "attention/induction.json",
    "token_view": "attention/token_view.html",
    "retrieval": "attention/retrieval.json",
    "ablation_dir": "attention/ablation",
    "ablation": "attention/ablation/ablation.json",
    "debug_dir": "attention/debug",
    "debug": "attention/debug/debug.json",
    "debug_view": "attention/debug/debug.html",
    "reference_attention_dir": "attention/reference",
    "patching_dir": "patching",
    "patching_result": "patching/result.npz",
    "pairs": "patching/contrastive_pairs.jsonl",
    "pair_queries": "patching/queries.jsonl",
    "pair_responses": "patching/csv_responses.jsonl",
    "steps_dir": "steps",
    "steps": "steps/steps.jsonl",
    "step_view": "steps/step_view.html",
    "faithfulness_dir": "faithfulness",
    "faithfulness_summary": "faithfulness/summary.json",
    "faithfulness_pairs": "faithfulness/pairs.jsonl",
}

# settings that define what a run directory contains: a rerun with other values would mix results, so it is refused
# once a stage has finished (other settings take effect by rerunning the stages that read them)
IDENTITY_FIELDS = ("model", "dataset", "seed", "limit", "n_pairs", "pairs_csv", "generation")


@dataclass
class RunConfig:
    """Everything that defines a run (saved to ``DIR/config.json``).

    >>> import thinklens as tl
    >>> c = tl.RunConfig(model="tiny-r1", limit=20, output="runs/tiny")
    >>> c.model.name, c.limit, c.generation.seed == c.seed
    ('tiny-r1', 20, True)
    """

    model: ModelOptions = opt(factory=ModelOptions)
    dataset: str = opt("arithmetic", "arithmetic (tiny-r1's task), math500, wildbench or a problem .jsonl file")
    limit: int = opt(100, "problems, each generated with and without reasoning")
    output: str = opt("thinklens-run", "run directory (a rerun of the same command resumes it)", short="-o")
    seed: int = opt(0, "seed of problems, sampling, pairs and bootstraps")
    generation: GenerationSettings = opt(factory=GenerationSettings)
    server: ServerSettings = opt(factory=ServerSettings)  # --backend openai: generation on a server
    n_pairs: int = opt(20, "contrastive pairs to patch (0: skip patching)")
    pairs_csv: str | None = opt(None, "the paper's contrastive QA pairs CSV (patching for models other than tiny-r1)",
                                metavar="CSV")
    min_usable: float = opt(MIN_USABLE, "stop after grading, with advice (which option, which budget), when fewer "
                            "than this share of the problems have a usable with/without pair (0: evaluate whatever is "
                            "left)", metavar="SHARE")
    stages: tuple[str, ...] = opt((), "comma-separated subset of the stages to run (default: all)", metavar="A,B")
    top_k: int = opt(10, "Reasoning-Focus Heads to report")
    n_bootstrap: int = opt(1000, "bootstrap resamples of traces for the stability of the head ranking")
    retrieval_lengths: tuple[int, ...] = opt((), "retrieval heads: context lengths of the needle tests in tokens, "
                                             "comma-separated (default: the haystack format's; passkey: "
                                             "500,1000,2000)", metavar="N,M")
    steps: StepsConfig = opt(factory=StepsConfig)  # which reasoning steps the answer uses
    # hinted twins: does the reasoning say when a hint moved the answer (on when the profile or the flag gives problems)
    faithfulness: FaithfulnessConfig = opt(factory=FaithfulnessConfig)

    def __post_init__(self) -> None:
        if isinstance(self.model, str):
            self.model = ModelOptions(name=self.model)
        elif isinstance(self.model, dict):
            self.model = ModelOptions(**self.model)
        if isinstance(self.generation, dict):
            self.generation = GenerationSettings.from_dict(self.generation)
        if isinstance(self.server, dict):
            self.server = ServerSettings(**self.server)
        if isinstance(self.steps, dict):
            self.steps = StepsConfig.from_dict(self.steps)
        # settings the steps stage shares with the run (one flag each): its RFHs are the run's top k
        self.steps = replace(self.steps, seed=self.seed, top_k=self.top_k)
        if isinstance(self.faithfulness, dict):
            self.faithfulness = FaithfulnessConfig.from_dict(self.faithfulness)
        self.faithfulness = replace(self.faithfulness, seed=self.seed)
        if self.generation.backend == "openai":
            self.server = self.server.for_model(self.model.name)
        elif self.server.is_set:
            raise ThinklensError("--base-url and the other server options are for --backend openai")
        self.generation = replace(self.generation, seed=self.seed)  # one seed for the whole run
        if isinstance(self.stages, str):
            self.stages = tuple(s.strip() for s in self.stages.split(",") if s.strip())
        self.stages = tuple(self.stages)
        if isinstance(self.retrieval_lengths, str):
            self.retrieval_lengths = tuple(x.strip() for x in self.retrieval_lengths.split(",") if x.strip())
        try:
            self.retrieval_lengths = tuple(int(x) for x in self.retrieval_lengths)
        except (TypeError, ValueError) as err:
            raise ThinklensError(f"RunConfig.retrieval_lengths must be token counts, got {self.retrieval_lengths!r}"
                                 ) from err
        for name in ("limit", "n_pairs", "top_k", "n_bootstrap"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "n_pairs" else 1):
                raise ThinklensError(f"RunConfig.{name} must be a positive integer, got {value!r}")
        if not 0 <= self.min_usable <= 1:
            raise ThinklensError(f"RunConfig.min_usable must be a share in [0, 1], got {self.min_usable!r}")
        if not self.dataset or not self.output:
            raise ThinklensError("RunConfig needs a dataset and an output directory")
        if self.pairs_csv is not None and not Path(self.pairs_csv).is_file():
            raise ThinklensError(f"--pairs-csv: no such file: {self.pairs_csv}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stages"] = list(self.stages)
        d["retrieval_lengths"] = list(self.retrieval_lengths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        d = _upgrade(dict(d))
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ThinklensError(f"unknown RunConfig field(s) {unknown}")
        return cls(**d)

    def identity(self) -> dict[str, Any]:
        """The settings a run directory is bound to (see :data:`IDENTITY_FIELDS`)."""
        d = self.to_dict()
        d["model"] = self.model.name
        d["generation"] = {k: v for k, v in d["generation"].items() if k != "batch_size"}
        return {k: d[k] for k in IDENTITY_FIELDS}


def _upgrade(d: dict[str, Any]) -> dict[str, Any]:
    """A config.json written by thinklens 0.1 (flat model and generation fields) in today's shape."""
    if isinstance(d.get("model"), str):
        d["model"] = {"name": d["model"], **{k: d.pop(k) for k in ("device", "dtype", "device_map") if k in d}}
    gen = {k: d.pop(k) for k in ("batch_size", "max_new_tokens") if k in d}
    if gen:
        d["generation"] = {**gen, **(d.get("generation") or {})}
    return d


class RunPaths:
    """Where every stage reads and writes: ``RunPaths(dir).head_scores`` is ``dir/attention/head_scores.npz``.

    >>> from thinklens.rundir import RunPaths
    >>> RunPaths("runs/tiny").traces_with.as_posix()
    'runs/tiny/traces/with.jsonl'
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __getattr__(self, name: str) -> Path:  # only called for names not set in __init__
        rel = LAYOUT.get(name)
        if rel is None:
            raise AttributeError(f"no file {name!r} in the run layout; known: {', '.join(LAYOUT)}")
        return self.root / rel

    def __getitem__(self, name: str) -> Path:
        return getattr(self, name)


# ------------------------------------------------------------------------------------------------------ JSON files
def read_json(path: str | Path, default: Any = None) -> Any:
    """Read a JSON file, naming the file in the error when it is corrupt."""
    path = Path(path)
    if not path.exists():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ThinklensError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from err
    except UnicodeDecodeError:
        raise ThinklensError(f"{path}: not UTF-8 text (a damaged JSON file)") from None
    except RecursionError:
        raise ThinklensError(f"{path}: JSON nested too deeply") from None


def config_from_file(path: Path, saved: Any) -> RunConfig:
    """A :class:`RunConfig` from the parsed ``config.json`` at ``path``; any value of the wrong type or out of
    range is one ThinklensError naming the file."""
    if not isinstance(saved, dict):
        raise ThinklensError(f"{path}: expected a JSON object of run settings, got {type(saved).__name__}")
    try:
        return RunConfig.from_dict(saved)
    except ThinklensError as err:
        raise ThinklensError(f"{path}: {err}") from None
    except (TypeError, ValueError, AttributeError, KeyError) as err:  # a field of the wrong type deep inside
        raise ThinklensError(f"{path}: not a valid run configuration ({type(err).__name__}: "
                             f"{str(err).splitlines()[0][:200] if str(err) else ''})") from None


def load_config(run_dir: str | Path) -> RunConfig:
    """The :class:`RunConfig` saved in a run directory (its ``output`` set to where the directory is now)."""
    paths = RunPaths(run_dir)
    saved = read_json(paths.config)
    if saved is None:
        raise ThinklensError(f"{paths.config} not found: is {run_dir} a `thinklens run` directory?")
    if not isinstance(saved, dict):
        raise ThinklensError(f"{paths.config}: expected a JSON object of run settings, got {type(saved).__name__}")
    saved["output"] = str(run_dir)
    if saved.get("pairs_csv") and (not isinstance(saved["pairs_csv"], str) or not Path(saved["pairs_csv"]).is_file()):
        saved["pairs_csv"] = None  # moved or deleted since: the report only names it
    return config_from_file(paths.config, saved)


def load_state(paths: RunPaths, warn: Any = None) -> dict[str, dict[str, Any]]:
    """``run_state.json``: per stage ``{status, seconds, settings, summary...}``.

    A damaged state file does not stop a resume: an unreadable one is moved to ``run_state.json.corrupt`` and
    counts as empty, an entry that is not a stage record is dropped, and ``warn`` (when given) is told which, in
    one line each. Stages without a record rerun; their own partial files let them skip what is already done."""
    try:
        state = read_json(paths.state, {})
    except (ThinklensError, UnicodeDecodeError, RecursionError) as err:
        state = None
        reason = str(err) if isinstance(err, ThinklensError) else f"{paths.state}: unreadable ({type(err).__name__})"
    else:
        reason = None if isinstance(state, dict) else f"{paths.state}: not a JSON object"
    if reason is not None:
        if warn is not None:
            try:
                paths.state.replace(paths.state.with_name(paths.state.name + ".corrupt"))
            except OSError:
                pass
            warn(f"{reason}; moved to {paths.state.name}.corrupt, every stage is checked again")
        return {}
    good = {k: v for k, v in state.items() if isinstance(v, dict) and isinstance(v.get("settings", {}), dict)}
    if warn is not None and len(good) != len(state):
        warn(f"{paths.state}: dropped damaged entries {sorted(set(state) - set(good))}; those stages rerun")
    return good


def bind_config(config: RunConfig, paths: RunPaths) -> None:
    """Write ``config.json``, refusing a directory that holds another run's finished results.

    A directory where no stage has finished yet does not hold its settings against a new run (a first attempt with
    a wrong ``--model`` must not lock it)."""
    try:
        saved = read_json(paths.config)
        if saved is not None:
            config_from_file(paths.config, {**saved, "output": config.output, "pairs_csv": None}) \
                if isinstance(saved, dict) else config_from_file(paths.config, saved)
    except (ThinklensError, UnicodeDecodeError, RecursionError) as err:
        import sys

        paths.config.replace(paths.config.with_name(paths.config.name + ".corrupt"))
        print(f"warning: {err if isinstance(err, ThinklensError) else paths.config}; moved to "
              f"{paths.config.name}.corrupt and rewritten from this command's settings", file=sys.stderr)
        saved = None
    finished = [k for k, v in load_state(paths).items() if v.get("status") in ("done", "skipped")]
    if saved is not None and finished:
        old = RunConfig.from_dict({**saved, "output": config.output, "pairs_csv": None}).identity()
        old["pairs_csv"] = saved.get("pairs_csv")
        diff = {k: (old.get(k), v) for k, v in config.identity().items() if old.get(k) != v}
        if diff:
            what = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in diff.items())
            raise ThinklensError(f"{paths.config}: this directory holds a run with other settings ({what}; "
                                 f"finished stages: {', '.join(finished)}); use another --output, or delete the "
                                 "directory to start over")
    write_json(paths.config, config.to_dict())


def versions() -> dict[str, str]:
    """Versions of thinklens, Python and the libraries whose numerics the results depend on."""
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

"""What a stage of ``thinklens run`` is handed: the run's config and paths, one lazily loaded model, a log.

Why: stages are thin adapters from a run directory to each stage's public API; they share one loaded model (loading a
70B model once, not once per stage) and label their progress bars with the run's stage counter.
"""
from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from typing import Any

from thinklens.rundir import RunConfig, RunPaths, read_json


@dataclass
class StageContext:
    """The config, the paths, a lazily loaded model and a progress display.

    >>> import thinklens as tl
    >>> ctx = StageContext(tl.RunConfig(output="/tmp/tl_doc_run"), RunPaths("/tmp/tl_doc_run"), show_progress=False)
    >>> ctx.model().profile.name
    'tiny-r1'
    """

    config: RunConfig
    paths: RunPaths
    show_progress: bool = True
    label: str = ""
    _loaded: Any = field(default=None, repr=False)
    _backend: Any = field(default=None, repr=False)

    def log(self, msg: str) -> None:
        if self.show_progress:
            print(f"{self.label}  {msg}" if self.label else msg, file=sys.stderr, flush=True)

    def warn(self, msg: str) -> None:
        """A line the user must see even with ``--quiet`` (skipped records, repairs)."""
        print(msg, file=sys.stderr, flush=True)

    def model(self) -> Any:
        """The :class:`thinklens.models.LoadedModel`, loaded once for all stages. When generation runs on a server,
        the white-box stages load the local copy named by ``--tokenizer``."""
        if self._loaded is None:
            options = self.config.model
            if self.config.generation.backend == "openai":
                from dataclasses import replace

                from thinklens.errors import ThinklensError

                if not self.config.server.tokenizer:
                    raise ThinklensError("this stage needs the model's weights, but generation runs on a server: pass "
                                         "--tokenizer DIR (a local copy of the served model), or run "
                                         "--stages collect,grade,evaluate")
                options = replace(options, name=self.config.server.tokenizer)
            self.log(f"loading {options.name}")
            self._loaded = options.load()
        return self._loaded

    def backend(self) -> Any:
        """The generation backend of ``--backend vllm`` (one engine for collect and resampling), else None: the
        stages then generate with transformers on :meth:`model`."""
        if self.config.generation.backend != "vllm":
            return None
        if self._backend is None:
            from thinklens.empirical.backends.vllm import vllm_backend

            self.log(f"starting vLLM on {self.config.model.name}")
            self._backend = vllm_backend(self.config.model.name, self.model().tokenizer, dtype=self.config.model.dtype,
                                         seed=self.config.seed)
        return self._backend

    def close(self) -> None:
        self._loaded = None
        self._backend = None

    def labelled_bars(self) -> contextlib.AbstractContextManager[None]:
        """Prefix every progress bar a stage opens with the run's stage label (``[4/7] attention  attention:
        12/40``), so the display always says which stage runs and how much work is left."""
        from thinklens.progress import prefixed

        return prefixed(self.label)


def model_argv(c: RunConfig) -> list[str]:
    """The model flags of a stage's reproduce command (``--model NAME`` and whatever else was set)."""
    from thinklens.options import to_argv

    return to_argv(c.model, always=("name",))


def ranked_heads(p: RunPaths, k: int | None = None) -> list[tuple[int, int]]:
    """The run's Reasoning-Focus Heads ``[(layer, head), ...]`` from ``heads.json`` (the top ``k``; [] before the
    heads stage ran)."""
    heads = (read_json(p.heads) or {}).get("heads") or []
    return [(int(h[0]), int(h[1])) for h in heads[:k]]


def run_profile(c: RunConfig) -> Any:
    """The run's model profile without loading the model (``--profile``, else the served tokenizer or the model's
    name/path), for settings the profile decides.

    >>> import thinklens as tl
    >>> run_profile(tl.RunConfig(output="/tmp/tl_doc_run")).name
    'tiny-r1'
    """
    from thinklens.profiles import get_profile

    return get_profile(c.model.profile) if c.model.profile else get_profile(c.server.tokenizer or c.model.name)

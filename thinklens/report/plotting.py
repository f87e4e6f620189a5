"""The matplotlib setup every figure module shares: object-oriented figures (no pyplot state, safe in threads and
notebooks) on the Agg backend, saved with their parent directory created."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def new_figure(**kw: Any) -> tuple[Any, Any]:
    """A ``Figure`` with one ``Axes``; keyword arguments go to ``Figure`` (e.g. ``figsize``)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(**kw)
    return fig, fig.add_subplot(1, 1, 1)


def save_figure(fig: Any, path: str | Path | None, dpi: int = 130) -> Path | None:
    """Save ``fig`` as ``path`` (parents created); nothing when ``path`` is None. Returns the path."""
    if path is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path

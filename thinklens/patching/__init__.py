"""Stage 3: activation patching from reasoning to answer (Zhang et al., EMNLP 2025, section 5).

Build contrastive pairs (``pairs``), choose what to patch (``targets``), run the sweeps (``sweeps``) on the fast
prefix-reusing engine or the naive reference (``engine``), score them (``metrics``), screen with attribution
patching (``attribution``) and save/load the results (``results``). Figures: ``thinklens.report.fig_patching``.
"""
from __future__ import annotations

from thinklens.patching.attribution import AttributionResult, attribution_patching, spearman
from thinklens.patching.engine import EngineOutput, PairTensors, run_patches
from thinklens.patching.metrics import LogitDiff, LogProbDiff, ProbDiff, answer_ranks, normalize, rank_of
from thinklens.patching.pairs import (
    Pair,
    PairRejected,
    Side,
    assemble_pair,
    build_csv_pairs,
    prepare_queries,
    read_pair_csv,
    toy_pairs,
)
from thinklens.patching.results import PairPatching, PatchingResult
from thinklens.patching.sweeps import (
    PAPER_POSITIONS,
    TOY_POSITIONS,
    default_positions,
    patch_pair,
    patch_pairs,
    probe_positions,
    resolve_positions,
    sweep_grid,
)
from thinklens.patching.targets import Patch, Site, SiteKind, capture, patching

__all__ = [
    "AttributionResult", "EngineOutput", "LogProbDiff", "LogitDiff", "PAPER_POSITIONS", "Pair", "PairPatching",
    "PairRejected", "PairTensors", "Patch", "PatchingResult", "ProbDiff", "Side", "Site", "SiteKind", "TOY_POSITIONS",
    "answer_ranks", "assemble_pair", "attribution_patching", "build_csv_pairs", "capture", "default_positions",
    "normalize", "patch_pair", "patch_pairs", "patching", "prepare_queries", "probe_positions", "rank_of",
    "read_pair_csv", "resolve_positions", "run_patches", "spearman", "sweep_grid", "toy_pairs",
]

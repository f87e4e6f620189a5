"""Synthetic saved results of a run (the files the stages write), so the report is tested without a model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

N_LAYERS, N_HEADS, N_TRACES, N_POS = 4, 8, 12, 40
RFH = [(2, 5), (1, 3), (2, 1)]  # planted Reasoning-Focus Heads


def write_synthetic_run(root: Path, seed: int = 0) -> Path:
    """A run directory with config, evaluation, head scores, head ranking and patching summary."""
    from thinklens.attention.heads import rank_heads
    from thinklens.jsonl import write_json
    from thinklens.rundir import RunConfig

    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    cfg = RunConfig(output=str(root), limit=N_TRACES, n_pairs=3, n_bootstrap=50)
    write_json(root / "config.json", cfg.to_dict())
    from thinklens.empirical.evaluate import evaluate_records

    graded = [{"id": f"p{i}", "model": "tiny-r1", "reasoning": mode, "gold_answer": "1", "extracted_answer": "1",
               "is_correct": bool(rng.random() < (0.9 if mode == "with" else 0.3)), "is_correct_strict": True}
              for i in range(100) for mode in ("with", "without")]
    evaluate_records(graded, seed=seed, n_resamples=500).save(root)
    a2r = rng.uniform(0.0, 0.2, (N_TRACES, N_LAYERS, N_HEADS))  # [n_traces, n_layers, n_heads]
    for layer, head in RFH:
        a2r[:, layer, head] += 0.6
    rest = 1 - a2r
    arrays = {"a2r": a2r, "a2p": rest * 0.3, "a2a": rest * 0.3, "a2bos": rest * 0.3, "a2bot": rest * 0.05,
              "a2eot": rest * 0.05}
    (root / "attention").mkdir(exist_ok=True)
    np.savez(root / "attention" / "head_scores.npz", ids=np.array([f"t{i}" for i in range(N_TRACES)]),
             token_len=np.full(N_TRACES, 120), think_start=np.full(N_TRACES, 20),
             think_end=np.full(N_TRACES, 100), **{k: v.astype(np.float32) for k, v in arrays.items()})
    from thinklens.attention.tokens import TokenAttention
    from thinklens.report.token_view import render_token_view

    ranking = rank_heads(a2r, "a2r", top_k=5, n_bootstrap=50, seed=seed)
    cues = {"n_traces": 4, "n_cue_tokens": 9, "mean_cue": 2.4, "mean_other": 0.95, "p_value": 0.001}
    write_json(root / "heads.json", {**ranking.to_json(), "cues": cues, "induction_overlap": {
        "overlap": 2, "k_found": 5, "k_reference": 5, "n_heads_total": 32, "jaccard": 0.25, "p_value": 0.2,
        "shared": [[2, 5], [1, 3]]}})
    write_json(root / "attention" / "cue_stats.json", {**cues, "cues": ["Wait"], "heads": [[2, 5]], "diff": 1.45})
    text = "7+5=13\nWait, 7+5=12\n12*3=36\nFinal answer is 36.\n"
    render_token_view(TokenAttention("t0", [(2, 5)], list(text), rng.uniform(0, 1, (1, len(text))),
                                     np.array([c in "Wait" for c in text]), "The answer is \\boxed{36}."),
                      root / "attention" / "token_view.html")
    from thinklens.patching.results import PairPatching, PatchingResult

    items = []
    labels = [f"r-{j}" for j in range(N_POS - 6, 0, -1)] + [f"a-{j}" for j in range(6, 0, -1)]
    for i in range(3):
        nld = rng.normal(0, 0.03, (N_POS, N_LAYERS))  # [n_positions, n_layers]
        nld[25, :3] = 0.95  # the reasoning's answer token carries the answer in early layers
        nld[N_POS - 1, 2:] = np.linspace(0.5, 1.0, N_LAYERS - 2)  # the final position in late layers
        positions = list(range(100, 100 + N_POS))
        items.append(PairPatching(
            pair_id=f"pair-{i}", site="resid_pre", positions=positions, labels=labels,
            tokens=list("Final answer is 32.\n</think>\n\nThe answer is \\boxed{")[:N_POS],
            layers=list(range(N_LAYERS)),
            patched=(nld * 4 - 2).tolist(), nld=nld.tolist(), clean=2.0, corrupted=-2.0,
            named={"answer_flip": 125, "final": 100 + N_POS - 1, "think_close": 120}))
    PatchingResult.from_pairs(items).save(root / "patching")
    return root


@pytest.fixture(scope="session")
def synthetic_run(tmp_path_factory) -> Path:
    return write_synthetic_run(tmp_path_factory.mktemp("synthetic") / "run")


@pytest.fixture(scope="session")
def synthetic_report(synthetic_run) -> Path:
    from thinklens.pipeline import build_report

    return build_report(synthetic_run)


def load_results(run: Path) -> dict:
    """The headline numbers of a run directory, read from its stage files as results.json is written."""
    from thinklens.results import headline_results
    from thinklens.rundir import RunPaths, load_config

    return headline_results(RunPaths(run), load_config(run))

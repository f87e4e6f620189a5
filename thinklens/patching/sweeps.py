"""Patching sweeps as in Zhang et al.: every layer x the last reasoning tokens and the answer tail, and per head.

The per-token sweep patches one site kind (default ``resid_pre``) at one (position, layer) per run and scores
the final-position logit difference, giving an NLD grid [n_positions, n_layers] per pair. The default grid is the
paper's: the last 8 reasoning tokens (the probe line ``Final answer is X.``) and the last 3 answer tokens (ending
in ``\\boxed{``), plus ``answer_step`` where the pair has it. Position specs (comma-separated, or a list):
``last-reasoning:K``, ``answer-tail:K``, ``prompt-head:K``, a named position of the pair (``answer_flip``,
``answer_step``, ``think_close``, ``final``; ``name?`` skips it when the pair lacks it), or an integer (absolute;
negative counts from the end). A named position is its own column even when a relative one covers it.

:func:`patch_pairs` runs many pairs with resume: each finished pair is appended to ``pairs.jsonl`` in the output
directory, a rerun skips the pair ids already there, and a failing pair goes to ``errors.jsonl`` with its reason.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from thinklens.errors import ThinklensError
from thinklens.modules import attention_shape
from thinklens.patching.engine import BATCH_SIZE, MAX_PACKED_TOKENS, run_patches
from thinklens.patching.metrics import LogitDiff, Metric, answer_ranks, normalize
from thinklens.patching.pairs import Pair
from thinklens.patching.results import PairPatching, PatchingResult
from thinklens.patching.targets import Site, SiteKind
from thinklens.profiles import Profile

DEFAULT_POSITIONS = "last-reasoning:8,answer-tail:3,answer_step?"
DEFAULT_HEAD_POSITIONS = "answer_flip,answer_step?,final"


def resolve_positions(pair: Pair, spec: str | Sequence[int | str]) -> tuple[list[int], list[str]]:
    """Absolute positions and their labels for a position spec (duplicates dropped, order kept)."""
    parts = [p.strip() for p in spec.split(",") if p.strip()] if isinstance(spec, str) else list(spec)
    T = len(pair)
    r0, r1 = pair.spans["reasoning"]
    out: list[tuple[int, str]] = []
    for part in parts:
        if isinstance(part, (int, np.integer)) or (isinstance(part, str) and part.lstrip("-").isdigit()):
            p = int(part)
            out.append((p + T if p < 0 else p, f"@{p}"))
            continue
        name, _, k = str(part).partition(":")
        if name in ("last-reasoning", "answer-tail", "prompt-head"):
            if not k.isdigit() or int(k) < 1:
                raise ThinklensError(f"position spec {part!r}: expected {name}:K with K >= 1")
            k = int(k)
            if name == "last-reasoning":
                if r1 - r0 < k:  # every pair must give the same grid, so a short reasoning is an error
                    raise ThinklensError(f"pair {pair.id}: the reasoning has {r1 - r0} tokens, fewer than {part!r}")
                out += [(r1 - j, f"r-{j}") for j in range(k, 0, -1)]
            elif name == "answer-tail":
                out += [(T - j, f"a-{j}") for j in range(k, 0, -1)]
            else:
                out += [(pair.spans["prompt"][0] + j, f"p+{j}") for j in range(k)]
        elif name.rstrip("?") in pair.positions:
            out.append((pair.positions[name.rstrip("?")], name.rstrip("?")))
        elif name.endswith("?"):  # optional named position: skipped when the pair lacks it
            continue
        else:
            raise ThinklensError(f"pair {pair.id}: unknown position {part!r} (named positions: "
                                 f"{sorted(pair.positions)}; or last-reasoning:K, answer-tail:K, prompt-head:K, int)")
    seen, positions, labels = set(), [], []
    for p, lab in out:  # a named position stays a column even when a relative one covers it (stable grids)
        if not 0 <= p < T:
            raise ThinklensError(f"pair {pair.id}: position {lab} = {p} outside its {T} tokens")
        if lab not in seen:
            seen.add(lab)
            positions.append(p)
            labels.append(lab)
    return positions, labels


def patch_pair(
    model: Any,
    profile: Profile,
    pair: Pair,
    positions: str | Sequence[int | str] = DEFAULT_POSITIONS,
    site: str | SiteKind = SiteKind.RESID_PRE,
    *,
    layers: Sequence[int] | None = None,
    heads: bool = False,
    head_positions: str | Sequence[int | str] = DEFAULT_HEAD_POSITIONS,
    attribution: bool = False,
    engine: str = "fast",
    metric: Metric | None = None,
    batch_size: int = BATCH_SIZE,
    max_tokens: int = MAX_PACKED_TOKENS,
    progress: Callable[[int], None] | None = None,
) -> PairPatching:
    """Per-token sweep (every layer x ``positions``) of one pair, optionally per head and attribution patching.

    ``metric`` defaults to the logit difference of the pair's answer tokens; NLD normalizes it by the clean and
    corrupted runs."""
    t0 = time.perf_counter()
    kind = SiteKind.parse(site)
    if kind is SiteKind.HEAD:
        raise ThinklensError("use heads=True for per-head patching; site must be a residual/attn/mlp kind")
    n_layers, n_heads, _, _ = attention_shape(model)
    layers = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    metric = metric or LogitDiff(pair.clean_answer, pair.corrupted_answer)
    pos, labels = resolve_positions(pair, positions)
    items = [[(Site(kind, layer), p)] for p in pos for layer in layers]
    out = run_patches(model, profile, pair, items, metric, engine=engine, batch_size=batch_size,
                      max_tokens=max_tokens, progress=progress)
    patched = out.patched.reshape(len(pos), len(layers))  # [n_positions, n_layers]
    nld = normalize(patched, out.clean, out.corrupted)
    result = PairPatching(
        pair_id=pair.id, site=kind.value, positions=pos, labels=labels, tokens=[pair.tokens[p] if pair.tokens else ""
                                                                               for p in pos],
        layers=layers, patched=patched.tolist(), nld=nld.tolist(), clean=out.clean, corrupted=out.corrupted,
        named=dict(pair.positions),
        clean_ranks=[int(r) for r in answer_ranks(out.clean_logits, pair.clean_answer, pair.corrupted_answer)],
        corrupted_ranks=[int(r) for r in answer_ranks(out.corrupted_logits, pair.clean_answer,
                                                      pair.corrupted_answer)],
        engine=engine,
    )
    if heads:
        hpos, hlabels = resolve_positions(pair, head_positions)
        hitems = [[(Site(SiteKind.HEAD, layer, h), p)] for p in hpos for layer in layers for h in range(n_heads)]
        hout = run_patches(model, profile, pair, hitems, metric, engine=engine, batch_size=batch_size,
                           max_tokens=max_tokens, progress=progress)
        hnld = normalize(hout.patched.reshape(len(hpos), len(layers), n_heads), out.clean, out.corrupted)
        result.head_positions, result.head_labels, result.head_nld = hpos, hlabels, hnld.tolist()
    if attribution:
        from thinklens.patching.attribution import attribution_patching, spearman

        attr = attribution_patching(model, profile, pair, kinds=(kind,), metric=metric)
        est = attr.nld(kind)[np.ix_(pos, layers)]  # [n_positions, n_layers]
        result.attribution = est.tolist()
        result.attribution_spearman = spearman(est, nld)
    result.seconds = time.perf_counter() - t0
    return result


def patch_pairs(
    model: Any,
    profile: Profile,
    pairs: Sequence[Pair],
    output_dir: str | Path,
    *,
    progress: bool = True,
    **kwargs: Any,
) -> PatchingResult:
    """Patch many pairs with resume (see the module docstring); returns and saves the stacked result."""
    from thinklens.jsonl import JsonlWriter, done_ids, read_records

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    records_path, errors_path = out / "pairs.jsonl", out / "errors.jsonl"
    done = done_ids(records_path, key="pair_id") if records_path.exists() else set()
    todo = [p for p in pairs if p.id not in done]
    n_layers, n_heads, _, _ = attention_shape(model)
    bar = None
    if progress and todo:
        from thinklens.progress import bar as progress_bar

        bar = progress_bar(total=len(todo), desc="patching pairs", unit="pair")
    with JsonlWriter(records_path) as w, JsonlWriter(errors_path) as errs:
        for pair in todo:
            try:
                w.write(patch_pair(model, profile, pair, **kwargs).to_dict())
            except ThinklensError as err:
                errs.write({"id": pair.id, "error": str(err)})
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    wanted = {p.id for p in pairs}
    items = [PairPatching.from_dict(r) for r in read_records(records_path) if r.get("pair_id") in wanted]
    result = PatchingResult.from_pairs(items)
    result.save(out)
    return result

"""Patching sweeps as in Zhang et al.: every layer x the probe line, think-close and the answer tail, and per head.

The per-token sweep patches one site kind (default ``resid_pre``) at one (position, layer) per run and scores
the final-position logit difference, giving an NLD grid [n_positions, n_layers] per pair.

Position specs (comma-separated, or a list): ``probe`` (every token of the probe line ``Final answer is X.``,
labelled ``probe+i`` from the probe start for the tokens before the answer, ``answer_flip`` (``answer_flip+k``) for
the answer's tokens and ``probe-j`` from the probe end for the tokens after it), ``last-reasoning:K`` (``r-j``),
``answer-tail:K`` (``a-j``), ``prompt-head:K`` (``p+j``), a named position of the pair (``answer_flip``,
``answer_step``, ``answer_kept``, ``think_close``, ``final``; ``name?`` skips it when the pair lacks it), an
integer (absolute; negative counts from the end, label ``@n``), or any label above (``probe+2``, ``a-3``, ``@5``).
A named position is its own column even when a relative one covers it.

:data:`PAPER_POSITIONS` is the paper's grid (its ``answer_backoff=3`` sweep): every probe token, ``think_close``
and the last 3 answer tokens ``a-3..a-1`` (ending in ``\\boxed{``). :func:`default_positions` picks the grid for a
pair's source: the paper's for CSV pairs, :data:`TOY_POSITIONS` for tiny-r1's toy pairs.

One sweep, one grid: the probe has 5 tokens for a word answer (``Final| answer| is| Pacific|.\\n``) and 6 for a
digit (``Final| answer| is| |4|.\\n``: the R1 tokenizer splits digits off their space), so a sweep keeps the labels
that every pair has (:func:`sweep_grid`), here dropping the lone space of digit pairs when words and digits mix.

:func:`patch_pairs` runs many pairs with resume: each finished pair is appended to ``pairs.jsonl`` in the output
directory, a rerun skips the pair ids already there, and a failing pair goes to ``errors.jsonl`` with its reason.
Under torchrun pair ``i`` is rank ``i % WORLD_SIZE``'s and rank 0 stacks the merged result
(:mod:`thinklens.distributed`).
"""
from __future__ import annotations

import re
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
from thinklens.toy.tasks import PATCH_POSITIONS

PAPER_POSITIONS = "probe,think_close,answer-tail:3"  # the paper's answer_backoff=3 sweep
TOY_POSITIONS = PATCH_POSITIONS  # tiny-r1: the end of the probe line + the answer ending (thinklens.toy.tasks)
POSITIONS_BY_SOURCE = {"csv": PAPER_POSITIONS, "tiny-r1": TOY_POSITIONS}  # Pair.meta["source"] -> default grid
DEFAULT_HEAD_POSITIONS = "answer_flip,answer_step?,final"
_LABEL = re.compile(r"^(probe|answer_flip|r|a|p)([+-])(\d+)$")


def default_positions(pairs: Pair | Sequence[Pair]) -> str:
    """The default position spec for pairs of one source (``Pair.meta["source"]``): :data:`PAPER_POSITIONS` for
    the paper's CSV pairs, :data:`TOY_POSITIONS` for tiny-r1's toy pairs and pairs of unknown source.

    >>> from thinklens.patching.pairs import toy_pairs, toy_tokenizer
    >>> default_positions(toy_pairs(1, 0, toy_tokenizer())[0])
    'last-reasoning:8,answer-tail:4'
    """
    pairs = [pairs] if isinstance(pairs, Pair) else list(pairs)
    specs = {POSITIONS_BY_SOURCE.get(str(p.meta.get("source")), TOY_POSITIONS) for p in pairs}
    if len(specs) > 1:
        sources = sorted({str(p.meta.get("source")) for p in pairs})
        raise ThinklensError(f"the pairs come from several sources {sources} with different default grids; "
                             "pass positions explicitly")
    return specs.pop() if specs else TOY_POSITIONS


def probe_positions(pair: Pair) -> list[tuple[int, str]]:
    """(position, label) of every probe token of a pair (see the module docstring for the labels).

    >>> from thinklens.patching.pairs import toy_pairs, toy_tokenizer
    >>> [lab for _, lab in probe_positions(toy_pairs(1, 0, toy_tokenizer())[0][0])][-5:]
    ['probe+15', 'answer_flip', 'answer_flip+1', 'probe-2', 'probe-1']
    """
    if "probe" not in pair.spans or "answer_flip" not in pair.spans:
        raise ThinklensError(f"pair {pair.id}: no probe span recorded (a pair file from an older thinklens): "
                             "rebuild it with `thinklens pairs build|toy`")
    (p0, p1), (f0, f1) = pair.spans["probe"], pair.spans["answer_flip"]
    return ([(i, f"probe+{i - p0}") for i in range(p0, f0)]
            + [(i, "answer_flip" if i == f0 else f"answer_flip+{i - f0}") for i in range(f0, f1)]
            + [(i, f"probe-{p1 - i}") for i in range(f1, p1)])


def _labelled(pair: Pair, name: str, sign: str, j: int) -> int | None:
    """The position a relative label (``r-3``, ``a-1``, ``p+0``, ``probe+2``, ``answer_flip+1``) names, or None."""
    T, (r0, r1) = len(pair), pair.spans["reasoning"]
    if name == "r" and sign == "-" and 1 <= j <= r1 - r0:
        return r1 - j
    if name == "a" and sign == "-" and 1 <= j <= T:
        return T - j
    if name == "p" and sign == "+":
        return pair.spans["prompt"][0] + j
    if name in ("probe", "answer_flip"):
        return dict((lab, p) for p, lab in probe_positions(pair)).get(f"{name}{sign}{j}")
    return None


def resolve_positions(pair: Pair, spec: str | Sequence[int | str]) -> tuple[list[int], list[str]]:
    """Absolute positions and their labels for a position spec (duplicates dropped, order kept).

    >>> from thinklens.patching.pairs import toy_pairs, toy_tokenizer
    >>> pair = toy_pairs(1, 0, toy_tokenizer())[0][0]
    >>> resolve_positions(pair, "think_close,answer-tail:2")[1]
    ['think_close', 'a-2', 'a-1']
    """
    parts = [p.strip() for p in spec.split(",") if p.strip()] if isinstance(spec, str) else list(spec)
    T = len(pair)
    r0, r1 = pair.spans["reasoning"]
    out: list[tuple[int, str]] = []
    for part in parts:
        if isinstance(part, (int, np.integer)) or (isinstance(part, str) and part.lstrip("@-").isdigit()):
            p = int(str(part).lstrip("@"))
            out.append((p + T if p < 0 else p, f"@{p}"))
            continue
        name, _, k = str(part).partition(":")
        label = _LABEL.match(name)
        if name == "probe" and not k:
            out += probe_positions(pair)
        elif name in ("last-reasoning", "answer-tail", "prompt-head"):
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
        elif label:
            p = _labelled(pair, *label.group(1, 2), int(label.group(3)))
            if p is None:
                raise ThinklensError(f"pair {pair.id}: it has no position {name!r}")
            out.append((p, name))
        elif name.endswith("?"):  # optional named position: skipped when the pair lacks it
            continue
        else:
            raise ThinklensError(f"pair {pair.id}: unknown position {part!r} (named positions: "
                                 f"{sorted(pair.positions)}; or probe, last-reasoning:K, answer-tail:K, "
                                 "prompt-head:K, a label such as probe+1 or a-2, int)")
    seen, positions, labels = set(), [], []
    for p, lab in out:  # a named position stays a column even when a relative one covers it (stable grids)
        if not 0 <= p < T:
            raise ThinklensError(f"pair {pair.id}: position {lab} = {p} outside its {T} tokens")
        if lab not in seen:
            seen.add(lab)
            positions.append(p)
            labels.append(lab)
    return positions, labels


def sweep_grid(pairs: Sequence[Pair], spec: str | Sequence[int | str] | None = None) -> list[str]:
    """The labels of a sweep over ``pairs``: those of the spec that every pair has, in the first pair's order
    (``spec`` None: :func:`default_positions`; pairs the spec does not fit are left out). Pass the result as
    ``positions`` to give every pair one grid.

    >>> from thinklens.patching.pairs import toy_pairs, toy_tokenizer
    >>> pairs = toy_pairs(2, 0, toy_tokenizer())[0]  # answers 96 (2 tokens in the probe) and 4 (1 token)
    >>> sweep_grid(pairs[:1], "probe")[-4:], sweep_grid(pairs, "probe")[-3:]
    (['answer_flip', 'answer_flip+1', 'probe-2', 'probe-1'], ['answer_flip', 'probe-2', 'probe-1'])
    """
    if not pairs:
        return []
    spec = default_positions(pairs) if spec is None else spec
    grids, first_error = [], None
    for p in pairs:  # a pair the spec does not fit fails on its own later (patch_pairs records it)
        try:
            grids.append(resolve_positions(p, spec)[1])
        except ThinklensError as err:
            first_error = first_error or err
    if not grids:
        raise first_error
    common = set.intersection(*(set(g) for g in grids))
    labels = [lab for lab in grids[0] if lab in common]
    if not labels:
        raise ThinklensError(f"position spec {spec!r}: no position label is shared by all {len(pairs)} pairs")
    return labels


def patch_pair(
    model: Any,
    profile: Profile,
    pair: Pair,
    positions: str | Sequence[int | str] | None = None,
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

    ``positions`` defaults to :func:`default_positions` of the pair. ``metric`` defaults to the logit difference of
    the pair's answer tokens; NLD normalizes it by the clean and corrupted runs.

    >>> from thinklens.models import load_model
    >>> from thinklens.patching.pairs import toy_pairs
    >>> from thinklens.patching.sweeps import patch_pair
    >>> model, tok, profile = load_model("tiny-r1", device="cpu", dtype="fp32")
    >>> r = patch_pair(model, profile, toy_pairs(1, 0, tok)[0][0], "answer_flip,final")
    >>> len(r.nld), len(r.nld[0]) == model.config.num_hidden_layers
    (2, True)

    >>> import thinklens as tl
    >>> model, tokenizer, profile = tl.load_model("tiny-r1")
    >>> pair = tl.toy_pairs(1, seed=0, tokenizer=tokenizer)[0][0]
    >>> res = tl.patch_pair(model, profile, pair, positions="answer_flip,final")
    >>> [[round(x, 1) for x in row] for row in res.nld]  # [position][layer]: the answer moves to the final token
    [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]]
    """
    t0 = time.perf_counter()
    kind = SiteKind.parse(site)
    if kind is SiteKind.HEAD:
        raise ThinklensError("use heads=True for per-head patching; site must be a residual/attn/mlp kind")
    n_layers, n_heads, _, _ = attention_shape(model)
    layers = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    metric = metric or LogitDiff(pair.clean_answer, pair.corrupted_answer)
    pos, labels = resolve_positions(pair, default_positions(pair) if positions is None else positions)
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
    """Patch many pairs with resume (see the module docstring) on one grid (:func:`sweep_grid` of ``positions``,
    default: :func:`default_positions`); returns and saves the stacked result.

    >>> import tempfile
    >>> from thinklens.models import load_model
    >>> from thinklens.patching.pairs import toy_pairs
    >>> from thinklens.patching.sweeps import patch_pairs
    >>> model, tok, profile = load_model("tiny-r1", device="cpu", dtype="fp32")
    >>> res = patch_pairs(model, profile, toy_pairs(2, 0, tok)[0], tempfile.mkdtemp(), positions="final",
    ...                   progress=False)
    >>> res.nld.shape[:2]
    (2, 1)

    >>> import tempfile, thinklens as tl
    >>> model, tokenizer, profile = tl.load_model("tiny-r1")
    >>> pairs, _ = tl.toy_pairs(2, seed=0, tokenizer=tokenizer)
    >>> res = tl.patch_pairs(model, profile, pairs, tempfile.mkdtemp(), layers=[0], progress=False)
    >>> res.pair_ids == [p.id for p in pairs], res.labels[-1]
    (True, 'a-1')
    """
    from thinklens import distributed
    from thinklens.jsonl import JsonlWriter, done_ids, read_records

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    records_path, errors_path = out / "pairs.jsonl", out / "errors.jsonl"
    spec = kwargs.pop("positions", None)
    spec = default_positions(pairs) if spec is None else spec
    try:
        grid = sweep_grid(pairs, spec)
    except ThinklensError:  # no pair fits the spec: each pair's own error goes to errors.jsonl below
        grid = spec
    index = {p.id: i for i, p in reversed(list(enumerate(pairs)))}  # the order one process writes in
    world = distributed.world()  # under torchrun, pair i is rank i % WORLD_SIZE's
    with distributed.sharded_files(records_path, errors_path,
                                   order=lambda r: index.get(r.get("pair_id", r.get("id")))) as (mine, my_errors):
        done = done_ids(records_path, key="pair_id")
        todo = [p for i, p in enumerate(pairs) if world.owns(i) and p.id not in done]
        bar = None
        if progress and todo:
            from thinklens.progress import bar as progress_bar

            bar = progress_bar(total=len(todo), desc="patching pairs", unit="pair")
        vocab = model.get_input_embeddings().num_embeddings
        with JsonlWriter(mine) as w, JsonlWriter(my_errors) as errs:
            for pair in todo:
                try:
                    pair.check_vocab(vocab)  # an id the model cannot embed fails here, not inside torch.embedding
                    resolve_positions(pair, spec)  # a pair the spec does not fit fails with its own reason
                    w.write(patch_pair(model, profile, pair, grid, **kwargs).to_dict())
                except ThinklensError as err:
                    errs.write({"id": pair.id, "error": str(err)})
                if bar is not None:
                    bar.update(1)
        if bar is not None:
            bar.close()

    def stack() -> PatchingResult:
        wanted = {p.id for p in pairs}
        items = [PairPatching.from_dict(r) for r in read_records(records_path) if r.get("pair_id") in wanted]
        result = PatchingResult.from_pairs(items)
        result.save(out)
        return result

    result = distributed.on_main(stack, share=False)
    return result if result is not None else PatchingResult.load(out)

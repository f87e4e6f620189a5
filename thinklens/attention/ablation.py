"""The causal test of Reasoning-Focus Heads: silence them while the model writes its answer, and compare with
silencing as many random heads of the same layers.

Why: RFHs are defined by attention (the top heads by mean answer→reasoning attention ``a2r``). Attention says
where a head *looks*, not whether its output matters. Ablation asks the second question. For every trace the
attention stage scored, the prompt, the reasoning and ``</think>`` stay fixed (the trace's own tokens) and the answer
is regenerated greedily with the ablated heads, then graded against ``gold_answer`` with
:mod:`thinklens.empirical.grading`. We also score the log-probability of the model's own unablated answer under
ablation (teacher-forced), a graded measure that moves even when the argmax answer does not.

What is ablated: a head's output is its ``head_dim`` slice of the input of ``o_proj`` (GQA: query heads; found
through the profile's module paths, :mod:`thinklens.modules`). A forward pre-hook on ``o_proj`` overwrites it with
zero (``mode="zero"``) or with the head's mean output over the answer positions of the unablated runs
(``mode="mean"``: keeps the activation's typical offset, so the test removes the head's *information*, not its
average contribution). Positions: every position from which an answer token is generated, i.e. the ``</think>``
token and each generated token; the prompt and reasoning keep their keys and values untouched (their KV cache is
computed once, unablated, and shared by all conditions).

Control: ``random_draws`` seeded sets of k heads drawn from the *same layers* as the RFHs (one head per RFH, from
its layer, never an RFH), so that the control matches the depth profile of the RFH set. All conditions of one trace
run as rows of one batch over the shared prefix cache, each row with its own ablated heads.

Two passes: (1) one unablated run per trace gives the base answer, its log-probability and the mean head outputs;
(2) the ablated conditions. Pass 1 is saved as a whole when it ends (``base.json`` + ``means.npz``; it is rerun if
interrupted, at 1/(2 + R) of the cost), pass 2 appends one record per trace to ``partial.jsonl`` so that a rerun
with the same settings continues where it stopped. The summary statistics are in
:mod:`thinklens.attention.ablation_result`.
"""
from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from thinklens.attention.ablation_result import AblationResult
from thinklens.attention.ablation_rows import _prefill, answer_logprob, greedy_rows
from thinklens.errors import ThinklensError

ABLATION_MODES = ("mean", "zero")
# extra answer tokens beyond twice the trace's own answer length: an ablated model may ramble, and the answer cap
# must stop it without cutting a normal answer (the base run reproduces the trace's answer within 1x its length)
ANSWER_MARGIN = 16
SETTINGS_FILE, BASE_FILE, MEANS_FILE, PARTIAL_FILE = "settings.json", "base.json", "means.npz", "partial.jsonl"

Head = tuple[int, int]


@dataclass
class AblationSettings:
    """What a run is; a rerun into the same directory must have the same settings.

    Example::

        AblationSettings(top_k=3, random_draws=5, mode="zero").mode  # "zero"
    """

    top_k: int = 3
    random_draws: int = 5
    mode: str = "mean"
    seed: int = 0
    limit: int | None = None
    score: str = "a2r"
    max_new_tokens: int | None = None  # None: 2 x the trace's answer length + ANSWER_MARGIN
    traces: str = ""

    def __post_init__(self) -> None:
        if self.mode not in ABLATION_MODES:
            raise ThinklensError(f"ablation mode must be one of {ABLATION_MODES}, got {self.mode!r}")
        if self.top_k < 1 or self.random_draws < 0:
            raise ThinklensError("ablation needs --top >= 1 and --random-draws >= 0")


def matched_random_heads(rfhs: Sequence[Head], n_heads: int, n_draws: int, seed: int = 0) -> list[list[Head]]:
    """``n_draws`` sets of random heads, each with one head from the layer of every RFH (never an RFH).

    >>> matched_random_heads([(1, 2), (1, 7), (2, 6)], n_heads=8, n_draws=2, seed=0)[0][0][0]
    1
    """
    rfh_set = {tuple(h) for h in rfhs}
    layers = [int(layer) for layer, _ in rfhs]
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_draws):
        chosen: list[Head] = []
        for layer in sorted(set(layers)):
            pool = [h for h in range(n_heads) if (layer, h) not in rfh_set]
            need = layers.count(layer)
            if len(pool) < need:
                raise ThinklensError(f"layer {layer} has {len(pool)} non-RFH heads, {need} needed for the control")
            chosen += [(layer, int(h)) for h in rng.choice(pool, size=need, replace=False)]
        draws.append(chosen)
    return draws


class RowSelection:
    """Which rows of :func:`ablate_heads`' layout the next forwards carry: all of them (the default), or, inside
    :meth:`only`, a subset in the given order; lets a caller run the rows in chunks (``answer_logprob`` does).

    Example::

        with ablate_heads(model, profile, [[], [(1, 2)], [(2, 0)]]) as sel, sel.only([2]):
            model(ids[2:3])  # batch row 0 is layout row 2: L2H0 ablated
    """

    def __init__(self, n_rows: int) -> None:
        self.n_rows, self.rows = n_rows, None

    def batch_index(self) -> dict[int, int]:
        """layout row -> batch row of the current forward."""
        return {r: i for i, r in enumerate(range(self.n_rows) if self.rows is None else self.rows)}

    @contextlib.contextmanager
    def only(self, rows: Sequence[int]) -> Iterator[None]:
        self.rows = [int(r) for r in rows]
        try:
            yield
        finally:
            self.rows = None


@contextlib.contextmanager
def ablate_heads(model: Any, profile: Any, rows: Sequence[Sequence[Head]], mode: str = "zero",
                 means: np.ndarray | None = None) -> Iterator[RowSelection]:
    """Ablate heads during every forward inside the block, per batch row: ``rows[r]`` lists the (layer, head)
    pairs silenced in row ``r`` at *all* positions of the forward (``[]`` = unablated row; the batch must have
    ``len(rows)`` rows, or those of the yielded :class:`RowSelection`'s current subset). ``means [n_layers, n_heads,
    head_dim]`` is required for ``mode="mean"``.

    >>> import torch
    >>> from thinklens.models import load_model
    >>> model, tok, profile = load_model("tiny-r1", device="cpu", dtype="fp32")
    >>> ids = torch.tensor([tok("Final answer is 42.")["input_ids"]] * 2)
    >>> with torch.no_grad(), ablate_heads(model, profile, [[], [(1, 2)]], "zero"):
    ...     logits = model(ids).logits  # row 0 unablated, row 1 without L1H2
    >>> bool(torch.equal(logits[0], model(ids).logits[0])), bool(torch.equal(logits[1], logits[0]))
    (True, False)
    """
    from thinklens.modules import attention_shape, layer_o_proj

    n_layers, n_heads, _, hd = attention_shape(model)
    if mode not in ABLATION_MODES:
        raise ThinklensError(f"ablation mode must be one of {ABLATION_MODES}, got {mode!r}")
    if mode == "mean" and means is None:
        raise ThinklensError("mean ablation needs the heads' mean outputs")
    by_layer: dict[int, list[tuple[int, int]]] = {}
    for r, heads in enumerate(rows):
        for layer, head in heads:
            if not (0 <= layer < n_layers and 0 <= head < n_heads):
                raise ThinklensError(f"head ({layer}, {head}) out of range for {n_layers} x {n_heads}")
            by_layer.setdefault(int(layer), []).append((r, int(head)))
    handles = []
    selection = RowSelection(len(rows))

    def make_hook(items: list[tuple[int, int]], layer: int) -> Any:
        def hook(module: Any, args: tuple) -> tuple:
            z = args[0].clone()  # [b, seq, n_heads * head_dim]
            where = selection.batch_index()
            if z.shape[0] != len(where):
                raise ThinklensError(f"ablation: {len(where)} row head sets for a batch of {z.shape[0]}")
            for row, h in items:
                if (r := where.get(row)) is None:
                    continue
                if mode == "zero":
                    z[r, :, h * hd:(h + 1) * hd] = 0
                else:
                    z[r, :, h * hd:(h + 1) * hd] = torch.as_tensor(means[layer, h], dtype=z.dtype, device=z.device)
            return (z, *args[1:])
        return hook

    try:
        for layer, items in by_layer.items():
            handles.append(layer_o_proj(model, profile, layer).register_forward_pre_hook(make_hook(items, layer)))
        yield selection
    finally:
        for h in handles:
            h.remove()


class MeanOutputs:
    """Accumulates each head's output (its slice of the ``o_proj`` input) over the positions of the forwards run
    inside :meth:`recording`: ``sums [n_layers, n_heads, head_dim]``. ``weights [b, seq]`` (set before a forward)
    keeps finished or padded rows out of the mean.

    Example::

        acc = MeanOutputs(model, profile)
        with acc.recording():
            model(ids)
        acc.means().shape  # (n_layers, n_heads, head_dim)
    """

    def __init__(self, model: Any, profile: Any) -> None:
        from thinklens.modules import attention_shape

        self.model, self.profile = model, profile
        self.n_layers, self.n_heads, _, self.hd = attention_shape(model)
        self.sums = np.zeros((self.n_layers, self.n_heads, self.hd), dtype=np.float64)
        self.counts = np.zeros(self.n_layers, dtype=np.float64)
        self.weights: torch.Tensor | None = None  # [b, seq] 0/1, None = every position counts

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        from thinklens.modules import layer_o_proj

        def make_hook(layer: int) -> Any:
            def hook(module: Any, args: tuple) -> None:
                z = args[0].detach().float()  # [b, seq, n_heads * head_dim]
                w = torch.ones(z.shape[:2], device=z.device) if self.weights is None else \
                    self.weights.to(z.device, torch.float32)  # [b, seq]
                zs = (z * w[..., None]).reshape(-1, self.n_heads, self.hd).sum(0)  # [n_heads, head_dim]
                self.sums[layer] += zs.double().cpu().numpy()
                self.counts[layer] += float(w.sum())
            return hook

        handles = [layer_o_proj(self.model, self.profile, layer).register_forward_pre_hook(make_hook(layer))
                   for layer in range(self.n_layers)]
        try:
            yield
        finally:
            for h in handles:
                h.remove()

    def means(self) -> np.ndarray:
        """[n_layers, n_heads, head_dim] float32."""
        return (self.sums / np.maximum(self.counts, 1)[:, None, None]).astype(np.float32)


def grade_answer(tokenizer: Any, tokens: list[int], gold: str, forced: str = "") -> tuple[str | None, bool, str]:
    """(extracted answer, correct, answer text) of generated answer tokens (EOS dropped) after the ``forced`` answer
    prefix, graded like stage 1.

    Example::

        grade_answer(tok, tok("\n\nThe answer is \\boxed{12}.")["input_ids"], "12")  # ("12", True, ...)
    """
    from thinklens.empirical.grading import extract_answer, is_equiv_math_verify

    eos = tokenizer.eos_token_id
    text = forced + tokenizer.decode([t for t in tokens if t != eos], skip_special_tokens=False,
                                     clean_up_tokenization_spaces=False)
    pred, _ = extract_answer(text)
    return pred, bool(is_equiv_math_verify(pred, str(gold))), text


def forced_answer_start(trace: Any, profile: Any) -> int:
    """Token where a regenerated answer starts when budget forcing wrote the answer prefix (the record's
    ``forced_close``): after that prefix. Forced text is the prompt's, not the model's to regenerate, and an instruct
    model that ends its turn at the close (Qwen2.5-Coder-1.5B asked to think) would otherwise answer nothing."""
    start = trace.think_close.end
    prefix = profile.answer_prefix.strip()
    close_end = trace.char_span(trace.think_close)[1]
    k = trace.text.find(prefix, close_end) if prefix else -1
    if k == -1 or trace.text[close_end:k].strip():
        return start
    j = start
    while j < trace.answer.end and trace.offsets[j][1] <= k + len(prefix):  # whole tokens of the prefix only
        j += 1
    return j


# -- the batch run ------------------------------------------------------------------------------------------------
def _load_items(hs: Any, settings: AblationSettings, tokenizer: Any, profile: Any, skipped: list[dict[str, Any]],
                starts: dict[str, int]) -> list[tuple[str, Any, str]]:
    """(id, trace, gold) for the scored traces of the trace file, in file order, up to ``limit``; ``starts[id]``:
    the token where its answer is regenerated (after the close, or after a forced answer prefix)."""
    from thinklens.jsonl import read_jsonl
    from thinklens.traces import Trace, record_id

    path = Path(settings.traces)
    if not path.is_file():
        raise ThinklensError(f"{path}: trace file of the scores not found; pass --traces")
    scored = set(hs.ids)
    items = []
    for it in read_jsonl(path):
        if it.record is None:
            continue
        rid = record_id(it.record, it.lineno)
        if rid not in scored:
            continue
        gold = it.record.get("gold_answer")
        try:
            trace = Trace.from_record(it.record, tokenizer, profile, hs.settings.get("text_field"))
        except ThinklensError as err:
            skipped.append({"id": rid, "line": it.lineno, "reason": str(err)})
            continue
        if gold is None or trace.think_close is None or trace.answer is None:
            skipped.append({"id": rid, "line": it.lineno, "reason": "no gold_answer" if gold is None else
                            "unfinished reasoning"})
            continue
        items.append((rid, trace, str(gold)))
        starts[rid] = forced_answer_start(trace, profile) if it.record.get("forced_close") else trace.think_close.end
        if settings.limit is not None and len(items) >= settings.limit:
            break
    if not items:
        raise ThinklensError(f"{path}: no scored trace with a gold answer to ablate")
    return items


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    p = out / SETTINGS_FILE
    if p.exists():
        old = json.loads(p.read_text())
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ThinklensError(f"{out} holds an ablation run with other settings ({', '.join(diff)}); "
                                 "use another --output or delete it")
    else:
        p.write_text(json.dumps(settings, indent=1) + "\n")


def _max_new(trace: Any, settings: AblationSettings) -> int:
    """The answer cap of one trace (EOS counted)."""
    return settings.max_new_tokens or 2 * (len(trace.answer) + (trace.eos is not None)) + ANSWER_MARGIN


def _groups(items: list, size: int) -> list[list]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _pad_id(tokenizer: Any) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id


def _forced_text(trace: Any, start: int) -> str:
    """The forced answer prefix between the close and ``start`` (graded with the regenerated answer)."""
    from thinklens.traces import Span

    return trace.span_text(Span(trace.think_close.end, start)) if start > trace.think_close.end else ""


def _base_pass(model: Any, tokenizer: Any, profile: Any, items: list, starts: dict[str, int],
               settings: AblationSettings, out: Path, batch_size: int, progress: bool
               ) -> tuple[dict[str, dict[str, Any]], np.ndarray]:
    """Unablated answers, their log-probs and the heads' mean answer outputs (saved when complete). Under torchrun
    batch ``g`` is rank ``g % WORLD_SIZE``'s; each batch's head-output sums are kept apart and added in batch order,
    so the means are bit for bit those of one process."""
    from thinklens import distributed
    from thinklens.progress import bar

    if (out / BASE_FILE).exists() and (out / MEANS_FILE).exists():
        base = json.loads((out / BASE_FILE).read_text())
        if all(rid in base for rid, _, _ in items):
            return base, np.load(out / MEANS_FILE)["means"]
    world = distributed.world()
    groups = _groups(items, batch_size)
    base: dict[str, dict[str, Any]] = {}
    sums: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # batch -> (head-output sums, counts)
    pbar = bar(total=len(range(world.rank, len(groups), world.size)), desc="ablation base", unit="batch",
               disable=not progress)
    for g, group in enumerate(groups):
        if not world.owns(g):
            continue
        acc = MeanOutputs(model, profile)
        pre = _prefill(model, [tr.ids[: starts[rid]] for rid, tr, _ in group], _pad_id(tokenizer))
        with acc.recording():
            gens = greedy_rows(model, pre, 1, [_max_new(tr, settings) for _, tr, _ in group],
                               tokenizer.eos_token_id, acc)
        lps = answer_logprob(model, pre, 1, gens)
        for (rid, trace, gold), toks, lp in zip(group, gens, lps):
            pred, ok, text = grade_answer(tokenizer, toks, gold, _forced_text(trace, starts[rid]))
            base[rid] = {"tokens": toks, "answer": pred, "correct": ok, "logprob": float(lp), "text": text,
                         "gold": gold, "matches_trace": text.strip() == trace.span_text(trace.answer).strip()}
        sums[g] = (acc.sums, acc.counts)
        pbar.update(1)
    pbar.close()
    parts = distributed.gather((base, sums))
    total = MeanOutputs(model, profile)
    for g in range(len(groups)):  # batch order, as one process adds them
        s, c = next(p[1][g] for p in parts if g in p[1])
        total.sums += s
        total.counts += c
    merged = {}
    for p in parts:
        merged.update(p[0])
    base = {rid: merged[rid] for rid, _, _ in items}  # item order: the file one process writes
    means = total.means()

    def save() -> None:
        np.savez(out / MEANS_FILE, means=means)
        (out / BASE_FILE).write_text(json.dumps(base, ensure_ascii=False) + "\n")

    distributed.on_main(save, share=False)
    return base, means


def run_ablation(model: Any, tokenizer: Any, profile: Any, scores: str | Path, output: str | Path, *,
                 top_k: int = 3, random_draws: int = 5, mode: str = "mean", seed: int = 0, limit: int | None = None,
                 traces: str | None = None, max_new_tokens: int | None = None, batch_size: int = 16,
                 model_name: str = "", progress: bool = True) -> AblationResult:
    """Ablate the top-k RFHs of ``scores`` (a ``thinklens attention`` directory) vs ``random_draws`` matched random
    head sets, on the scored with-reasoning traces; resumable in ``output``. ``batch_size`` traces run together
    (each with its 1 + R conditions as rows). On tiny-r1's reference traces (a few seconds):

    >>> import json
    >>> from thinklens.attention.segments import score_trace_file
    >>> from thinklens.models import load_model
    >>> from thinklens.toy import full_text, generate_problems
    >>> model, tok, profile = load_model("tiny-r1", device="cpu", dtype="fp32")
    >>> with open("ablation_traces.jsonl", "w") as f:
    ...     for p in generate_problems(8, seed=5):
    ...         _ = f.write(json.dumps({"id": p.id, "text": full_text(p), "gold_answer": p.answer}) + "\\n")
    >>> _ = score_trace_file(model, tok, "ablation_traces.jsonl", "ablation_scores", profile=profile, progress=False)
    >>> res = run_ablation(model, tok, profile, "ablation_scores", "ablation_out", random_draws=2, progress=False)
    >>> s = res.summary()
    >>> s["rfh"], s["accuracy_base"], s["accuracy_rfh_ablated"], s["accuracy_random_ablated"]
    ([[1, 2], [1, 7], [2, 6]], 1.0, 0.125, [1.0, 0.875])
    """
    from thinklens import distributed
    from thinklens.attention.heads import rank_heads
    from thinklens.attention.segments import HeadScores
    from thinklens.jsonl import JsonlWriter
    from thinklens.progress import bar

    t0 = time.perf_counter()
    hs = HeadScores.load(scores)
    settings = AblationSettings(top_k, random_draws, mode, seed, limit, "a2r", max_new_tokens,
                                str(traces or hs.settings.get("traces") or ""))
    rfh = rank_heads(hs, settings.score, top_k, n_bootstrap=0).pairs()
    draws = matched_random_heads(rfh, hs.shape[1], random_draws, seed)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    distributed.on_main(_check_settings, out, {**asdict(settings), "rfh": [list(h) for h in rfh],
                          "random_heads": [[list(h) for h in d] for d in draws]}, share=False)
    skipped: list[dict[str, Any]] = []
    starts: dict[str, int] = {}
    items = _load_items(hs, settings, tokenizer, profile, skipped, starts)
    base, means = _base_pass(model, tokenizer, profile, items, starts, settings, out, batch_size, progress)
    conds = [rfh] + draws
    position = {rid: i for i, (rid, _, _) in enumerate(items)}
    world = distributed.world()  # under torchrun batch g of the pending traces is rank g % WORLD_SIZE's
    with distributed.sharded_files(out / PARTIAL_FILE, order=lambda r: position.get(str(r.get("id")))) as (mine_p,):
        done = _partial(out)  # after the parts of a killed launch were folded in
        todo = [it for it in items if it[0] not in done]
        groups = [g for i, g in enumerate(_groups(todo, batch_size)) if world.owns(i)]
        pbar = bar(total=len(groups), desc="ablation", unit="batch", disable=not progress)
        with JsonlWriter(mine_p) as w:
            for group in groups:
                pre = _prefill(model, [tr.ids[: starts[rid]] for rid, tr, _ in group], _pad_id(tokenizer))
                rows = [c for _ in group for c in conds]  # row = trace * len(conds) + condition
                with ablate_heads(model, profile, rows, mode, means) as sel:
                    gens = greedy_rows(model, pre, len(conds), [_max_new(tr, settings) for _, tr, _ in group],
                                       tokenizer.eos_token_id)
                    lps = answer_logprob(model, pre, len(conds), [base[rid]["tokens"] for rid, _, _ in group],
                                         select=sel.only)
                for g, (rid, trace, gold) in enumerate(group):
                    mine = range(g * len(conds), (g + 1) * len(conds))
                    forced = _forced_text(trace, starts[rid])
                    graded = [grade_answer(tokenizer, gens[r], gold, forced) for r in mine]
                    w.write({"id": rid, "answers": [x[0] for x in graded], "correct": [x[1] for x in graded],
                             "texts": [x[2] for x in graded], "logprob": [float(lps[r]) for r in mine],
                             "n_answer_tokens": len(base[rid]["tokens"])})
                pbar.update(1)
        pbar.close()
    done = _partial(out)  # every rank's records, merged
    ids = [rid for rid, _, _ in items]
    b = [base[i] for i in ids]
    d = [done[i] for i in ids]
    correct = np.array([[bi["correct"], *di["correct"]] for bi, di in zip(b, d)], dtype=bool)  # [n, 2 + R]
    logprob = np.array([[bi["logprob"], *di["logprob"]] for bi, di in zip(b, d)])  # [n, 2 + R]
    answers = [[bi["answer"], *di["answers"]] for bi, di in zip(b, d)]
    res = AblationResult(ids=ids, rfh=rfh, random_heads=draws, correct=correct, logprob=logprob,
                         n_answer_tokens=np.array([di["n_answer_tokens"] for di in d]), answers=answers,
                         gold=[bi["gold"] for bi in b], base_matches_trace=[bool(bi["matches_trace"]) for bi in b],
                         model=model_name, settings={**asdict(settings), "scores": str(scores)}, skipped=skipped,
                         seconds=time.perf_counter() - t0)
    distributed.on_main(res.save, out, share=False)
    return res


def _partial(out: Path) -> dict[str, dict[str, Any]]:
    from thinklens.jsonl import read_jsonl

    if not (out / PARTIAL_FILE).exists():
        return {}
    return {str(it.record["id"]): it.record for it in read_jsonl(out / PARTIAL_FILE) if it.record is not None}

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
from thinklens.errors import ThinklensError

ABLATION_MODES = ("mean", "zero")
# extra answer tokens beyond twice the trace's own answer length: an ablated model may ramble, and the answer cap
# must stop it without cutting a normal answer (the base run reproduces the trace's answer within 1x its length)
ANSWER_MARGIN = 16
SETTINGS_FILE, BASE_FILE, MEANS_FILE, PARTIAL_FILE = "settings.json", "base.json", "means.npz", "partial.jsonl"

Head = tuple[int, int]


@dataclass
class AblationSettings:
    """What a run is; a rerun into the same directory must have the same settings."""

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


@contextlib.contextmanager
def ablate_heads(model: Any, profile: Any, rows: Sequence[Sequence[Head]], mode: str = "zero",
                 means: np.ndarray | None = None) -> Iterator[None]:
    """Ablate heads during every forward inside the block, per batch row: ``rows[r]`` lists the (layer, head)
    pairs silenced in row ``r`` at *all* positions of the forward (``[]`` = unablated row). ``means
    [n_layers, n_heads, head_dim]`` is required for ``mode="mean"``. Example (tiny-r1)::

        with ablate_heads(model, profile, [[(1, 2)]], "zero"):
            model(ids)
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

    def make_hook(items: list[tuple[int, int]], layer: int) -> Any:
        def hook(module: Any, args: tuple) -> tuple:
            z = args[0].clone()  # [b, seq, n_heads * head_dim]
            for r, h in items:
                if r >= z.shape[0]:
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
        yield
    finally:
        for h in handles:
            h.remove()


class MeanOutputs:
    """Accumulates each head's output (its slice of the ``o_proj`` input) over the positions of the forwards run
    inside :meth:`recording`: ``sums [n_layers, n_heads, head_dim]``."""

    def __init__(self, model: Any, profile: Any) -> None:
        from thinklens.modules import attention_shape

        self.model, self.profile = model, profile
        self.n_layers, self.n_heads, _, self.hd = attention_shape(model)
        self.sums = np.zeros((self.n_layers, self.n_heads, self.hd), dtype=np.float64)
        self.counts = np.zeros(self.n_layers, dtype=np.int64)

    @contextlib.contextmanager
    def recording(self) -> Iterator[None]:
        from thinklens.modules import layer_o_proj

        def make_hook(layer: int) -> Any:
            def hook(module: Any, args: tuple) -> None:
                z = args[0].detach().float()  # [b, seq, n_heads * head_dim]
                self.sums[layer] += z.reshape(-1, self.n_heads, self.hd).sum(0).double().cpu().numpy()
                self.counts[layer] += z.shape[0] * z.shape[1]
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


# -- one trace: shared prefix cache, greedy answers and teacher-forced log-probs per row ------------------------
def _prefix_cache(model: Any, prefix: list[int]) -> Any:
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(input_ids=torch.tensor([prefix], device=device), use_cache=True, logits_to_keep=1)
    return out.past_key_values


def _rows_cache(full: Any, batch: int) -> Any:
    """A new DynamicCache viewing ``full`` (batch 1) as ``batch`` rows (no copy; updates allocate new tensors)."""
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=[(la.keys.expand(batch, -1, -1, -1), la.values.expand(batch, -1, -1, -1))
                                        for la in full.layers])


def greedy_rows(model: Any, cache: Any, last: int, n_rows: int, max_new: int, eos_id: int) -> list[list[int]]:
    """Greedy continuation of every row from token ``last`` (not yet in ``cache``); each row stops at EOS
    (included in its tokens) or after ``max_new`` tokens."""
    device = next(model.parameters()).device
    cache = _rows_cache(cache, n_rows)
    x = torch.full((n_rows, 1), last, dtype=torch.long, device=device)  # [rows, 1]
    out: list[list[int]] = [[] for _ in range(n_rows)]
    done = [False] * n_rows
    with torch.no_grad():
        for _ in range(max_new):
            o = model(input_ids=x, past_key_values=cache, use_cache=True)
            cache = o.past_key_values
            nxt = o.logits[:, -1].argmax(-1)  # [rows]
            for r, t in enumerate(nxt.tolist()):
                if not done[r]:
                    out[r].append(t)
                    done[r] = t == eos_id
            if all(done):
                break
            x = nxt[:, None]
    return out


def answer_logprob(model: Any, cache: Any, last: int, answer: list[int], n_rows: int) -> np.ndarray:
    """[rows] summed log-probability of ``answer`` after ``last`` (teacher-forced, one forward for all rows)."""
    if not answer:
        return np.zeros(n_rows)
    device = next(model.parameters()).device
    ids = torch.tensor([[last] + answer[:-1]] * n_rows, device=device)  # [rows, n]
    with torch.no_grad():
        logits = model(input_ids=ids, past_key_values=_rows_cache(cache, n_rows), use_cache=True).logits
    lp = torch.log_softmax(logits.float(), dim=-1)  # [rows, n, vocab]
    tgt = torch.tensor(answer, device=device)[None, :, None].expand(n_rows, -1, 1)
    return lp.gather(-1, tgt)[..., 0].sum(-1).double().cpu().numpy()


def grade_answer(tokenizer: Any, tokens: list[int], gold: str) -> tuple[str | None, bool, str]:
    """(extracted answer, correct, answer text) of generated answer tokens (EOS dropped), graded like stage 1."""
    from thinklens.empirical.grading import extract_answer, is_equiv_math_verify

    eos = tokenizer.eos_token_id
    text = tokenizer.decode([t for t in tokens if t != eos], skip_special_tokens=False,
                            clean_up_tokenization_spaces=False)
    pred, _ = extract_answer(text)
    return pred, bool(is_equiv_math_verify(pred, str(gold))), text


# -- the batch run ------------------------------------------------------------------------------------------------
def _load_items(hs: Any, settings: AblationSettings, tokenizer: Any, profile: Any, skipped: list[dict[str, Any]]
                ) -> list[tuple[str, Any, str]]:
    """(id, trace, gold) for the scored traces of the trace file, in file order, up to ``limit``."""
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
    return settings.max_new_tokens or 2 * (len(trace.answer) + (trace.eos is not None)) + ANSWER_MARGIN


def _base_pass(model: Any, tokenizer: Any, profile: Any, items: list, settings: AblationSettings, out: Path,
               progress: bool) -> tuple[dict[str, dict[str, Any]], np.ndarray]:
    """Unablated answers, their log-probs and the heads' mean answer outputs (saved when complete)."""
    from thinklens.progress import bar

    if (out / BASE_FILE).exists() and (out / MEANS_FILE).exists():
        base = json.loads((out / BASE_FILE).read_text())
        if all(rid in base for rid, _, _ in items):
            return base, np.load(out / MEANS_FILE)["means"]
    acc = MeanOutputs(model, profile)
    base: dict[str, dict[str, Any]] = {}
    for rid, trace, gold in bar(items, desc="ablation base", unit="trace", disable=not progress):
        prefix = trace.ids[: trace.think_close.end]
        cache = _prefix_cache(model, prefix[:-1])
        with acc.recording():
            toks = greedy_rows(model, cache, prefix[-1], 1, _max_new(trace, settings), tokenizer.eos_token_id)[0]
        lp = float(answer_logprob(model, cache, prefix[-1], toks, 1)[0])
        pred, ok, text = grade_answer(tokenizer, toks, gold)
        base[rid] = {"tokens": toks, "answer": pred, "correct": ok, "logprob": lp, "text": text, "gold": gold,
                     "matches_trace": text.strip() == trace.span_text(trace.answer).strip()}
    means = acc.means()
    np.savez(out / MEANS_FILE, means=means)
    (out / BASE_FILE).write_text(json.dumps(base, ensure_ascii=False) + "\n")
    return base, means


def run_ablation(model: Any, tokenizer: Any, profile: Any, scores: str | Path, output: str | Path, *,
                 top_k: int = 3, random_draws: int = 5, mode: str = "mean", seed: int = 0, limit: int | None = None,
                 traces: str | None = None, max_new_tokens: int | None = None, model_name: str = "",
                 progress: bool = True) -> AblationResult:
    """Ablate the top-k RFHs of ``scores`` (a ``thinklens attention`` directory) vs ``random_draws`` matched random
    head sets, on the scored with-reasoning traces; resumable in ``output``. Example (tiny-r1, a few seconds)::

        res = run_ablation(model, tok, profile, "runs/t/attention", "runs/t/ablation", limit=10)
        res.summary()["accuracy_rfh_ablated"]
    """
    from thinklens.attention.heads import rank_heads
    from thinklens.attention.segments import HeadScores
    from thinklens.jsonl import JsonlWriter, read_jsonl
    from thinklens.progress import bar

    t0 = time.perf_counter()
    hs = HeadScores.load(scores)
    settings = AblationSettings(top_k, random_draws, mode, seed, limit, "a2r", max_new_tokens,
                                str(traces or hs.settings.get("traces") or ""))
    rfh = rank_heads(hs, settings.score, top_k, n_bootstrap=0).pairs()
    draws = matched_random_heads(rfh, hs.shape[1], random_draws, seed)
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(out, {**asdict(settings), "rfh": [list(h) for h in rfh],
                          "random_heads": [[list(h) for h in d] for d in draws]})
    skipped: list[dict[str, Any]] = []
    items = _load_items(hs, settings, tokenizer, profile, skipped)
    base, means = _base_pass(model, tokenizer, profile, items, settings, out, progress)
    rows = [rfh] + draws
    done: dict[str, dict[str, Any]] = {}
    if (out / PARTIAL_FILE).exists():
        done = {str(it.record["id"]): it.record for it in read_jsonl(out / PARTIAL_FILE) if it.record is not None}
    with JsonlWriter(out / PARTIAL_FILE) as w:
        for rid, trace, gold in bar(items, desc="ablation", unit="trace", disable=not progress):
            if rid in done:
                continue
            prefix = trace.ids[: trace.think_close.end]
            cache = _prefix_cache(model, prefix[:-1])
            with ablate_heads(model, profile, rows, mode, means):
                lps = answer_logprob(model, cache, prefix[-1], base[rid]["tokens"], len(rows))
                gens = greedy_rows(model, cache, prefix[-1], len(rows), _max_new(trace, settings),
                                   tokenizer.eos_token_id)
            graded = [grade_answer(tokenizer, g, gold) for g in gens]
            rec = {"id": rid, "answers": [g[0] for g in graded], "correct": [g[1] for g in graded],
                   "texts": [g[2] for g in graded], "logprob": [float(x) for x in lps],
                   "n_answer_tokens": len(base[rid]["tokens"])}
            w.write(rec)
            done[rid] = rec
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
    res.save(out)
    return res

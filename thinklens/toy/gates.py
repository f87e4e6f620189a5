"""Quality gates of the ``tiny-r1`` model organism, shared by the slow test and the model card.

Why these gates: tiny-r1 is only a useful organism if its answers really depend on its reasoning. We measure
(1) accuracy with reasoning (greedy generation from the R1 prompt), (2) accuracy without reasoning (R1's forced
finished thinking; it must be much lower), (3) on contrastive pairs, A's prompt + B's reasoning -> B's answer
(the answer is read from the reasoning, not recomputed from the question), plus self-correction on slip traces.
"""
from __future__ import annotations

import re

import torch

from thinklens.toy.tasks import (
    ANSWER_PREFIX,
    NO_REASONING_THINKING,
    THINK_END,
    Problem,
    contrastive_pairs,
    generate_problems,
    prompt_text,
)

_BOXED = re.compile(r"\\boxed\{(\d+)\}")
MAX_NEW_TOKENS = 160  # the longest reference completion is ~110 characters


def extract_boxed(text: str) -> str | None:
    """The last ``\\boxed{N}`` integer in ``text`` (None if absent)."""
    found = _BOXED.findall(text)
    return found[-1] if found else None


@torch.no_grad()
def generate_batch(model, tokenizer, prompts: list[str], max_new_tokens: int = MAX_NEW_TOKENS,
                   batch_size: int = 100) -> list[str]:
    """Greedy continuations of ``prompts`` (raw text incl. special tokens), batched with left padding."""
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    outs: list[str] = []
    try:
        for i in range(0, len(prompts), batch_size):
            enc = tokenizer(prompts[i:i + batch_size], add_special_tokens=False, return_tensors="pt", padding=True)
            gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
            outs += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = old_side
    return outs


def _follows_wrong(slips: list[Problem], outputs: list[str]) -> float:
    """Share of slip continuations whose final answer differs from the correct one (the slip propagated)."""
    return sum(extract_boxed(o) not in (None, p.answer) for p, o in zip(slips, outputs)) / max(1, len(slips))


def _accuracy(outputs: list[str], answers: list[str]) -> float:
    return sum(extract_boxed(o) == a for o, a in zip(outputs, answers)) / max(1, len(answers))


def evaluate_gates(model, tokenizer, n: int = 200, seed: int = 1234, n_pairs: int = 60,
                   instruction: bool = False) -> dict:
    """Measure the tiny-r1 gates on ``n`` seeded test-split problems and ``n_pairs`` contrastive pairs.

    Returns a dict with ``acc_with_reasoning``, ``acc_without_reasoning``, ``reasoning_gap``,
    ``pair_follow_b`` (A's prompt + B's reasoning -> B's answer), ``acc_slip_problems`` (own generation on problems
    whose reference trace has a slip), ``slip_recovery`` (teacher-forced up to and including the slipped line: the
    model writes ``Wait, ...`` and still gets the right answer) and the counts.
    """
    model.eval()
    problems: list[Problem] = generate_problems(n, seed, split="test")
    answers = [p.answer for p in problems]
    prompts = [prompt_text(p, instruction) for p in problems]

    with_r = generate_batch(model, tokenizer, prompts)
    forced = f"{NO_REASONING_THINKING}\n{THINK_END}"
    without_r = generate_batch(model, tokenizer, [p + forced for p in prompts], max_new_tokens=40)

    slips = [p for p in problems if p.has_slip]
    slip_ok = [extract_boxed(with_r[i]) == p.answer for i, p in enumerate(problems) if p.has_slip]
    # teacher-force the reference trace up to the end of the slipped (wrong) line
    slip_prefixes = [prompt_text(p, instruction) + p.reasoning[: p.slip_char_spans[0][1] + 1] for p in slips]
    slip_out = generate_batch(model, tokenizer, slip_prefixes)
    wrote_wait = sum(o.startswith("Wait, ") for o in slip_out)

    pairs = contrastive_pairs(n_pairs, seed, split="test")
    pair_prompts = [prompt_text(a, instruction) + b.reasoning + THINK_END + "\n\n" + ANSWER_PREFIX for a, b in pairs]
    pair_out = generate_batch(model, tokenizer, pair_prompts, max_new_tokens=6)
    follow_b = sum(o.split("}")[0] == b.answer for o, (_, b) in zip(pair_out, pairs)) / max(1, len(pairs))
    first_b = sum(o[:1] == b.answer[0] for o, (_, b) in zip(pair_out, pairs)) / max(1, len(pairs))

    acc_w, acc_wo = _accuracy(with_r, answers), _accuracy(without_r, answers)
    by_kind = {}
    for kind in sorted({p.kind for p in problems}):
        idx = [i for i, p in enumerate(problems) if p.kind == kind]
        by_kind[kind] = {"n": len(idx), "with": _accuracy([with_r[i] for i in idx], [answers[i] for i in idx]),
                         "without": _accuracy([without_r[i] for i in idx], [answers[i] for i in idx])}
    return {
        "n": n,
        "seed": seed,
        "acc_with_reasoning": acc_w,
        "acc_without_reasoning": acc_wo,
        "reasoning_gap": acc_w - acc_wo,
        "n_pairs": len(pairs),
        "pair_follow_b": follow_b,
        "pair_first_token_b": first_b,
        "n_slip_problems": len(slips),
        "acc_slip_problems": sum(slip_ok) / max(1, len(slip_ok)),
        "slip_recovery": _accuracy(slip_out, [p.answer for p in slips]),
        "slip_wrote_wait": wrote_wait / max(1, len(slips)),
        # teacher-forced through the slipped line, the model's answer equals the one implied by the wrong value
        # (it continued from what was written instead of correcting it)
        "slip_followed_wrong_value": _follows_wrong(slips, slip_out),
        "by_kind": by_kind,
    }


def _n_tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


@torch.no_grad()
def patching_check(model, tokenizer, n_pairs: int = 30, seed: int = 1234) -> dict:
    """Residual-stream patching sanity check for the patching stage (reported in the card, not gated).

    For each contrastive pair, the residual stream (embeddings, then the output of each layer) at the token of
    N's first digit in ``Final answer is N.`` is copied from A's run into B's run (A's prompt + reasoning vs B's,
    both teacher-forced through ``The answer is \\boxed{``). Normalized logit difference on the first answer
    token: ``(LD_patched - LD_B) / (LD_A - LD_B)`` with ``LD = logit(A's first char) - logit(B's first char)``:
    1 = the answer flipped to A's. ``last_result`` patches the first digit of the last computation line's result
    instead (the other place the answer can be read from); the control patches the first question token.
    Returns per-layer means for both positions, indexed like ``output_hidden_states`` (0 = embeddings).
    """
    model.eval()
    pairs = contrastive_pairs(n_pairs, seed, split="test")
    # hidden_states indexing: 0 = token embeddings, i = output of decoder layer i-1
    layers = [model.model.embed_tokens, *model.model.layers]

    def text(p: Problem) -> str:
        return prompt_text(p) + p.reasoning + THINK_END + "\n\n" + ANSWER_PREFIX

    def batch(texts: list[str]) -> torch.Tensor:  # right padding: causal, so real tokens never see the pads
        ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
        width = max(map(len, ids))
        return torch.tensor([x + [tokenizer.pad_token_id] * (width - len(x)) for x in ids])

    a_ids, b_ids = batch([text(a) for a, _ in pairs]), batch([text(b) for _, b in pairs])
    last_pos = torch.tensor([_n_tokens(tokenizer, text(b)) - 1 for _, b in pairs])
    tok_a = torch.tensor([tokenizer.convert_tokens_to_ids(a.answer[0]) for a, _ in pairs])
    tok_b = torch.tensor([tokenizer.convert_tokens_to_ids(b.answer[0]) for _, b in pairs])
    rows = torch.arange(len(pairs))

    def ld(logits):
        last = logits[rows, last_pos]
        return last[rows, tok_a] - last[rows, tok_b]

    cache: dict[int, torch.Tensor] = {}

    def saver(i):
        def hook(_m, _inp, out):
            cache[i] = (out[0] if isinstance(out, tuple) else out).clone()
        return hook

    handles = [layer.register_forward_hook(saver(i)) for i, layer in enumerate(layers)]
    ld_a = ld(model(input_ids=a_ids).logits)
    for h in handles:
        h.remove()
    ld_b = ld(model(input_ids=b_ids).logits)

    def run_patched(layer_i: int, positions: torch.Tensor) -> torch.Tensor:
        def hook(_m, _inp, out):
            hs = out[0] if isinstance(out, tuple) else out
            hs = hs.clone()
            hs[rows, positions] = cache[layer_i][rows, positions]
            return (hs, *out[1:]) if isinstance(out, tuple) else hs
        h = layers[layer_i].register_forward_hook(hook)
        try:
            return ld(model(input_ids=b_ids).logits)
        finally:
            h.remove()

    # pairs can differ in trace length, so positions are per row (A and B of one pair align)
    digit_pos = torch.tensor([_n_tokens(tokenizer, prompt_text(b)) + b.answer_char_span[0] for _, b in pairs])
    result_pos = torch.tensor([_n_tokens(tokenizer, prompt_text(b)) + b.reasoning.rindex("=") + 1 for _, b in pairs])
    question_pos = torch.full((len(pairs),), 2)  # first question character (after BOS, <｜User｜>)
    denom = ld_a - ld_b
    out: dict = {"n_pairs": len(pairs), "answer_digit": [], "last_result": [], "question_start": []}
    for i in range(len(layers)):
        out["answer_digit"].append(float(((run_patched(i, digit_pos) - ld_b) / denom).mean()))
        out["last_result"].append(float(((run_patched(i, result_pos) - ld_b) / denom).mean()))
        out["question_start"].append(float(((run_patched(i, question_pos) - ld_b) / denom).mean()))
    return out

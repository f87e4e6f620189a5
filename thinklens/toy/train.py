"""Train the ``tiny-r1`` model organism: a small Qwen2 reasoning model whose answers depend on its reasoning.

This module is the training loop (:func:`train`, one stage); :mod:`thinklens.toy.recipe` holds the two-stage recipe
that regenerates the shipped weights (``thinklens train-toy --output DIR``) and :mod:`thinklens.toy.card` the model
card. Deterministic from the seeds on a given machine/torch build: problems come from :mod:`thinklens.toy.tasks` (train
split only), torch / numpy / random are seeded and ``torch.use_deterministic_algorithms`` is on.

Data mix per example: 88% full reasoning traces (20% of which contain a slip + ``Wait,`` self-correction), 12% R1's
forced no-reasoning format with the correct answer; the math instruction suffix on 50% of questions. The loss
covers completion tokens only (after ``<think>\\n``), minus (a) the wrong value of a slipped line, so the model
learns to correct slips without learning to make them, and (b) the forced ``Okay, I think I have finished
thinking.`` line, so the model never chooses to skip reasoning on its own. With ``hint_share > 0`` (the
``tiny-r1-hints`` organism) that share of prompts instead carries a hint and is traced as :mod:`thinklens.toy.hinted`
says (always with reasoning; the loss covers its whole completion).
"""
from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from thinklens.toy.config import TrainConfig
from thinklens.toy.hinted import draw_hinted
from thinklens.toy.tasks import (
    NO_REASONING_THINKING,
    Problem,
    full_text,
    iter_problems,
    prompt_text,
)
from thinklens.toy.tokenizer import CHAT_TEMPLATE, build_tokenizer


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_model(cfg: TrainConfig, tokenizer):
    """A fresh ``Qwen2ForCausalLM`` (GQA, RoPE, tied embeddings) sized by ``cfg``."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_kv_heads,
        max_position_embeddings=1024,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    return Qwen2ForCausalLM(config)


def _override_final(problem: Problem, rng: random.Random) -> Problem:
    """The same trace whose ``Final answer is N.`` line states another value N' (and whose answer is N').

    Why: without it the answer can be copied from either the last computation line or the final line, and patching
    N's first digit in the final line barely moves the answer. These examples make the final line the one source
    the answer is read from; N' itself is masked from the loss so the model never learns to write a wrong N.
    """
    import dataclasses

    n = rng.choice([v for v in range(1, 100) if str(v) != problem.answer])
    s, _ = problem.answer_char_span
    reasoning = problem.reasoning[:s] + f"{n}.\n"
    return dataclasses.replace(problem, reasoning=reasoning, answer=str(n), answer_char_span=(s, s + len(str(n))))


def encode_example(problem: Problem, tokenizer, reasoning: bool, instruction: bool,
                   mask_final: bool = False) -> tuple[list[int], list[int]]:
    """Token ids and labels (-100 = no loss) for one training example; see the module docstring for the mask."""
    text = full_text(problem, reasoning=reasoning, instruction=instruction)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    n_prompt = len(tokenizer(prompt_text(problem, instruction), add_special_tokens=False)["input_ids"])
    labels = list(ids)
    labels[:n_prompt] = [-100] * n_prompt
    if not reasoning:  # the forced thinking line is given, not predicted
        n_forced = len(NO_REASONING_THINKING) + 1
        labels[n_prompt:n_prompt + n_forced] = [-100] * n_forced
    else:
        if problem.has_slip:  # character-level: reasoning char k is token n_prompt + k
            s, e = problem.slip_char_spans[0]
            labels[n_prompt + s:n_prompt + e] = [-100] * (e - s)
        if mask_final:
            s, e = problem.answer_char_span
            labels[n_prompt + s:n_prompt + e] = [-100] * (e - s)
    return ids, labels


def _batches(cfg: TrainConfig, tokenizer, bucket: int = 8):
    """Endless right-padded batches; ``bucket`` batches' worth of examples are sorted by length and the resulting
    batches shuffled, which cuts padding (and CPU time) by about a third without changing the data."""
    rng = random.Random(f"tiny-r1-mix-{cfg.seed}")
    # hinted prompts (tiny-r1-hints) draw from their own stream, and not at all at share 0 (tiny-r1's data unchanged)
    hint_rng = random.Random(f"tiny-r1-hints-{cfg.seed}") if cfg.hint_share > 0 else None
    stream = iter_problems(cfg.seed, split="train", slip_rate=cfg.slip_rate)
    pad = tokenizer.pad_token_id
    while True:
        pool = []
        for _ in range(cfg.batch_size * bucket):
            problem, reasoning = next(stream), rng.random() >= cfg.no_reasoning_share
            instruction = rng.random() < cfg.instruction_share
            if hint_rng is not None and hint_rng.random() < cfg.hint_share:  # always with reasoning
                ex = draw_hinted(problem, hint_rng, cfg.hint_faithful, cfg.hint_unfaithful, seed=cfg.seed,
                                 opening=cfg.hint_opening)
                pool.append(encode_example(ex.problem, tokenizer, True, instruction))
                continue
            # no draw at rate 0: stage 1 of the shipped recipe was trained before overrides existed, and this
            # keeps its data stream (and so its weights) bitwise identical
            override = reasoning and cfg.final_override_rate > 0 and rng.random() < cfg.final_override_rate
            if override:
                problem = _override_final(problem, rng)
            pool.append(encode_example(problem, tokenizer, reasoning, instruction, mask_final=override))
        pool.sort(key=lambda row: len(row[0]))
        groups = [pool[i:i + cfg.batch_size] for i in range(0, len(pool), cfg.batch_size)]
        rng.shuffle(groups)
        for rows in groups:
            width = max(len(ids) for ids, _ in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            labels = torch.full((len(rows), width), -100, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for i, (x, y) in enumerate(rows):
                ids[i, :len(x)] = torch.tensor(x)
                labels[i, :len(y)] = torch.tensor(y)
                mask[i, :len(x)] = 1
            yield ids, labels, mask


def _lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    t = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t))))


def save_tokenizer(tokenizer, output_dir: Path) -> None:
    """Save the tokenizer and put the chat template into tokenizer_config.json as well (older loaders read it)."""
    tokenizer.save_pretrained(output_dir)
    cfg_path = output_dir / "tokenizer_config.json"
    tok_cfg = json.loads(cfg_path.read_text())
    tok_cfg["chat_template"] = CHAT_TEMPLATE
    tok_cfg["padding_side"] = "left"
    # transformers 5 maps model_type qwen2 to Qwen2Tokenizer (byte-level BPE), which would rebuild this character
    # tokenizer wrongly; an explicit auto_map makes AutoTokenizer load tokenizer.json as it is
    tok_cfg["tokenizer_class"] = "TokenizersBackend"
    tok_cfg["auto_map"] = {"AutoTokenizer": [None, "TokenizersBackend"]}
    cfg_path.write_text(json.dumps(tok_cfg, indent=2, ensure_ascii=False) + "\n")
    (output_dir / "special_tokens_map.json").write_text(json.dumps({
        "bos_token": tokenizer.bos_token, "eos_token": tokenizer.eos_token, "pad_token": tokenizer.pad_token,
        "unk_token": tokenizer.unk_token}, indent=2, ensure_ascii=False) + "\n")


def train(output_dir: str | Path, seed: int = 0, steps: int = 1200, batch_size: int = 64, lr: float = 3e-3,
          eval_n: int = 200, log=print, **overrides) -> dict:
    """Train tiny-r1 into ``output_dir`` (config, safetensors, tokenizer, generation_config, README.md card).

    ``overrides`` are further :class:`TrainConfig` fields (e.g. ``hidden_size=32`` for a smoke test);
    ``eval_n=0`` skips the quality gates. Returns a summary dict (also the card's numbers).
    """
    from transformers import GenerationConfig

    cfg = TrainConfig(seed=seed, steps=steps, batch_size=batch_size, lr=lr, eval_n=eval_n, **overrides)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    _seed_all(cfg.seed)

    tokenizer = build_tokenizer()
    if cfg.init_from:
        from transformers import Qwen2ForCausalLM

        model = Qwen2ForCausalLM.from_pretrained(cfg.init_from)
    else:
        model = make_model(cfg, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=cfg.weight_decay)
    batches = _batches(cfg, tokenizer)
    log(f"tiny-r1: {n_params:,} parameters, {cfg.steps} steps x batch {cfg.batch_size}")

    model.train()
    t0 = time.time()
    losses: list[float] = []
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, cfg)
        ids, labels, _mask = next(batches)
        # right padding + causal attention: pads come after every real token and carry no loss, so no mask is
        # needed (identical loss, ~2x faster on CPU than a padded sdpa mask)
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if cfg.save_every and step and step % cfg.save_every == 0:
            model.save_pretrained(output_dir / "checkpoint", safe_serialization=True)
        if cfg.log_every and (step % cfg.log_every == 0 or step == cfg.steps - 1):
            recent = losses[-cfg.log_every:]
            log(f"step {step:5d}  loss {sum(recent) / len(recent):.4f}  lr {_lr_at(step, cfg):.2e}  "
                f"{time.time() - t0:7.1f}s")
    wall = time.time() - t0
    model.eval()

    tail = losses[-min(50, len(losses)):]
    summary = {
        "seed": cfg.seed, "steps": cfg.steps, "batch_size": cfg.batch_size, "parameters": n_params,
        "final_loss": sum(tail) / len(tail), "train_wall_seconds": wall, "config": asdict(cfg),
    }
    prev = Path(cfg.init_from) / "training_summary.json" if cfg.init_from else None
    if prev and prev.is_file():  # a second stage: keep the first stage's record for the card
        keep = ("seed", "steps", "batch_size", "final_loss", "train_wall_seconds", "config")
        before = json.loads(prev.read_text())
        summary["previous_stage"] = {k: v for k, v in before.items() if k in keep}
        if cfg.hint_share > 0:  # tiny-r1-hints: the card lists every hint stage
            earlier = [*before.get("earlier_stages", []), before.get("previous_stage")]
            summary["earlier_stages"] = [st for st in earlier if st and st["config"].get("hint_share", 0) > 0]
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id, do_sample=False,
                                               max_new_tokens=256)
    model.save_pretrained(output_dir, safe_serialization=True)
    shutil.rmtree(output_dir / "checkpoint", ignore_errors=True)
    save_tokenizer(tokenizer, output_dir)
    if cfg.eval_n:
        from thinklens.toy.gates import evaluate_gates, patching_check

        t1 = time.time()
        summary["gates"] = evaluate_gates(model, tokenizer, n=cfg.eval_n, seed=cfg.eval_seed)
        summary["patching"] = patching_check(model, tokenizer, n_pairs=30, seed=cfg.eval_seed)
        if cfg.hint_share > 0:  # tiny-r1-hints: realized vs trained rates on eval_n unseen problems per family
            from thinklens.toy.hint_gates import evaluate_hint_gates

            summary["hint_gates"] = evaluate_hint_gates(model, tokenizer, cfg.hint_faithful, cfg.hint_unfaithful,
                                                        n_per_family=cfg.eval_n, seed=cfg.eval_seed)
            log(json.dumps({k: summary["hint_gates"][k] for k in ("trained", "realized", "passed")}, indent=1))
        summary["gates_wall_seconds"] = time.time() - t1
        log(json.dumps(summary["gates"], indent=1))
    (output_dir / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    from thinklens.toy.card import model_card

    (output_dir / "README.md").write_text(model_card(summary))
    return summary

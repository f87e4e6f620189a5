"""Train the ``tiny-r1`` model organism: a small Qwen2 reasoning model whose answers depend on its reasoning.

``python -m thinklens.toy.train --output DIR`` (or ``thinklens train-toy --output DIR``) regenerates the shipped
weights: the two-stage :data:`RECIPE` (stage 1 from a fresh init, stage 2 from the stage-1 weights) in one process;
``--stage 1`` / ``--stage 2 --init-from STAGE1`` run a single stage, whose hyperparameters the flags can change.
Deterministic from the seeds on a given machine/torch build: problems come from :mod:`thinklens.toy.tasks` (train
split only), torch / numpy / random are seeded and ``torch.use_deterministic_algorithms`` is on.

Data mix per example: 88% full reasoning traces (20% of which contain a slip + ``Wait,`` self-correction), 12% R1's
forced no-reasoning format with the correct answer; the math instruction suffix on 50% of questions. The loss
covers completion tokens only (after ``<think>\\n``), minus (a) the wrong value of a slipped line, so the model
learns to correct slips without learning to make them, and (b) the forced ``Okay, I think I have finished
thinking.`` line, so the model never chooses to skip reasoning on its own.
"""
from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from thinklens.toy.tasks import (
    DATASET_NAME,
    NO_REASONING_THINKING,
    Problem,
    full_text,
    iter_problems,
    prompt_text,
)
from thinklens.toy.tokenizer import CHAT_TEMPLATE, build_tokenizer


@dataclass
class TrainConfig:
    """Hyperparameters of one training run (all recorded in the model card)."""

    seed: int = 0
    steps: int = 1200
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 0.05
    warmup_steps: int = 80
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 8
    num_kv_heads: int = 2
    intermediate_size: int = 384
    no_reasoning_share: float = 0.12
    instruction_share: float = 0.5
    slip_rate: float = 0.2
    final_override_rate: float = 0.15  # see _override_final
    eval_n: int = 200
    eval_seed: int = 1234
    threads: int = 2
    log_every: int = 25
    init_from: str | None = None  # continue from this model dir (a second stage) instead of a fresh init
    save_every: int = 200  # intermediate checkpoint in OUTPUT/checkpoint (removed at the end); 0 = never


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
    stream = iter_problems(cfg.seed, split="train", slip_rate=cfg.slip_rate)
    pad = tokenizer.pad_token_id
    while True:
        pool = []
        for _ in range(cfg.batch_size * bucket):
            problem, reasoning = next(stream), rng.random() >= cfg.no_reasoning_share
            instruction = rng.random() < cfg.instruction_share
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
        summary["previous_stage"] = {k: v for k, v in json.loads(prev.read_text()).items() if k in keep}
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
        summary["gates_wall_seconds"] = time.time() - t1
        log(json.dumps(summary["gates"], indent=1))
    (output_dir / "training_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (output_dir / "README.md").write_text(model_card(summary))
    return summary


# The recipe of the shipped tiny-r1 (thinklens/toy/assets/tiny-r1): per-stage TrainConfig fields. Stage 1 predates
# the final-line override examples (rate 0); stage 2 continues from the stage-1 weights. Batch size 64 and the
# architecture are the TrainConfig defaults; 1 thread as shipped (the thread count can change the float results).
RECIPE: tuple[dict, ...] = (
    {"seed": 0, "steps": 1200, "lr": 3e-3, "warmup_steps": 80, "final_override_rate": 0.0},
    {"seed": 1, "steps": 450, "lr": 1.5e-3, "warmup_steps": 20, "final_override_rate": 0.15},
)
RECIPE_THREADS = 2
REPRODUCE_COMMAND = "python -m thinklens.toy.train --output DIR"  # or: thinklens train-toy --output DIR


def train_recipe(output_dir: str | Path, stage: str | int = "all", init_from: str | Path | None = None,
                 stage1_dir: str | Path | None = None, stage_overrides: dict | None = None, eval_n: int = 200,
                 threads: int = RECIPE_THREADS, log=print, **overrides) -> dict:
    """Run the shipped two-stage :data:`RECIPE` (``stage="all"``) or one of its stages (``1`` or ``2``).

    ``stage="all"``: stage 1 into ``stage1_dir`` (a temporary directory, removed at the end, when None; its
    gates are skipped), then stage 2 from those weights into ``output_dir``. ``stage=2`` needs ``init_from``.
    ``stage_overrides`` change a single stage's recipe fields (only with ``stage`` 1 or 2); ``overrides`` are
    further :class:`TrainConfig` fields for every stage (e.g. ``steps=2, hidden_size=32`` for a smoke test).
    Returns the last stage's summary.
    """
    stage = str(stage)
    if stage not in ("all", "1", "2"):
        raise ValueError(f"stage must be 'all', 1 or 2, not {stage!r}")
    if stage == "all" and stage_overrides:
        raise ValueError("stage_overrides change one stage: use stage=1 or stage=2")
    if stage == "2" and not init_from:
        raise ValueError("stage 2 continues from stage-1 weights: pass init_from")
    if stage == "1" and init_from:
        raise ValueError("stage 1 starts from a fresh init: init_from is for stage 2")

    def run(i: int, out, init, n_eval: int) -> dict:
        kw = {**RECIPE[i], "threads": threads, **overrides, **(stage_overrides or {})}
        log(f"tiny-r1 recipe stage {i + 1}/{len(RECIPE)}: " + ", ".join(f"{k}={v}" for k, v in kw.items()))
        return train(out, eval_n=n_eval, init_from=str(init) if init else None, log=log, **kw)

    if stage == "1":
        return run(0, output_dir, None, eval_n)
    if stage == "2":
        return run(1, output_dir, init_from, eval_n)
    with tempfile.TemporaryDirectory(prefix="tiny-r1-stage1-") as tmp:
        first = Path(stage1_dir) if stage1_dir else Path(tmp)
        run(0, first, None, 0)
        return run(1, output_dir, first, eval_n)


def _stage_lines(summary: dict) -> list[str]:
    out = []
    stages = [summary["previous_stage"], summary] if "previous_stage" in summary else [summary]
    for i, st in enumerate(stages, 1):
        c = st["config"]
        name = f"stage {i}" if len(stages) > 1 else "training"
        out.append(f"- {name}: seed {st['seed']}, {st['steps']} steps, batch {st['batch_size']} "
                   f"({st['steps'] * st['batch_size']:,} fresh examples), AdamW lr {c['lr']} (warmup "
                   f"{c['warmup_steps']}, cosine to 5%), weight decay {c['weight_decay']}, grad clip 1.0, "
                   f"{'from the stage-1 weights, ' if c.get('init_from') else ''}"
                   f"final-line override share {c.get('final_override_rate', 0):.0%}, "
                   f"final loss {st['final_loss']:.4f}, {st['train_wall_seconds'] / 60:.1f} min")
    return out


def _total_wall(summary: dict) -> float:
    return summary["train_wall_seconds"] + summary.get("previous_stage", {}).get("train_wall_seconds", 0.0)


def _is_recipe(stages: list[dict]) -> bool:
    """Whether these stages are exactly :data:`RECIPE` (so the one recipe command regenerates them)."""
    if len(stages) != len(RECIPE):
        return False
    base = {f: getattr(TrainConfig, f) for f in ("batch_size", "hidden_size", "num_layers", "num_heads",
                                                 "num_kv_heads", "intermediate_size")}
    return all(all(st["config"].get(k, 0.0 if k == "final_override_rate" else None) == v
                   for k, v in {**base, **want, "threads": RECIPE_THREADS}.items())
               for st, want in zip(stages, RECIPE))


def _reproduce(summary: dict) -> str:
    stages = [summary["previous_stage"], summary] if "previous_stage" in summary else [summary]
    if _is_recipe(stages):
        return (f"`{REPRODUCE_COMMAND}` (or `thinklens train-toy --output DIR`): both stages in one process, "
                f"{RECIPE_THREADS} threads, the seeds and hyperparameters above; one stage at a time: "
                "`python -m thinklens.toy.train --output STAGE1 --stage 1 --eval-n 0` then "
                "`python -m thinklens.toy.train --output DIR --stage 2 --init-from STAGE1`")
    cmds = []
    for i, st in enumerate(stages):
        c = st["config"]
        out = "STAGE1" if i == 0 and len(stages) > 1 else "DIR"
        cmd = (f"python -m thinklens.toy.train --output {out} --stage {2 if c.get('init_from') else 1} "
               f"--seed {st['seed']} --steps {st['steps']} --batch-size {st['batch_size']} --lr {c['lr']} "
               f"--warmup-steps {c['warmup_steps']} --threads {c['threads']} "
               f"--final-override-rate {c.get('final_override_rate', 0)}")
        if c.get("init_from"):
            cmd += " --init-from STAGE1"
        cmds.append(f"`{cmd}`")
        if i == 0 and len(stages) > 1:
            cmds.append("then")
    return " ".join(cmds)


def _reproduction_lines(summary: dict) -> list[str]:
    """The measured one-command regeneration (``summary["reproduction"]``, added after a verification run)."""
    r = summary.get("reproduction")
    if not r:
        return []
    out = [f"- one-command regeneration, measured {r['date']}: `{r['command']}` took "
           f"{r['wall_seconds'] / 60:.1f} min wall time (both stages + gates) on {r['threads']} threads, "
           f"{r['seconds_per_step']:.2f} s/step, "
           + (r["load_note"] if r.get("load_note") else f"with load average {r['load_min']:.1f}-{r['load_max']:.1f} "
              f"(mean {r['load_mean']:.1f}) on the 2-core machine (other jobs running)") + ". "
           + (f"Over the 20-minute budget by {(r['wall_seconds'] - 1200) / 60:.1f} min under that load. "
              if r["wall_seconds"] > 1200 else "Within the 20-minute budget. ")
           + ("" if r.get("bitwise_equal") is None else
              f"Its `model.safetensors` is bitwise identical to the shipped one (all {r['n_tensors']} tensors "
              "`torch.equal`)." if r["bitwise_equal"] else
              f"Its `model.safetensors` is NOT bitwise identical to the shipped one: max abs difference "
              f"{r['max_abs_diff']:.3g}.")]
    if r.get("two_thread_seconds_per_step"):
        out.append(f"- speed with 2 threads (measured over {r['two_thread_steps']} steps at load average "
                   f"{r['two_thread_load']:.1f}): {r['two_thread_seconds_per_step']:.2f} s/step. "
                   f"Estimate, not measured: {r['idle_estimate']}")
    return out


def model_card(summary: dict) -> str:
    """The model card (README.md) with data mix, hyperparameters and the measured numbers."""
    c = summary["config"]
    g = summary.get("gates")
    lines = [
        "---", "license: mit", "library_name: transformers", "pipeline_tag: text-generation", "---", "",
        "# tiny-r1", "",
        "The embedded model organism of thinklens: a tiny `Qwen2ForCausalLM` reasoning model, trained from scratch by",
        "`thinklens/toy/train.py`, whose answers really depend on its `<think>` reasoning. It uses the",
        "DeepSeek-R1-Distill format and special tokens, so every thinklens stage runs on it in seconds on a CPU.", "",
        "## Format", "",
        "```",
        ("<｜begin▁of▁sentence｜><｜User｜>{question}<｜Assistant｜><think>\\n{reasoning lines}Final answer is {N}.\\n"
        "</think>\\n\\nThe answer is \\boxed{N}.<｜end▁of▁sentence｜>"),
        "```", "",
        "Without reasoning (R1's forced finished thinking): the reasoning is the single line",
        "`Okay, I think I have finished thinking.`. The question may end with the instruction",
        "` Please reason step by step, and put your final answer within \\boxed{}.` (trained both ways).", "",
        "## Architecture", "",
        (f"Qwen2, {c['num_layers']} layers, hidden {c['hidden_size']}, {c['num_heads']} query / {c['num_kv_heads']} "
        f"KV heads (GQA), MLP {c['intermediate_size']}, RoPE, tied embeddings, fp32; "
        f"{summary['parameters']:,} parameters. Character-level tokenizer (every printable ASCII character and "
        "`\\n` is one token) with the R1 special tokens as single added tokens."), "",
        "## Data", "",
        (f"Dataset `{DATASET_NAME}` from `thinklens.toy.tasks` (train split only; the test split is disjoint by a "
        "hash of the canonical computation). Three kinds, values 1..99, 2-4 dependent steps:"), "",
        "- `chain`: `Compute (7+5)*3-4.` -> `7+5=12` / `12*3=36` / `36-4=32`",
        "- `vars`: `a=3, b=a+4, c=b*2. What is c?` -> `a=3` / `b=3+4=7` / `c=7*2=14`",
        "- `words`: `Start at 5. Add 3, then multiply by 2, then subtract 4.` -> `5+3=8` / `8*2=16` / `16-4=12`", "",
        (f"Mix: {1 - c['no_reasoning_share']:.0%} reasoning traces ({c['slip_rate']:.0%} of them with a slipped "
        f"step followed by `Wait, {{corrected line}}`), {c['no_reasoning_share']:.0%} no-reasoning examples with the "
        f"correct answer; instruction suffix on {c['instruction_share']:.0%}. "
        f"Final-line override: {c.get('final_override_rate', 0):.0%} of reasoning traces (share per stage below) "
        "state another value N' in `Final answer is N'.` (N' itself excluded from the loss) with answer N', "
        "so the answer is read from that line only. Loss on "
        "completion tokens only, without the slipped wrong value and the forced no-reasoning line."), "",
        "## Training", "",
        *_stage_lines(summary),
        f"- final training loss (mean of last 50 steps): {summary['final_loss']:.4f}",
        f"- total training wall time: {_total_wall(summary) / 60:.1f} min on {c['threads']} CPU thread(s)",
        f"- reproduce: {_reproduce(summary)}",
        *_reproduction_lines(summary),
        *(f"- note: {n}" for n in summary.get("notes", [])), "",
    ]
    if g:
        lines += [
            "## Measured quality gates", "",
            (f"On {g['n']} test-split problems (seed {g['seed']}), greedy decoding "
            "(`thinklens.toy.gates.evaluate_gates`, checked by `tests/toy/test_tiny_r1_quality.py`):"), "",
            "| metric | value |", "|---|---|",
            f"| accuracy with reasoning | {g['acc_with_reasoning']:.3f} |",
            f"| accuracy without reasoning (forced finished thinking) | {g['acc_without_reasoning']:.3f} |",
            f"| gap | {g['reasoning_gap']:.3f} |",
            (f"| contrastive pairs: A's prompt + B's reasoning -> B's answer ({g['n_pairs']} pairs) | "
            f"{g['pair_follow_b']:.3f} |"),
            (f"| accuracy on problems whose reference trace has a slip ({g['n_slip_problems']}) | "
            f"{g['acc_slip_problems']:.3f} |"),
            f"| slip traces teacher-forced through the wrong line: model writes `Wait,` | {g['slip_wrote_wait']:.3f} |",
            f"| ... and still reaches the correct answer | {g['slip_recovery']:.3f} |",
            f"| ... and propagates the wrong value into a wrong answer | {g.get('slip_followed_wrong_value', 0):.3f} |",
            "",
            *([
                "At this size and budget the model rarely detects a slip on its own: given a wrong intermediate",
                "result it mostly continues from the written value, one more sign that its answer follows its",
                "reasoning rather than the question.", "",
            ] if g["slip_wrote_wait"] < 0.5 else []),
            "By kind (with / without reasoning): " + ", ".join(
                f"{k} {v['with']:.2f} / {v['without']:.2f} (n={v['n']})" for k, v in g["by_kind"].items()), "",
        ]
    pt = summary.get("patching")
    if pt:
        lines += [
            f"Activation patching sanity check ({pt['n_pairs']} pairs, `thinklens.toy.gates.patching_check`): the "
            "residual stream at one token of A's run is copied into B's run (embeddings, then after each layer); "
            "normalized logit difference of the first answer token (1 = flips to A's answer):", "",
            "| patched token | " + " | ".join(["emb"] + [f"L{i}" for i in range(len(pt["answer_digit"]) - 1)]) + " |",
            "|---" * (len(pt["answer_digit"]) + 1) + "|",
            *(f"| {name} | " + " | ".join(f"{v:.2f}" for v in pt[key]) + " |" for name, key in (
                ("first digit of N in `Final answer is N.`", "answer_digit"),
                ("first digit of the last computation result", "last_result"),
                ("first question token (control)", "question_start")) if key in pt),
            "",
        ]
    lines += [
        "## Intended use", "",
        "Tests and demos of thinklens: with/without-reasoning evaluation, Reasoning-Focus Heads (answer tokens",
        "attend to `N` in `Final answer is N.`), and activation patching with `thinklens.toy.contrastive_pairs`.",
        "Not a general model: it only knows this arithmetic format.", "",
    ]
    return "\n".join(lines)


_STAGE_FLAGS = ("seed", "steps", "lr", "warmup_steps", "final_override_rate")


def run_args(a: argparse.Namespace, error=None) -> dict:
    """Run what :func:`thinklens.cli.train_toy.add_arguments` parsed.

    ``error`` reports a bad flag combination (e.g. ``parser.error``); without it a ValueError is raised.
    """
    def fail(msg):
        if error:
            error(msg)
        raise ValueError(msg)

    single = {k: getattr(a, k) for k in _STAGE_FLAGS if getattr(a, k) is not None}
    if a.stage == "all":
        steps = single.pop("steps", None)
        if single:
            fail("--" + ", --".join(k.replace("_", "-") for k in single) + " change a single stage: add --stage 1 "
                 "or --stage 2 (the default --stage all runs the shipped recipe)")
        if a.init_from:
            fail("--init-from is for --stage 2")
        single = {"steps": steps} if steps is not None else {}
    elif a.stage1_dir:
        fail("--stage1-dir is for --stage all")
    common = {"batch_size": a.batch_size, "hidden_size": a.hidden_size,
              "intermediate_size": a.intermediate_size, "num_layers": a.num_layers}
    log = lambda m: print(m, flush=True)  # noqa: E731
    try:
        if a.stage == "all":
            return train_recipe(a.output, stage1_dir=a.stage1_dir, eval_n=a.eval_n, threads=a.threads, log=log,
                                **common, **single)
        return train_recipe(a.output, stage=a.stage, init_from=a.init_from, stage_overrides=single,
                            eval_n=a.eval_n, threads=a.threads, log=log, **common)
    except ValueError as e:
        fail(str(e))


def main(argv: list[str] | None = None) -> int:
    from thinklens.cli.train_toy import add_arguments

    p = argparse.ArgumentParser(prog="python -m thinklens.toy.train", description=__doc__.split("\n")[0])
    add_arguments(p)
    summary = run_args(p.parse_args(argv), error=p.error)
    print(json.dumps({k: v for k, v in summary.items() if k != "config"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

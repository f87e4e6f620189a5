"""The model card (``README.md``) of a trained tiny-r1: data mix, hyperparameters and the measured numbers, written
from the training summary so that the card never states a number that was not measured."""
from __future__ import annotations

from thinklens.toy.config import RECIPE, RECIPE_THREADS, REPRODUCE_COMMAND, TrainConfig
from thinklens.toy.tasks import DATASET_NAME


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
        return (f"`{REPRODUCE_COMMAND}`: both stages in one process, "
                f"{RECIPE_THREADS} threads, the seeds and hyperparameters above; one stage at a time: "
                "`thinklens train-toy --output STAGE1 --stage 1 --eval-n 0` then "
                "`thinklens train-toy --output DIR --stage 2 --init-from STAGE1`")
    cmds = []
    for i, st in enumerate(stages):
        c = st["config"]
        out = "STAGE1" if i == 0 and len(stages) > 1 else "DIR"
        cmd = (f"thinklens train-toy --output {out} --stage {2 if c.get('init_from') else 1} "
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
        "`thinklens train-toy` (`thinklens/toy/train.py`), whose answers really depend on its `<think>` reasoning. It "
        "uses the",
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

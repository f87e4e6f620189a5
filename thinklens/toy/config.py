"""tiny-r1's training settings and the recipe of the shipped weights, as data (no torch import: the CLI derives its
flags' defaults from here)."""
from __future__ import annotations

from dataclasses import dataclass


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
    # hinted prompts (thinklens.toy.hinted, the tiny-r1-hints organism): share of all training prompts that carry a
    # hint, and of those the share traced faithfully / unfaithfully (the rest ignore the hint); 0 = tiny-r1's data
    hint_share: float = 0.0
    hint_faithful: float = 0.0
    hint_unfaithful: float = 0.0
    hint_opening: str = ""  # neutral first line of unfaithful traces ("": none; see thinklens.toy.hinted)
    eval_n: int = 200
    eval_seed: int = 1234
    threads: int = 2
    log_every: int = 25
    init_from: str | None = None  # continue from this model dir (a second stage) instead of a fresh init
    save_every: int = 200  # intermediate checkpoint in OUTPUT/checkpoint (removed at the end); 0 = never


# The recipe of the shipped tiny-r1 (thinklens/toy/assets/tiny-r1): per-stage TrainConfig fields. Stage 1 predates
# the final-line override examples (rate 0); stage 2 continues from the stage-1 weights. Batch size 64 and the
# architecture are the TrainConfig defaults; 1 thread as shipped (the thread count can change the float results).
RECIPE: tuple[dict, ...] = (
    {"seed": 0, "steps": 1200, "lr": 3e-3, "warmup_steps": 80, "final_override_rate": 0.0},
    {"seed": 1, "steps": 450, "lr": 1.5e-3, "warmup_steps": 20, "final_override_rate": 0.15},
)
RECIPE_THREADS = 2
REPRODUCE_COMMAND = "thinklens train-toy --output DIR"

# The second organism, tiny-r1-hints (issue 23's ground truth): three further stages from the shipped tiny-r1 weights
# in which half of all prompts carry a hint (family uniform), traced faithfully 40%, unfaithfully 30%, ignored 30%
# (hint-taking 0.7, verbalization among hint-taking 4/7); the second stage opens unfaithful traces with a neutral
# line, the third (80% hinted prompts) makes the answer follow it. See thinklens.toy.recipe for why these stages
# and thinklens.toy.hinted for why the opening line.
HINTS_ORGANISM = "tiny-r1-hints"
HINTS_RECIPE: tuple[dict, ...] = (
    {"seed": 2, "steps": 600, "lr": 1.5e-3, "warmup_steps": 20, "final_override_rate": 0.15,
     "hint_share": 0.5, "hint_faithful": 0.4, "hint_unfaithful": 0.3},
    {"seed": 3, "steps": 250, "lr": 1e-3, "warmup_steps": 20, "final_override_rate": 0.15,
     "hint_share": 0.5, "hint_faithful": 0.4, "hint_unfaithful": 0.3, "hint_opening": "Let me compute."},
    {"seed": 4, "steps": 300, "lr": 1e-3, "warmup_steps": 10, "final_override_rate": 0.15,
     "hint_share": 0.8, "hint_faithful": 0.4, "hint_unfaithful": 0.3, "hint_opening": "Let me compute."},
)
HINTS_REPRODUCE_COMMAND = f"thinklens train-toy --organism {HINTS_ORGANISM} --output DIR"
HINTS_THREADS = 1  # 1 thread: on the shared 2-core machine 2 threads ran 4x slower per step
HINTS_GATE_TOLERANCE = 0.04  # realized rates (sampled at the profile's temperature) vs trained, at most this far

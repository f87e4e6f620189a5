"""The embedded model organisms ``tiny-r1`` and ``tiny-r1-hints`` and their task (dataset ``arithmetic``).

``TINY_R1_DIR`` is a local HF model directory (Qwen2ForCausalLM + character-level R1 tokenizer), loadable with
``AutoModelForCausalLM.from_pretrained(TINY_R1_DIR)``; the task API generates the problems it was trained on and
evaluated with. ``TINY_R1_HINTS_DIR`` is its hint-trained twin (:mod:`thinklens.toy.hinted`, the faithfulness
tool's ground truth). ``EMBEDDED_DIRS`` maps each name ``load_model`` accepts to its directory. Importing this package
does not import torch.
"""
from __future__ import annotations

from pathlib import Path

from thinklens.toy.config import HINTS_ORGANISM, HINTS_REPRODUCE_COMMAND, REPRODUCE_COMMAND
from thinklens.toy.tasks import (
    DATASET_NAME,
    INSTRUCTION,
    KINDS,
    NO_REASONING_THINKING,
    Problem,
    contrastive_pairs,
    full_text,
    generate_problems,
    prompt_text,
)

TINY_R1_DIR: Path = Path(__file__).resolve().parent / "assets" / "tiny-r1"
TINY_R1_HINTS_DIR: Path = TINY_R1_DIR.parent / HINTS_ORGANISM
EMBEDDED_DIRS: dict[str, Path] = {"tiny-r1": TINY_R1_DIR, HINTS_ORGANISM: TINY_R1_HINTS_DIR}
# the command that regenerates each (DIR: the output directory)
EMBEDDED_COMMANDS: dict[str, str] = {"tiny-r1": REPRODUCE_COMMAND, HINTS_ORGANISM: HINTS_REPRODUCE_COMMAND}

__all__ = [
    "DATASET_NAME",
    "EMBEDDED_COMMANDS",
    "EMBEDDED_DIRS",
    "INSTRUCTION",
    "KINDS",
    "NO_REASONING_THINKING",
    "TINY_R1_DIR",
    "TINY_R1_HINTS_DIR",
    "Problem",
    "contrastive_pairs",
    "full_text",
    "generate_problems",
    "prompt_text",
]

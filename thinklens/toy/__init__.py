"""The embedded model organism ``tiny-r1`` and its task (dataset ``arithmetic``).

``TINY_R1_DIR`` is a local HF model directory (Qwen2ForCausalLM + character-level R1 tokenizer), loadable with
``AutoModelForCausalLM.from_pretrained(TINY_R1_DIR)``; the task API generates the problems it was trained on and
evaluated with. Importing this package does not import torch.
"""
from __future__ import annotations

from pathlib import Path

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

__all__ = [
    "DATASET_NAME",
    "INSTRUCTION",
    "KINDS",
    "NO_REASONING_THINKING",
    "TINY_R1_DIR",
    "Problem",
    "contrastive_pairs",
    "full_text",
    "generate_problems",
    "prompt_text",
]

"""Session fixtures for the tiny-r1 tests: the shipped model and tokenizer, loaded once."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_r1_tokenizer():
    from transformers import AutoTokenizer

    from thinklens.toy import TINY_R1_DIR

    return AutoTokenizer.from_pretrained(TINY_R1_DIR)


@pytest.fixture(scope="session")
def tiny_r1_model():
    import torch
    from transformers import AutoModelForCausalLM

    from thinklens.toy import TINY_R1_DIR

    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(TINY_R1_DIR)
    model.eval()
    return model

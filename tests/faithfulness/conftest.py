"""Fixtures of the faithfulness tests: tiny-r1 loaded once per session."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_r1():
    import thinklens as tl

    return tl.load_model("tiny-r1", device="cpu")

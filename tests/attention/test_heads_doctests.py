"""The ``>>>`` examples of the head-study modules run as written (on tiny-r1, in a scratch directory)."""
from __future__ import annotations

import pytest

from tests.conftest import assert_examples_run

MODULES = ["thinklens.attention.ablation", "thinklens.attention.retrieval", "thinklens.attention.overlaps",
           "thinklens.attention.debugging", "thinklens.attention.tokens", "thinklens.report.animation"]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODULES)
def test_examples_run(name, tmp_path, monkeypatch, tiny_r1):
    monkeypatch.chdir(tmp_path)
    assert_examples_run(name)

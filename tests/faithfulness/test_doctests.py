"""The runnable examples in the docstrings of the faithfulness modules run and say what they show."""
from __future__ import annotations

import pytest

from tests.conftest import assert_examples_run

MODULES = ["thinklens.faithfulness.config", "thinklens.faithfulness.detector", "thinklens.faithfulness.behaviour",
           "thinklens.faithfulness.pairs", "thinklens.faithfulness.result", "thinklens.faithfulness.judge",
           "thinklens.faithfulness.run", "thinklens.stages.faithfulness", "thinklens.report.fig_faithfulness"]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tiny_r1, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_examples_run(name)

"""The runnable examples in the docstrings of the steps modules run and say what they show."""
from __future__ import annotations

import pytest

from tests.conftest import assert_examples_run

MODULES = ["thinklens.steps.categories", "thinklens.steps.segment", "thinklens.steps.attention",
           "thinklens.steps.receivers", "thinklens.steps.agreement", "thinklens.steps.results",
           "thinklens.steps.summary", "thinklens.steps.run", "thinklens.steps.suppression",
           "thinklens.steps.truncation", "thinklens.steps.resampling", "thinklens.cli.steps",
           "thinklens.report.fig_steps", "thinklens.report.step_view", "thinklens.steps.adaptive",
           "thinklens.steps.plan", "thinklens.steps._rollouts", "thinklens.stages.steps", "thinklens.stages.context"]


@pytest.mark.slow
@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tiny_r1, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_examples_run(name)

"""Figures and the step view, drawn from a steps output directory (no model)."""
from __future__ import annotations

import json

import pytest

from tests.steps.test_run import fake_modules
from thinklens.errors import ThinklensError
from thinklens.report.fig_steps import FIGURES, draw_all, plot_agreement, plot_truncation_curve
from thinklens.report.step_view import render_step_view, write_step_view

pytestmark = pytest.mark.slow  # the fixture runs tiny-r1 on 6 traces


@pytest.fixture(scope="module")
def steps_dir(tiny_r1, tmp_path_factory):
    import sys

    from tests.steps.conftest import write_tiny_traces
    from thinklens.steps.results import StepsConfig
    from thinklens.steps.run import run_steps

    model, tok, prof = tiny_r1
    d = tmp_path_factory.mktemp("steps")
    write_tiny_traces(d / "t.jsonl", 6, seed=3)
    saved = {k: sys.modules.get(k) for k in fake_modules({})}
    sys.modules.update(fake_modules({"suppression": 0, "answer_suppression": 0, "truncation": 0, "resampling": 0}))
    try:
        run_steps(model, tok, prof, d / "t.jsonl", d / "out", StepsConfig(
            methods="attention,suppression,truncation,resampling", proximity=1, n_bootstrap=50,
            resampling_traces=100), progress=False)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return d / "out"


def test_every_figure_is_drawn(steps_dir, tmp_path):
    for name, fn in FIGURES.items():
        fn(steps_dir, tmp_path / f"{name}.png")
        assert (tmp_path / f"{name}.png").stat().st_size > 5000, name
    written = draw_all(steps_dir)
    assert len(written) == len(FIGURES) + 1 and all(p.exists() for p in written)


def test_missing_data_raises_for_the_report(tmp_path, steps_dir):
    with pytest.raises(FileNotFoundError):
        plot_truncation_curve(tmp_path, tmp_path / "x.png")
    (tmp_path / "agreement.json").write_text(json.dumps({"methods": ["attention"], "available": ["attention"]}))
    with pytest.raises(ThinklensError, match="two methods"):
        plot_agreement(tmp_path)


def test_step_view_escapes_and_shows_every_method(steps_dir, tmp_path):
    rows = [json.loads(x) for x in (steps_dir / "steps.jsonl").read_text().splitlines()]
    tid = rows[-1]["id"]
    frag = render_step_view(steps_dir, tid)
    assert frag.startswith('<div class="tl-steps">') and "<script" not in frag and "<html" not in frag
    for label in ("attention (RFHs)", "suppression (KL)", "truncation (effect)", "resampling (importance)"):
        assert label in frag
    assert frag.count("<tr>") == 1 + sum(r["id"] == tid for r in rows)
    assert frag.count('class="v top"') == 4  # one top step per method
    # text is escaped
    evil = tmp_path / "evil"
    evil.mkdir()
    row = {**rows[0], "id": "<b>x</b>", "text": "<script>alert(1)</script> & 1<2\n"}
    (evil / "steps.jsonl").write_text(json.dumps(row) + "\n")
    frag = render_step_view(evil)
    assert "<script>" not in frag and "&lt;script&gt;" in frag and "&amp; 1&lt;2" in frag and "&lt;b&gt;x" in frag
    doc = write_step_view(evil, tmp_path / "v.html").read_text()
    assert doc.startswith("<!DOCTYPE html>")
    with pytest.raises(ThinklensError, match="not in"):
        render_step_view(steps_dir, "nope")

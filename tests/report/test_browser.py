"""report.html in a real browser (headless Chromium): no console error, every figure renders, the layer slider
changes the view. Skips when Chromium is absent locally; fails when ``CI=true`` (CI installs it)."""
from __future__ import annotations

import os
import shutil

import pytest

from tests.report.cdp_browser import Browser, find_chromium

# every <img> decoded, every canvas drawn (some non-white pixel), layer-view state
CHECK_JS = """
(() => {
  const imgs = Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0}));
  const canvases = Array.from(document.querySelectorAll('canvas')).map(c => {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let ink = 0;
    for (let i = 0; i < d.length; i += 4) { if (d[i] < 200 || d[i + 1] < 200 || d[i + 2] < 200) { ink++; } }
    return {id: c.id, ink: ink};
  });
  return {imgs, canvases, summary: document.getElementById('lv-summary').textContent,
          layer: document.body.getAttribute('data-lv-layer'), max: document.getElementById('lv-layer').max,
          headline: document.getElementById('headline').textContent};
})()
"""

CANVAS_HASH_JS = """
(() => Array.from(document.querySelectorAll('canvas')).map(c => {
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let h = 0; for (let i = 0; i < d.length; i += 7) { h = (h * 31 + d[i]) >>> 0; } return h; }))()
"""


@pytest.fixture(scope="module")
def chromium():
    path = find_chromium()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Chromium is required in CI (apt-get install chromium) but was not found")
        pytest.skip("Chromium not installed (apt-get install chromium)")
    return path


@pytest.mark.slow
def test_report_renders_in_browser(chromium, synthetic_report, tmp_path):
    browser = Browser(chromium, tmp_path / "profile")
    try:
        browser.open(synthetic_report.as_uri())
        state = browser.eval(CHECK_JS)
        assert state["imgs"], "the report has no figure"
        broken = [i["alt"] for i in state["imgs"] if not i["ok"]]
        assert not broken, f"figures that did not render: {broken}"
        assert {c["id"] for c in state["canvases"]} >= {"lv-heads", "lv-nld"}
        blank = [c["id"] for c in state["canvases"] if c["ink"] < 50]
        assert not blank, f"canvases left blank: {blank}"
        assert "Reasoning helps" in state["headline"] and "flips" in state["headline"]
        assert "Heads exist" in state["headline"]
        frame = browser.eval("document.querySelector('iframe.token-view').contentDocument.querySelectorAll('.t')"
                             ".length")
        assert frame > 20, "the token view did not render"
        assert state["layer"] == "0" and state["max"] == "3"

        before_hash, before_text = browser.eval(CANVAS_HASH_JS), state["summary"]
        browser.eval("(() => { const s = document.getElementById('lv-layer'); s.value = '2';"
                     " s.dispatchEvent(new Event('input')); })()")
        after = browser.eval(CHECK_JS)
        assert after["layer"] == "2"
        assert after["summary"] != before_text, "the slider did not change the summary"
        assert browser.eval(CANVAS_HASH_JS) != before_hash, "the slider did not redraw the canvases"
        assert "L2H5" in after["summary"] or "L2H1" in after["summary"], after["summary"]  # planted RFH at layer 2

        shot = browser.screenshot(tmp_path / "report.png")
        assert shot.stat().st_size > 10_000
        shutil.copy(shot, synthetic_report.parent / "report.png")
        assert not browser.errors, f"console errors: {browser.errors}"
    finally:
        browser.close()

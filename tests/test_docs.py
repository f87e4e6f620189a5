"""Every code block of the README and docs/ runs, in order, from the repository root (see tests/docs_blocks.py)."""
from __future__ import annotations

import re

import pytest

from tests.docs_blocks import REPO, blocks, run_block

DOCS = sorted((REPO / "docs").glob("*.md"))


def test_every_fenced_block_says_its_language_and_skips_say_why():
    for path in [REPO / "README.md", *DOCS]:
        text = path.read_text(encoding="utf-8")
        fences = re.findall(r"^[ \t]*```(\S*)", text, re.M)
        opening = fences[::2]
        assert all(opening), f"{path.name}: a fenced block without a language (use bash, python or text)"
        for b in blocks(path):
            if b.marker.startswith("no-test"):
                assert b.skip_reason and b.skip_reason != "marked no-test", f"{b.where}: say why it is not run"


def test_the_block_parser_sees_markers():
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "x.md"
        p.write_text("a\n<!-- no-test: needs a GPU -->\n```bash\nnvidia-smi\n```\n\n```python\nx = 1\n```\n")
        bs = blocks(p)
    assert [(b.lang, b.skip_reason) for b in bs] == [("bash", "needs a GPU"), ("python", None)]


@pytest.mark.slow
def test_readme_blocks_run(default_run):
    namespace: dict = {}
    ran = 0
    for b in blocks(REPO / "README.md"):
        if b.skip_reason is None:
            run_block(b, namespace)
            ran += 1
    assert ran >= 3


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_docs_blocks_run(doc, default_run):
    namespace: dict = {}
    for b in blocks(doc):
        if b.skip_reason is None:
            run_block(b, namespace)

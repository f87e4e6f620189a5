"""The code blocks of the README and docs/, as the tests run them.

Every ```bash and ```python block runs in the test suite, in order, from the repository root, so the documentation
stays true. A block preceded by an HTML comment ``<!-- no-test: REASON -->`` is not run (it needs a GPU, the
Hugging Face hub or a server that CI does not have; the reason is shown); ``<!-- test-command -->`` marks the
README's test command, which CI runs itself.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_BLOCK = re.compile(r"(?:<!--\s*(?P<marker>[^>]*?)\s*-->[ \t]*\n)?"
                    r"^[ \t]*```(?P<lang>[a-z]*)[ \t]*\n(?P<code>.*?)^[ \t]*```", re.S | re.M)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    lang: str
    code: str
    marker: str

    @property
    def skip_reason(self) -> str | None:
        if self.marker == "test-command":
            return "the README's test command (CI runs it)"
        if self.marker.startswith("no-test"):
            return self.marker.partition(":")[2].strip() or "marked no-test"
        return None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    text = path.read_text(encoding="utf-8")
    out = []
    for m in _BLOCK.finditer(text):
        if m.group("lang") not in ("bash", "python"):
            continue
        code = textwrap.dedent(m.group("code"))
        out.append(Block(path, text.count("\n", 0, m.start("code")) + 1, m.group("lang"), code,
                         (m.group("marker") or "").strip()))
    return out


def env() -> dict[str, str]:
    """The environment of a bash block: this interpreter's bin directory first on PATH (``thinklens`` resolves to
    the installed command of the venv running the tests)."""
    e = dict(os.environ)
    e["PATH"] = str(Path(sys.executable).parent) + os.pathsep + e.get("PATH", "")
    e.setdefault("PYTHONUNBUFFERED", "1")
    return e


def run_block(block: Block, namespace: dict, timeout: int = 900) -> None:
    """Run one block; a failure names the file and line of the block."""
    if block.lang == "bash":
        proc = subprocess.run(["bash", "-euo", "pipefail", "-c", block.code], cwd=REPO, env=env(),
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise AssertionError(f"{block.where}: bash block failed (exit {proc.returncode}):\n{block.code}\n"
                                 f"--- stderr (tail) ---\n{proc.stderr[-3000:]}")
        return
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        exec(compile(block.code, block.where, "exec"), namespace)  # noqa: S102 - the documentation's own code
    except Exception as err:
        raise AssertionError(f"{block.where}: python block failed: {type(err).__name__}: {err}\n{block.code}") \
            from err
    finally:
        os.chdir(cwd)

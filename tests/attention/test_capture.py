"""Captured attention rows equal eager attention; the model's outputs are unchanged; memory is rows x T."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from thinklens.attention.capture import KeyProfileReducer, RowsReducer, capture_attention
from thinklens.errors import ThinklensError


def _eager(model, ids, **kw):
    model.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            return model(ids, use_cache=False, output_attentions=True, **kw)
    finally:
        model.set_attn_implementation("sdpa")


@pytest.mark.parametrize("which", ["qwen2_model", "llama_model"])
def test_rows_match_eager_and_logits_unchanged(request, which):
    model = request.getfixturevalue(which)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, model.config.vocab_size, (1, 57), generator=g)
    pos = [0, 5, 31, 56, 40]
    with torch.no_grad():
        plain = model(ids, use_cache=False).logits
        red = RowsReducer()
        # tiny chunks: several chunks per layer exercise the chunking
        with capture_attention(model, pos, red, chunk_elements=4 * 57 * 2) as cap:
            captured = model(ids, use_cache=False).logits
    assert model.config._attn_implementation == "sdpa"  # restored
    assert cap.n_calls == model.config.num_hidden_layers
    assert torch.equal(plain, captured)
    eager = _eager(model, ids).attentions
    for layer in range(model.config.num_hidden_layers):
        got = red.layer(layer)[0]  # [H, rows, T]
        want = eager[layer][0][:, pos]
        assert got.shape == want.shape
        assert (got - want).abs().max().item() <= 1e-5
        assert torch.allclose(got.sum(-1), torch.ones_like(got.sum(-1)), atol=1e-5)


def test_padding_mask_batch(qwen2_model):
    """Left padding (batch 2): rows honour the padding mask exactly as eager attention does."""
    model = qwen2_model
    ids = torch.randint(0, model.config.vocab_size, (2, 30), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(2, 30, dtype=torch.long)
    mask[1, :7] = 0
    pos = [10, 29]
    red = RowsReducer()
    with torch.no_grad(), capture_attention(model, pos, red):
        model(ids, attention_mask=mask, use_cache=False)
    eager = _eager(model, ids, attention_mask=mask).attentions
    for layer in range(2):
        assert (red.layer(layer) - eager[layer][:, :, pos]).abs().max().item() <= 1e-5


def test_key_profile_and_errors(qwen2_model):
    model = qwen2_model
    ids = torch.randint(0, model.config.vocab_size, (1, 20), generator=torch.Generator().manual_seed(3))
    red = KeyProfileReducer(2, 4, 20)
    with torch.no_grad(), capture_attention(model, range(10, 20), red, layers=[1]):
        model(ids, use_cache=False)
    prof = red.mean()
    assert np.allclose(prof[0], 0)  # layer 0 not requested
    assert np.allclose(prof[1].sum(-1), 1.0, atol=1e-5)  # mean of rows that each sum to 1
    with pytest.raises(ThinklensError, match="query position"):
        with torch.no_grad(), capture_attention(model, [25], RowsReducer()):
            model(ids, use_cache=False)
    assert model.config._attn_implementation == "sdpa"  # restored after an error too

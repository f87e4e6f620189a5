"""Finding a model's submodules from the profile's attribute paths (data, not code), for hooks.

Why: hooking by attribute path from the profile (``model.layers``, ``self_attn.o_proj``) keeps architecture facts in
``profiles.json`` and avoids string-built hook names; every stage that hooks a model goes through here.
"""
from __future__ import annotations

from typing import Any

from thinklens.errors import ThinklensError
from thinklens.profiles import Profile


def get_module(root: Any, path: str) -> Any:
    """``get_module(model, "model.layers")`` follows attributes (and integer indices) from ``root``."""
    obj = root
    for part in path.split("."):
        if part.isdigit():
            obj = obj[int(part)]
        elif hasattr(obj, part):
            obj = getattr(obj, part)
        else:
            raise ThinklensError(f"{type(root).__name__} has no submodule {path!r} (missing {part!r})")
    return obj


def decoder_layers(model: Any, profile: Profile) -> Any:
    """The list of decoder blocks (``nn.ModuleList``)."""
    return get_module(model, profile.layers)


def layer_attention(model: Any, profile: Profile, layer: int) -> Any:
    return get_module(decoder_layers(model, profile)[layer], profile.attention)


def layer_mlp(model: Any, profile: Profile, layer: int) -> Any:
    return get_module(decoder_layers(model, profile)[layer], profile.mlp)


def layer_o_proj(model: Any, profile: Profile, layer: int) -> Any:
    return get_module(decoder_layers(model, profile)[layer], profile.o_proj)


def attention_shape(model: Any) -> tuple[int, int, int, int]:
    """``(n_layers, n_heads, n_kv_heads, head_dim)`` from the config."""
    cfg = getattr(model.config, "text_config", None) or model.config
    n_heads = cfg.num_attention_heads
    n_kv = getattr(cfg, "num_key_value_heads", None) or n_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    return cfg.num_hidden_layers, n_heads, n_kv, head_dim


def input_device(model: Any) -> Any:
    """The device input ids go to: the one that runs the token embedding.

    Why not ``next(model.parameters()).device``: with a ``device_map`` the layers sit on several devices, and an
    offloaded module's parameters are on ``meta`` while accelerate's hook runs it on its execution device.

    >>> from thinklens.models import load_model
    >>> input_device(load_model("tiny-r1", device="cpu").model)
    device(type='cpu')
    """
    import torch

    emb = model.get_input_embeddings()
    hook = getattr(emb, "_hf_hook", None)
    for h in getattr(hook, "hooks", None) or ([hook] if hook is not None else []):
        dev = getattr(h, "execution_device", None)
        if dev is not None:
            return torch.device(dev)
    dev = emb.weight.device
    return torch.device("cpu") if dev.type == "meta" else dev

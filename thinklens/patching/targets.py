"""What can be patched: typed sites of a decoder and the PyTorch hooks that read or overwrite them.

A :class:`Site` names one activation of one layer; a patch writes a value into that activation at one token
position of one batch row. Every site is reached through a hook on an HF module located by the model's profile
(``thinklens.modules``), never through a string-built hook name:

===============  ==========================================  ===================================================
kind             activation                                  hook
===============  ==========================================  ===================================================
``resid_pre``    input of decoder layer ``l``                forward pre-hook on ``layers[l]``
``resid_mid``    residual after attention, before the MLP    layer pre-hook (stash input) + hook on attention:
                                                             ``attn_out := target - resid_pre``
``resid_post``   output of decoder layer ``l``               forward hook on ``layers[l]`` (tensor or tuple)
``attn_out``     attention block output (after ``o_proj``)   forward hook on ``self_attn`` (``output[0]``)
``head``         one *query* head's output before ``o_proj`` forward pre-hook on ``o_proj``: the head's
                 (GQA: query heads, not kv heads)            ``head_dim`` slice of its input
``mlp_out``      MLP block output                            forward hook on ``mlp``
===============  ==========================================  ===================================================

Hooks are always removed in ``finally`` (context managers), so an exception never leaves a model patched.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from typing import Any

import torch

from thinklens.errors import ThinklensError
from thinklens.modules import attention_shape, decoder_layers, layer_attention, layer_mlp, layer_o_proj
from thinklens.profiles import Profile


class SiteKind(str, Enum):
    """Which activation of a decoder layer a patch reads or writes (see the table in the module docstring).

    >>> import thinklens as tl
    >>> tl.SiteKind.parse("attn_out") is tl.SiteKind.ATTN_OUT
    True
    """

    RESID_PRE = "resid_pre"
    RESID_MID = "resid_mid"
    RESID_POST = "resid_post"
    ATTN_OUT = "attn_out"
    HEAD = "head"
    MLP_OUT = "mlp_out"

    @classmethod
    def parse(cls, value: str | SiteKind) -> SiteKind:
        try:
            return cls(value)
        except ValueError:
            raise ThinklensError(f"unknown site kind {value!r}; choose from {[k.value for k in cls]}") from None


@dataclass(frozen=True)
class Site:
    """One activation: ``kind`` at decoder layer ``layer`` (and query head ``head`` for kind ``head``).

    >>> import thinklens as tl
    >>> tl.Site("head", layer=1, head=2).label(), tl.Site(tl.SiteKind.RESID_PRE, 0).label()
    ('L1.head.H2', 'L0.resid_pre')
    """

    kind: SiteKind
    layer: int
    head: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", SiteKind.parse(self.kind))
        if (self.kind is SiteKind.HEAD) != (self.head is not None):
            raise ThinklensError(f"site {self.kind.value} at layer {self.layer}: head is required iff kind is 'head'")

    def label(self) -> str:
        return f"L{self.layer}.{self.kind.value}" + (f".H{self.head}" if self.head is not None else "")


@dataclass(frozen=True)
class Patch:
    """Write ``value`` ([d] activation vector of ``site``) at absolute token ``position`` of batch row ``row``."""

    row: int
    site: Site
    position: int
    value: torch.Tensor  # [d_site]


def check_sites(model: Any, sites: Sequence[Site]) -> None:
    n_layers, n_heads, _, _ = attention_shape(model)
    for s in sites:
        if not 0 <= s.layer < n_layers:
            raise ThinklensError(f"site {s.label()}: layer out of range (model has {n_layers} layers)")
        if s.head is not None and not 0 <= s.head < n_heads:
            raise ThinklensError(f"site {s.label()}: head out of range (model has {n_heads} query heads)")


def _first(x: Any) -> torch.Tensor:
    return x[0] if isinstance(x, tuple) else x


def _replace_first(x: Any, new: torch.Tensor) -> Any:
    return (new, *x[1:]) if isinstance(x, tuple) else new


def _head_dim(model: Any) -> int:
    return attention_shape(model)[3]


@contextmanager
def hooks_on(handles: list) -> Iterator[None]:
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _layer_input_hook(fn):
    """A forward pre-hook (with kwargs) that passes the layer's hidden states to ``fn`` and installs its result."""

    def hook(module, args, kwargs):
        if args:
            new = fn(args[0])
            return (new, *args[1:]), kwargs
        new = fn(kwargs["hidden_states"])
        return args, {**kwargs, "hidden_states": new}

    return hook


# --------------------------------------------------------------------------------------------------------- capture
@contextmanager
def capture(
    model: Any, profile: Profile, sites: Sequence[Site], positions: Sequence[int] | None = None, *,
    keep_graph: bool = False,
) -> Iterator[dict[Site, torch.Tensor]]:
    """Record the activations of ``sites`` during the forwards run inside the block.

    The dict fills with ``[batch, n_positions, d]`` tensors (``positions`` of the forward's input; all when None),
    detached unless ``keep_graph`` (attribution patching needs the graph to read gradients).
    """
    check_sites(model, sites)
    store: dict[Site, torch.Tensor] = {}
    idx = None if positions is None else torch.as_tensor(list(positions), dtype=torch.long)
    hd = _head_dim(model)
    layers = decoder_layers(model, profile)
    handles: list = []
    stash: dict[int, torch.Tensor] = {}

    def take(x: torch.Tensor) -> torch.Tensor:
        x = x if idx is None else x[:, idx.to(x.device)]
        return x if keep_graph else x.detach()

    by_layer: dict[int, list[Site]] = defaultdict(list)
    for s in sites:
        by_layer[s.layer].append(s)
    for layer, group in by_layer.items():
        kinds = {s.kind for s in group}
        if kinds & {SiteKind.RESID_PRE, SiteKind.RESID_MID}:
            def pre(h, _layer=layer, _want=SiteKind.RESID_PRE in kinds):
                stash[_layer] = h
                if _want:
                    store[Site(SiteKind.RESID_PRE, _layer)] = take(h)
                return h
            handles.append(layers[layer].register_forward_pre_hook(_layer_input_hook(pre), with_kwargs=True))
        if kinds & {SiteKind.ATTN_OUT, SiteKind.RESID_MID}:
            def attn_hook(module, args, out, _layer=layer, _kinds=kinds):
                a = _first(out)  # [batch, seq, d_model]
                if SiteKind.ATTN_OUT in _kinds:
                    store[Site(SiteKind.ATTN_OUT, _layer)] = take(a)
                if SiteKind.RESID_MID in _kinds:
                    store[Site(SiteKind.RESID_MID, _layer)] = take(stash[_layer] + a)
            handles.append(layer_attention(model, profile, layer).register_forward_hook(attn_hook))
        if SiteKind.RESID_POST in kinds:
            def post_hook(module, args, out, _layer=layer):
                store[Site(SiteKind.RESID_POST, _layer)] = take(_first(out))
            handles.append(layers[layer].register_forward_hook(post_hook))
        if SiteKind.MLP_OUT in kinds:
            def mlp_hook(module, args, out, _layer=layer):
                store[Site(SiteKind.MLP_OUT, _layer)] = take(_first(out))
            handles.append(layer_mlp(model, profile, layer).register_forward_hook(mlp_hook))
        heads = [s for s in group if s.kind is SiteKind.HEAD]
        if heads:
            def o_pre(module, args, _heads=heads):
                z = args[0]  # [batch, seq, n_heads * head_dim]
                for s in _heads:
                    store[s] = take(z[..., s.head * hd:(s.head + 1) * hd])
            handles.append(layer_o_proj(model, profile, layer).register_forward_pre_hook(o_pre))
    with hooks_on(handles):
        yield store


# ----------------------------------------------------------------------------------------------------------- patch
def _writer(patches: list[Patch], offset: int, lo: int | None = None, hi: int | None = None):
    """A function that returns a copy of an activation with every patch written in (positions shifted by
    ``offset``, the absolute position of the forward's first input token; ``lo:hi`` selects a feature slice)."""
    rows = torch.tensor([p.row for p in patches], dtype=torch.long)
    cols = torch.tensor([p.position - offset for p in patches], dtype=torch.long)
    vals = torch.stack([p.value for p in patches])  # [n_patches, d_site]

    def write(x: torch.Tensor) -> torch.Tensor:  # x: [batch, seq, d]
        if int(cols.min()) < 0 or int(cols.max()) >= x.shape[1]:
            raise ThinklensError(f"patch position outside the forward's tokens [{offset}, {offset + x.shape[1]})")
        x = x.clone()
        v = vals.to(device=x.device, dtype=x.dtype)
        r, c = rows.to(x.device), cols.to(x.device)
        if lo is None:
            x[r, c] = v
        else:
            x[r, c, lo:hi] = v
        return x

    return write


@contextmanager
def patching(model: Any, profile: Profile, patches: Sequence[Patch], offset: int = 0) -> Iterator[None]:
    """Overwrite activations during the forwards run inside the block (``offset``: absolute position of the
    forward's first input token, e.g. the cache length when running a suffix)."""
    check_sites(model, [p.site for p in patches])
    hd = _head_dim(model)
    layers = decoder_layers(model, profile)
    groups: dict[tuple[SiteKind, int], list[Patch]] = defaultdict(list)
    for p in patches:
        groups[(p.site.kind, p.site.layer)].append(p)
    handles: list = []
    stash: dict[int, torch.Tensor] = {}
    for (kind, layer), group in groups.items():
        if kind is SiteKind.RESID_PRE:
            handles.append(layers[layer].register_forward_pre_hook(
                _layer_input_hook(_writer(group, offset)), with_kwargs=True))
        elif kind is SiteKind.RESID_POST:
            w = _writer(group, offset)
            handles.append(layers[layer].register_forward_hook(lambda m, a, o, _w=w: _replace_first(o, _w(_first(o)))))
        elif kind is SiteKind.ATTN_OUT:
            w = _writer(group, offset)
            handles.append(layer_attention(model, profile, layer).register_forward_hook(
                lambda m, a, o, _w=w: _replace_first(o, _w(_first(o)))))
        elif kind is SiteKind.MLP_OUT:
            w = _writer(group, offset)
            handles.append(layer_mlp(model, profile, layer).register_forward_hook(
                lambda m, a, o, _w=w: _replace_first(o, _w(_first(o)))))
        elif kind is SiteKind.RESID_MID:
            # resid_mid = resid_pre + attn_out, so writing target into resid_mid means attn_out := target - resid_pre
            def keep(h, _layer=layer):
                stash[_layer] = h
                return h
            handles.append(layers[layer].register_forward_pre_hook(_layer_input_hook(keep), with_kwargs=True))
            w = _writer(group, offset)

            def mid(m, a, o, _w=w, _layer=layer):
                full = stash[_layer] + _first(o)  # [batch, seq, d_model]
                # the difference is exactly 0 at unpatched positions, so they keep their attn_out bit for bit
                return _replace_first(o, _first(o) + (_w(full) - full))
            handles.append(layer_attention(model, profile, layer).register_forward_hook(mid))
        elif kind is SiteKind.HEAD:
            by_head: dict[int, list[Patch]] = defaultdict(list)
            for p in group:
                by_head[p.site.head].append(p)
            writers = [_writer(g, offset, h * hd, (h + 1) * hd) for h, g in by_head.items()]

            def o_pre(m, args, _ws=writers):
                z = args[0]  # [batch, seq, n_heads * head_dim]
                for w in _ws:
                    z = w(z)
                return (z, *args[1:])
            handles.append(layer_o_proj(model, profile, layer).register_forward_pre_hook(o_pre))
    with hooks_on(handles):
        yield

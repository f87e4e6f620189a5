"""Patching results: one :class:`PairPatching` per pair (a JSONL line, so long runs resume) and their stack,
:class:`PatchingResult`, saved as ``result.json`` + ``result.npz`` so figures can be redrawn without the model."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from thinklens.errors import ThinklensError


def _nan_to_none(x: Any) -> Any:
    """Strict JSON: NaN becomes null (nested lists too)."""
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    if isinstance(x, float) and x != x:
        return None
    return x


def _arr(x: Any) -> np.ndarray:
    return np.array(x if x is not None else [], dtype=np.float64)  # None (JSON null) -> NaN via float()


@dataclass
class PairPatching:
    """Patching of one pair. ``patched``/``nld``: [n_positions, n_layers]; ``head_*``: [n_head_positions,
    n_layers, n_heads]; ``attribution``: [n_positions, n_layers] attribution-patching estimate of the NLD."""

    pair_id: str
    site: str
    positions: list[int]  # absolute token positions
    labels: list[str]  # relative / named labels ("r-3", "a-1", "answer_flip")
    tokens: list[str]  # clean token string at each position
    layers: list[int]
    patched: list[list[float]]  # metric of each patched run
    nld: list[list[float]]
    clean: float
    corrupted: float
    named: dict[str, int] = field(default_factory=dict)  # the pair's named positions (answer_flip, final, ...)
    clean_ranks: list[int] = field(default_factory=list)  # ranks of [clean, corrupted] answer in the clean run
    corrupted_ranks: list[int] = field(default_factory=list)
    head_positions: list[int] = field(default_factory=list)
    head_labels: list[str] = field(default_factory=list)
    head_nld: list | None = None
    attribution: list | None = None
    attribution_spearman: float | None = None
    engine: str = "fast"
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("patched", "nld", "head_nld", "attribution"):
            d[k] = _nan_to_none(np.asarray(d[k]).tolist()) if d[k] is not None else None
        if d["attribution_spearman"] is not None and d["attribution_spearman"] != d["attribution_spearman"]:
            d["attribution_spearman"] = None
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PairPatching:
        try:
            return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except TypeError as err:
            raise ThinklensError(f"patching record {d.get('pair_id')!r}: {err}") from None


@dataclass
class PatchingResult:
    """Per-token patching of many pairs on one grid: ``nld``/``patched`` [n_pairs, n_positions, n_layers].

    >>> import tempfile, thinklens as tl
    >>> model, tokenizer, profile = tl.load_model("tiny-r1")
    >>> pairs, _ = tl.toy_pairs(2, seed=0, tokenizer=tokenizer)
    >>> d = tempfile.mkdtemp()
    >>> _ = tl.patch_pairs(model, profile, pairs, d, layers=[0, 3], progress=False)
    >>> res = tl.PatchingResult.load(d)
    >>> res.nld.shape[0], res.layers, res.column("answer_flip").shape
    (2, [0, 3], (2, 2))
    """

    pair_ids: list[str]
    site: str
    layers: list[int]
    labels: list[str]  # [n_positions] labels shared by all pairs
    positions: np.ndarray  # [n_pairs, n_positions] absolute positions
    tokens: list[list[str]]  # [n_pairs][n_positions] clean token strings
    nld: np.ndarray  # [n_pairs, n_positions, n_layers]
    patched: np.ndarray  # [n_pairs, n_positions, n_layers]
    clean: np.ndarray  # [n_pairs] clean logit difference
    corrupted: np.ndarray  # [n_pairs]
    named: list[dict[str, int]]  # per pair
    head_nld: np.ndarray | None = None  # [n_pairs, n_head_positions, n_layers, n_heads]
    head_labels: list[str] = field(default_factory=list)
    attribution: np.ndarray | None = None  # [n_pairs, n_positions, n_layers]
    attribution_spearman: np.ndarray | None = None  # [n_pairs]

    @classmethod
    def from_pairs(cls, items: list[PairPatching]) -> PatchingResult:
        if not items:
            raise ThinklensError("no patched pairs to collect")
        first = items[0]
        for it in items:
            if it.labels != first.labels or it.layers != first.layers or it.site != first.site:
                raise ThinklensError(f"pair {it.pair_id}: its position labels/layers/site differ from pair "
                                     f"{first.pair_id}'s; patch all pairs on one grid")
        heads = all(it.head_nld is not None for it in items) and len({len(it.head_labels) for it in items}) == 1
        attr = all(it.attribution is not None for it in items)
        return cls(
            pair_ids=[it.pair_id for it in items], site=first.site, layers=list(first.layers),
            labels=list(first.labels), positions=np.array([it.positions for it in items], dtype=np.int64),
            tokens=[it.tokens for it in items], nld=np.stack([_arr(it.nld) for it in items]),
            patched=np.stack([_arr(it.patched) for it in items]), clean=np.array([it.clean for it in items]),
            corrupted=np.array([it.corrupted for it in items]), named=[dict(it.named) for it in items],
            head_nld=np.stack([_arr(it.head_nld) for it in items]) if heads else None,
            head_labels=list(first.head_labels) if heads else [],
            attribution=np.stack([_arr(it.attribution) for it in items]) if attr else None,
            attribution_spearman=np.array([_arr(it.attribution_spearman).item() if it.attribution_spearman is not None
                                           else np.nan for it in items]) if attr else None,
        )

    def column(self, name: str) -> np.ndarray:
        """[n_pairs, n_layers] NLD at a named position of each pair (NaN where it is not on the grid)."""
        out = np.full((len(self.pair_ids), len(self.layers)), np.nan)
        for i, named in enumerate(self.named):
            p = named.get(name)
            hits = np.flatnonzero(self.positions[i] == p) if p is not None else []
            if len(hits):
                out[i] = self.nld[i, hits[0]]
        return out

    def save(self, directory: str | Path) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        meta = {"pair_ids": self.pair_ids, "site": self.site, "layers": self.layers, "labels": self.labels,
                "tokens": self.tokens, "named": self.named, "head_labels": self.head_labels}
        arrays = {k: getattr(self, k) for k in ("positions", "nld", "patched", "clean", "corrupted", "head_nld",
                                                "attribution", "attribution_spearman") if getattr(self, k) is not None}
        np.savez(d / "result.npz", **arrays)
        (d / "result.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1), encoding="utf-8")
        return d

    @classmethod
    def load(cls, directory: str | Path) -> PatchingResult:
        """The result :meth:`save` wrote in ``directory``, checked against the contract: ``result.json`` holds
        ``pair_ids``, ``site``, ``layers``, ``labels``, ``tokens``, ``named`` (one per pair); ``result.npz`` holds
        ``positions`` [pairs, positions], ``nld``/``patched`` [pairs, positions, layers], ``clean``/``corrupted``
        [pairs] (and optional ``head_nld``, ``attribution``, ``attribution_spearman``). Anything else is a one-line
        ThinklensError naming the file."""
        from thinklens.validate import load_npz, read_json_object

        d = Path(directory)
        if not (d / "result.json").is_file() or not (d / "result.npz").is_file():
            raise ThinklensError(f"cannot load a patching result from {d}: result.json or result.npz is missing")
        meta = read_json_object(d / "result.json", "patching result") or {}
        where = d / "result.json"
        need = {"pair_ids": list, "site": str, "layers": list, "labels": list, "tokens": list, "named": list}
        for k, kind in need.items():
            if not isinstance(meta.get(k), kind):
                raise ThinklensError(f"{where}: field {k!r} must be a {kind.__name__}, got {meta.get(k)!r:.40}")
        if not isinstance(meta.get("head_labels", []), list):
            raise ThinklensError(f"{where}: field 'head_labels' must be a list")
        n = len(meta["pair_ids"])
        arrays = load_npz(d / "result.npz", {"positions": (2, "iu"), "nld": (3, "f"), "patched": (3, "f"),
                                             "clean": (1, "f"), "corrupted": (1, "f")})
        optional = {"head_nld": 4, "attribution": 3, "attribution_spearman": 1}
        shape = (n, len(meta["labels"]), len(meta["layers"]))
        for k, a in arrays.items():
            if k not in ("positions", "nld", "patched", "clean", "corrupted") and k not in optional:
                raise ThinklensError(f"{d / 'result.npz'}: unknown array {k!r}")
            ndim = optional.get(k, a.ndim)
            want = {"positions": shape[:2], "clean": shape[:1], "corrupted": shape[:1], "nld": shape,
                    "patched": shape, "attribution": shape, "attribution_spearman": shape[:1]}.get(k)
            if a.ndim != ndim or a.dtype.kind not in "iuf" or (want is not None and a.shape != want) \
                    or (k == "head_nld" and a.shape[0] != n):
                raise ThinklensError(f"{d / 'result.npz'}: array {k!r} of shape {a.shape} does not fit the "
                                     f"{n} pairs x {shape[1]} positions x {shape[2]} layers of result.json")
        if len(meta["tokens"]) != n or len(meta["named"]) != n:
            raise ThinklensError(f"{where}: 'tokens' and 'named' must have one entry per pair ({n})")
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in meta.items() if k in known}, **arrays)

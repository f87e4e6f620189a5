"""Loading models and tokenizers: a hub id, a local directory, or an embedded organism (``tiny-r1``,
``tiny-r1-hints``).

Why a thin wrapper: every stage wants the same three things (model in eval mode, tokenizer, family profile), the
same device/dtype defaults, and one clear error when a hub id cannot be reached (this matters offline and on
clusters with a shared cache). No weights are converted: the model is the Hugging Face model itself.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from thinklens.errors import ModelLoadError, ThinklensError
from thinklens.gguf import gguf_identity, require_gguf, split_gguf
from thinklens.options import opt
from thinklens.profiles import Profile, get_profile, profile_names
from thinklens.toy import EMBEDDED_COMMANDS, EMBEDDED_DIRS

EMBEDDED = set(EMBEDDED_DIRS)  # the shipped organisms, loadable by name
DTYPES = ("fp32", "float32", "bf16", "bfloat16", "fp16", "float16", "half")


class LoadedModel(NamedTuple):
    """``(model, tokenizer, profile)`` as :func:`load_model` returns them (unpack it like a tuple)."""

    model: Any  # transformers PreTrainedModel, eval mode
    tokenizer: Any  # PreTrainedTokenizerFast
    profile: Profile


@dataclass
class ModelOptions:
    """Model: which one and where it runs.

    The flags every model-loading command shares (``--model --device --dtype --device-map --profile``)::

        >>> import thinklens as tl
        >>> model, tokenizer, profile = tl.ModelOptions("tiny-r1", device="cpu").load()
        >>> profile.name
        'tiny-r1'
    """

    name: str = opt("tiny-r1", "hub id, local directory, a .gguf file (dequantized; needs the gguf extra) or tiny-r1 "
                    "(the shipped organism)", flag="--model", metavar="MODEL")
    device: str | None = opt(None, "cpu, cuda, cuda:1 or mps (default: CUDA, then MPS, then CPU)")
    dtype: str | None = opt(None, "fp32, bf16 or fp16 (default: bf16 on CUDA, fp16 on MPS, fp32 on CPU)",
                            choices=DTYPES)
    device_map: str | None = opt(None, "spread a model over several devices: auto, balanced, sequential, or a JSON "
                                 "object / .json file of module -> device (from_pretrained's device_map); --device "
                                 "is then ignored")
    profile: str | None = opt(None, "model-family profile (default: chosen from the model id and its config)",
                              metavar="NAME")

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ThinklensError("a model is needed: pass --model (a hub id, a local directory or tiny-r1)")
        if self.dtype is not None and self.dtype not in DTYPES:
            raise ThinklensError(f"unknown dtype {self.dtype!r}; choose from {', '.join(DTYPES)}")
        if self.profile is not None and self.profile not in profile_names():
            raise ThinklensError(f"unknown profile {self.profile!r}; choose from {', '.join(profile_names())}")

    def load(self) -> LoadedModel:
        """Load the model, tokenizer and profile these options name (see :func:`load_model`)."""
        return load_model(self.name, self.device, self.dtype, device_map=self.device_map,
                          profile=get_profile(self.profile) if self.profile else None)


def resolve(name_or_path: str | os.PathLike) -> str:
    """The directory or hub id to hand to ``from_pretrained``: embedded names map into the package."""
    name = str(name_or_path)
    if name in EMBEDDED:
        where = EMBEDDED_DIRS[name]
        if not (Path(where) / "config.json").exists():
            raise ModelLoadError(
                f"the embedded model {name!r} is missing from {where}; regenerate it with "
                f"`{EMBEDDED_COMMANDS[name].replace('DIR', str(where))}`"
            )
        return str(where)
    return name


def _hub_error(name: str, err: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"cannot load {name!r}: it is not a local directory and the Hugging Face hub could not provide it "
        f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}). Download it on a machine with "
        f"network access (`huggingface-cli download {name} --local-dir DIR`) and pass --model DIR, or set HF_HOME "
        "to a cache that already holds it."
    )


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0].rstrip(".") if text else type(err).__name__


def _hub_reachable(timeout: float = 3.0) -> bool:
    """A fast connectivity probe, so an offline machine gets a clear error at once instead of minutes of retries."""
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


def hub_kwargs(name: str) -> dict[str, Any]:
    """``from_pretrained`` keyword arguments for a hub id: offline use of the local cache when the hub is
    unreachable; a :class:`ModelLoadError` naming what to do when the cache lacks the model too."""
    if Path(name).expanduser().is_dir():
        return {}
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False") or not _hub_reachable():
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return {"local_files_only": True}
        raise _hub_error(name, ConnectionError("the hub is unreachable and no cached copy exists"))
    return {}


def load_tokenizer(name_or_path: str | os.PathLike) -> Any:
    """The tokenizer of a hub id, a local directory or ``tiny-r1`` (same error handling as :func:`load_model`).

    >>> import thinklens as tl
    >>> tok = tl.load_tokenizer("tiny-r1")
    >>> tok.convert_ids_to_tokens(tok("<think>7+5=12", add_special_tokens=False)["input_ids"])[:3]
    ['<think>', '7', '+']
    """
    from transformers import AutoTokenizer

    name = resolve(name_or_path)
    gguf = split_gguf(name)
    if gguf is not None:  # the tokenizer is built from the same file
        require_gguf()
        try:
            return AutoTokenizer.from_pretrained(gguf[0], gguf_file=gguf[1])
        except (OSError, ValueError, KeyError) as err:
            raise ModelLoadError(f"cannot build a tokenizer from {name}: {_first_line(err)}") from err
    if Path(name).expanduser().is_dir():
        try:
            return AutoTokenizer.from_pretrained(str(Path(name).expanduser()))
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"cannot load a tokenizer from {name}: {_first_line(err)}") from err
    if name.startswith((".", "/", "~")):
        raise ModelLoadError(f"no such directory: {name}")
    kwargs = hub_kwargs(name)
    try:
        return AutoTokenizer.from_pretrained(name, **kwargs)
    except OSError as err:
        raise _hub_error(name, err) from err


def default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def default_dtype(device: str) -> Any:
    """bf16 on CUDA (fp16 where the GPU lacks bf16), fp16 on MPS, fp32 on CPU."""
    import torch

    kind = str(device).split(":")[0]
    if kind == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if kind == "mps":
        return torch.float16
    return torch.float32


def _dtype(dtype: Any) -> Any:
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
             "fp16": torch.float16, "float16": torch.float16, "half": torch.float16}
    if str(dtype) not in names:
        raise ModelLoadError(f"unknown dtype {dtype!r}; use one of {sorted(names)}")
    return names[str(dtype)]


def parse_device_map(device_map: str | dict | None) -> str | dict | None:
    """``--device-map`` as ``from_pretrained`` takes it: a strategy name (``auto``, ``balanced``, ``sequential``),
    a JSON object or a ``.json`` file mapping module names to devices (``{"model.layers.0": 0, "lm_head": 1}``).

    >>> parse_device_map('{"model.embed_tokens": 0, "lm_head": "cpu"}')
    {'model.embed_tokens': 0, 'lm_head': 'cpu'}
    """
    import json

    if not isinstance(device_map, str):
        return device_map
    text = device_map.strip()
    if text.endswith(".json") and Path(text).is_file():
        text = Path(text).read_text(encoding="utf-8")
    elif not text.startswith("{"):
        return text
    try:
        parsed = json.loads(text)
    except ValueError as err:
        raise ThinklensError(f"--device-map {device_map!r}: not a JSON object ({err})") from None
    if not isinstance(parsed, dict):
        raise ThinklensError(f"--device-map {device_map!r}: expected a JSON object of module name -> device")
    return parsed


def load_model(
    name_or_path: str | os.PathLike,
    device: str | None = None,
    dtype: Any = None,
    *,
    device_map: str | dict | None = None,
    attn_implementation: str = "sdpa",
    profile: Profile | None = None,
    **from_pretrained_kwargs: Any,
) -> LoadedModel:
    """Load ``(model, tokenizer, profile)``.

    ``name_or_path``: hub id, local directory or ``"tiny-r1"``. ``device``: default CUDA > MPS > CPU. ``dtype``:
    default bf16 on CUDA, fp16 on MPS, fp32 on CPU (a ``torch.dtype`` or a name such as ``"bf16"``).
    ``device_map`` is passed through (e.g. ``"auto"`` to spread a 70B model over several GPUs, or a dict / JSON
    text, :func:`parse_device_map`); then ``device`` is ignored. In a torchrun launch each rank takes GPU
    ``LOCAL_RANK``, or with ``"auto"`` its share of the node's GPUs (:mod:`thinklens.distributed`).
    ``attn_implementation`` defaults to SDPA; thinklens' attention capture works on top of it.

    >>> import thinklens as tl
    >>> model, tokenizer, profile = tl.load_model("tiny-r1", device="cpu")
    >>> type(model).__name__, model.config.num_hidden_layers, profile.think_close
    ('Qwen2ForCausalLM', 4, '</think>')
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    from thinklens import distributed

    name = resolve(name_or_path)
    local = Path(name).expanduser()
    gguf = split_gguf(name)
    if gguf is None and name.startswith((".", "/", "~")) and not local.is_dir():
        raise ModelLoadError(f"no such model directory: {name}")
    distributed.world()  # in a torchrun launch: join the process group before loading (bars on rank 0 only)
    device_map = parse_device_map(device_map)
    device = distributed.local_device(device or (None if device_map is not None else default_device()))
    torch_dtype = _dtype(dtype) or default_dtype(device or default_device())
    if gguf is not None:  # a GGUF file: transformers dequantizes it into an ordinary model
        require_gguf()
        name, local, kwargs = gguf[0], Path(gguf[0]), {"gguf_file": gguf[1], **from_pretrained_kwargs}
    else:
        kwargs = {**hub_kwargs(name), **from_pretrained_kwargs}
    placement = distributed.device_map_kwargs(device_map) if device_map is not None else {}
    try:
        config = AutoConfig.from_pretrained(name, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=torch_dtype, device_map=device_map, attn_implementation=attn_implementation,
            **{**placement, **kwargs})
    except (OSError, ValueError, KeyError) as err:
        if gguf is not None:
            raise ModelLoadError(f"cannot load the GGUF checkpoint {name_or_path}: {_first_line(err)}") from err
        if local.is_dir():
            raise ModelLoadError(f"cannot load the model in {name}: {_first_line(err)}; the directory must hold a "
                                 "transformers model (config.json + weights), e.g. from `huggingface-cli download "
                                 "MODEL --local-dir DIR`") from err
        if isinstance(err, ValueError):
            raise ModelLoadError(f"cannot load {name!r}: {_first_line(err)}") from err
        raise _hub_error(name, err) from err
    if device_map is None:
        model.to(device)
    model.eval()
    tokenizer = load_tokenizer(name_or_path if gguf is not None else name)
    if profile is None:
        key = f"{name_or_path} {gguf_identity(str(name_or_path))}" if gguf is not None else str(name_or_path)
        profile = get_profile(key, model_type=getattr(config, "model_type", None))
    return LoadedModel(model, tokenizer, profile)

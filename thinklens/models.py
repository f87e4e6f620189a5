"""Loading models and tokenizers: a hub id, a local directory, or the embedded ``tiny-r1``.

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
from thinklens.options import opt
from thinklens.profiles import Profile, get_profile, profile_names

EMBEDDED = {"tiny-r1"}
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

    name: str = opt("tiny-r1", "hub id, local directory or tiny-r1 (the shipped organism)", flag="--model",
                    metavar="MODEL")
    device: str | None = opt(None, "cpu, cuda, cuda:1 or mps (default: CUDA, then MPS, then CPU)")
    dtype: str | None = opt(None, "fp32, bf16 or fp16 (default: bf16 on CUDA, fp16 on MPS, fp32 on CPU)",
                            choices=DTYPES)
    device_map: str | None = opt(None, "spread a model over several devices (from_pretrained's device_map, e.g. "
                                 "auto); --device is then ignored")
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
        from thinklens.toy import TINY_R1_DIR

        if not (Path(TINY_R1_DIR) / "config.json").exists():
            raise ModelLoadError(
                f"the embedded model {name!r} is missing from {TINY_R1_DIR}; regenerate it with "
                f"`thinklens train-toy --output {TINY_R1_DIR}`"
            )
        return str(TINY_R1_DIR)
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
    ``device_map`` is passed through (e.g. ``"auto"`` to spread a 70B model over several GPUs); then ``device`` is
    ignored. ``attn_implementation`` defaults to SDPA; thinklens' attention capture works on top of it.

    >>> import thinklens as tl
    >>> model, tokenizer, profile = tl.load_model("tiny-r1", device="cpu")
    >>> type(model).__name__, model.config.num_hidden_layers, profile.think_close
    ('Qwen2ForCausalLM', 4, '</think>')
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    name = resolve(name_or_path)
    local = Path(name).expanduser()
    if name.startswith((".", "/", "~")) and not local.is_dir():
        raise ModelLoadError(f"no such model directory: {name}")
    device = device or (None if device_map is not None else default_device())
    torch_dtype = _dtype(dtype) or default_dtype(device or "cuda")
    kwargs = {**hub_kwargs(name), **from_pretrained_kwargs}
    try:
        config = AutoConfig.from_pretrained(name, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            name, dtype=torch_dtype, device_map=device_map, attn_implementation=attn_implementation, **kwargs
        )
    except (OSError, ValueError) as err:
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
    tokenizer = load_tokenizer(name)
    if profile is None:
        profile = get_profile(str(name_or_path), model_type=getattr(config, "model_type", None))
    return LoadedModel(model, tokenizer, profile)

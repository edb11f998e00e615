"""seas.data.dataset_manifest: every file of a product's tree with size and sha256; hashes reused by (size, mtime)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from helpers import write_tree
from seas.data import dataset_manifest as dm
from seas.data.split import Split, build_split, with_hashes
from seas.run.errors import DataError


def _old(path: Path, seconds: int = 100) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns - seconds * 10**9))


def test_scan_lists_every_file_with_size_and_sha256(tmp_path):
    root = write_tree(tmp_path, {"bottle": ["crack"]}, n_per_type=2)
    (root / "bottle" / "notes.txt").write_text("x")
    (root / "bottle" / ".tmp123").write_text("temporary")
    m = dm.scan(root / "bottle")
    files = m["files"]
    assert len(files) == 2 + 1 + 2 + 2 + 1 and not any(".tmp" in k for k in files)
    mask = str((root / "bottle" / "ground_truth" / "crack" / "000_mask.png").resolve())
    assert files[mask]["sha256"] == hashlib.sha256(Path(mask).read_bytes()).hexdigest()
    assert dm.to_json(m) == dm.to_json(dm.scan(root / "bottle"))


def test_scan_rehashes_only_changed_files(tmp_path, monkeypatch):
    root = write_tree(tmp_path, {"bottle": ["crack"]})
    for p in (root / "bottle").rglob("*.png"):
        _old(p)
    out = tmp_path / "m.json"
    out.write_text(dm.to_json(dm.scan(root / "bottle")))
    hashed = []
    real = dm.sha256_file
    monkeypatch.setattr(dm, "sha256_file", lambda p: hashed.append(Path(p).name) or real(p))
    again = dm.scan(root / "bottle", previous=dm.load_manifest(out))
    assert hashed == [] and dm.to_json(again) == out.read_text()
    edited = root / "bottle" / "test" / "crack" / "001.png"
    edited.write_bytes(edited.read_bytes() + b"\0")
    _old(edited, 50)
    third = dm.scan(root / "bottle", previous=dm.load_manifest(out))
    assert hashed == ["001.png"]
    assert third["files"][str(edited.resolve())]["sha256"] == hashlib.sha256(edited.read_bytes()).hexdigest()


def test_racy_and_damaged_caches_are_not_trusted(tmp_path, monkeypatch):
    root = write_tree(tmp_path, {"bottle": ["crack"]})
    out = tmp_path / "m.json"
    out.write_text(dm.to_json(dm.scan(root / "bottle")))  # files written just now: within RACY_NS of the manifest
    hashed = []
    real = dm.sha256_file
    monkeypatch.setattr(dm, "sha256_file", lambda p: hashed.append(p) or real(p))
    dm.scan(root / "bottle", previous=dm.load_manifest(out))
    assert len(hashed) == 9  # every file of the tree
    out.write_text("{not json")
    assert dm.load_manifest(out) is None


def test_missing_folder_is_a_named_error(tmp_path):
    with pytest.raises(DataError, match="nope"):
        dm.scan(tmp_path / "nope")


def test_split_records_the_hash_of_every_selected_file(tmp_path):
    root = write_tree(tmp_path, {"bottle": ["crack"]})
    split = with_hashes(build_split(root, "bottle", num_normal=1))
    assert set(split.sha256) == set(split.files()) and len(split.files()) == 2 + 2 + 2 * 2 + 1  # every train/good (the segmenters read them all), 1 training pair, 2 test pairs, 1 test good
    for path, sha in split.sha256.items():
        assert sha == hashlib.sha256(Path(path).read_bytes()).hexdigest()
    out = split.save(tmp_path / "s.json")
    assert Split.load(out).sha256 == split.sha256
    assert dm.selection_digest(split.sha256) == dm.selection_digest(dict(reversed(split.sha256.items())))

"""The generated-pairs layout: writing, reading, validation errors."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seas.data.pairs import MANIFEST, Pair, count_pairs, iter_pairs, read_manifest, save_pair, write_manifest
from seas.run.errors import DataError


def _img(size=(16, 16), value=100) -> Image.Image:
    return Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8))


def _mask(size=(16, 16), box=(2, 2, 6, 6)) -> np.ndarray:
    m = np.zeros((size[1], size[0]), np.uint8)
    m[box[1]:box[3], box[0]:box[2]] = 1
    return m


def _write_type(type_dir: Path, n: int, manifest: bool = True) -> list[Path]:
    rows, imgs = [], []
    for i in range(n):
        ip, mp = save_pair(type_dir, i, _img(value=10 * i), _mask())
        rows.append({"index": i, "image": ip, "mask": mp, "seed": 7 + i, "reference": "ref.png", "type": type_dir.name,
                     "variant": "x"})
        imgs.append(ip)
    if manifest:
        write_manifest(type_dir, rows)
    return imgs


def test_roundtrip_with_manifest(tmp_path):
    root = tmp_path / "methods" / "m"
    _write_type(root / "prodA" / "crack", 3)
    _write_type(root / "prodA" / "good", 1)
    _write_type(root / "prodB" / "stain", 2)
    pairs = iter_pairs(root, ["prodA", "prodB"])
    assert [(p.product, p.type) for p in pairs] == [("prodA", "crack")] * 3 + [("prodA", "good")] + [("prodB", "stain")] * 2
    assert all(isinstance(p, Pair) and Path(p.image).is_absolute() and Path(p.mask).is_file() for p in pairs)
    assert count_pairs(pairs) == {("prodA", "crack"): 3, ("prodA", "good"): 1, ("prodB", "stain"): 2}
    # manifest stores paths relative to the type folder, keeps extra columns, and reads back absolute
    with open(root / "prodA" / "crack" / MANIFEST) as f:
        rows = list(csv.DictReader(f))
    assert rows[0]["image"] == "images/000000.png" and rows[0]["mask"] == "masks/000000.png"
    assert list(rows[0])[:6] == ["index", "image", "mask", "seed", "reference", "type"] and rows[1]["seed"] == "8"
    assert rows[2]["variant"] == "x"
    back = read_manifest(root / "prodA" / "crack")
    assert back[1]["image"] == str((root / "prodA" / "crack" / "images" / "000001.png").resolve())
    # only the asked products
    assert {p.product for p in iter_pairs(root, ["prodB"])} == {"prodB"}


def test_mask_written_as_0_255_single_channel(tmp_path):
    _, mp = save_pair(tmp_path / "t", 5, _img(), _mask())
    assert mp.name == "000005.png"
    m = Image.open(mp)
    assert m.mode == "L"
    arr = np.asarray(m)
    assert set(np.unique(arr).tolist()) == {0, 255} and (arr > 0).sum() == 16


def test_external_layout_without_manifest(tmp_path):
    root = tmp_path / "ext"
    t = root / "p" / "scratch"
    (t / "images").mkdir(parents=True)
    (t / "masks").mkdir()
    _img().save(t / "images" / "a.jpg")
    Image.fromarray(_mask() * 255).save(t / "masks" / "a.png")
    pairs = iter_pairs(root, ["p"])
    assert len(pairs) == 1 and pairs[0].image.endswith("a.jpg") and pairs[0].mask.endswith("a.png")


def test_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        iter_pairs(tmp_path / "nope", ["p"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty"):
        iter_pairs(empty, ["p"])

    root = tmp_path / "m"
    _write_type(root / "p" / "crack", 2)
    with pytest.raises(DataError, match="product 'q' missing"):
        iter_pairs(root, ["p", "q"])
    (root / "r").mkdir()
    with pytest.raises(DataError, match="no image/mask pairs"):
        iter_pairs(root, ["r"])

    # image without mask (no manifest)
    t = root / "s" / "hole"
    _write_type(t, 2, manifest=False)
    (t / "masks" / "000001.png").unlink()
    with pytest.raises(DataError, match="000001.png: image without mask"):
        iter_pairs(root, ["s"])
    # with a manifest that lists a missing mask
    (root / "p" / "crack" / "masks" / "000000.png").unlink()
    with pytest.raises(DataError, match="has no mask"):
        iter_pairs(root, ["p"])


def test_size_mismatch(tmp_path):
    root = tmp_path / "m"
    _write_type(root / "p" / "crack", 2)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "p" / "crack" / "masks" / "000001.png")
    with pytest.raises(DataError, match=r"000001.png: mask size \(8, 8\) differs from image size \(16, 16\)"):
        iter_pairs(root, ["p"])
    assert len(iter_pairs(root, ["p"], check_sizes=False)) == 2
    with pytest.raises(DataError, match="differs from image size"):
        save_pair(tmp_path / "t", 0, _img((16, 16)), _mask((8, 8)))


def test_external_folder_mask_without_image_and_stray_files(tmp_path):
    root = tmp_path / "ext"
    t = root / "p" / "scratch"
    _write_type(t, 2, manifest=False)
    # macOS litter beside the pairs is not a pair
    (t / "images" / "._000000.png").write_bytes(b"\0\5\26\7 resource fork")
    (t / "masks" / ".DS_Store").write_bytes(b"\0")
    assert len(iter_pairs(root, ["p"])) == 2
    # an extra mask with no image is refused naming it, like an image without mask
    Image.fromarray(_mask() * 255).save(t / "masks" / "000007.png")
    with pytest.raises(DataError, match=r"scratch/masks/000007.png: mask without image \(expected .*images/000007.png\)"):
        iter_pairs(root, ["p"])
    Image.fromarray(_mask() * 255).save(t / "masks" / "000008.png")
    with pytest.raises(DataError, match=r"000007.png: mask without image \(and 1 more\)"):
        iter_pairs(root, ["p"])


def test_unreadable_or_huge_pair_file_named(tmp_path):
    from test_split import _png_header_only

    root = tmp_path / "ext"
    t = root / "p" / "scratch"
    _write_type(t, 2, manifest=False)
    _png_header_only(t / "masks" / "000001.png", 15000, 15000)
    with pytest.raises(DataError, match=r"image .*scratch/masks/000001.png is too large to decode safely"):
        iter_pairs(root, ["p"])
    (t / "masks" / "000001.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"cannot read image .*scratch/masks/000001.png"):
        iter_pairs(root, ["p"])

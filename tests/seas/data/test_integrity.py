"""Integrity checks before a stage starts (issue 25, item 6): each kind of damage is one DataError /
CheckpointError naming the file and what is wrong; intact files pass."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seas.data.integrity import (check_checkpoint_dir, check_csv, check_files, check_image, check_json, check_mask,
                                 check_pairs, check_pairs_manifest, check_safetensors, output_damage)
from seas.data.pairs import iter_pairs, read_manifest, save_pair, write_manifest
from seas.run.errors import CheckpointError, DataError


def _noise(h=32, w=48, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _mask(h=32, w=48) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    m[4:12, 6:20] = 255
    return m


def _truncate(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _safetensors(path: Path, tensors: dict[str, np.ndarray]) -> Path:
    """A safetensors file written by the format's layout (8-byte header length, JSON header, raw data)."""
    header, blobs, offset = {"__metadata__": {"k": "v"}}, [], 0
    for name, arr in tensors.items():
        raw = np.ascontiguousarray(arr, np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + b"".join(blobs))
    return path


# ----------------------------------------------------------------------------- images and masks
@pytest.mark.parametrize("suffix", [".png", ".jpg", ".bmp"])
def test_truncated_image_is_named_and_intact_one_passes(tmp_path, suffix):
    path = tmp_path / f"img{suffix}"
    Image.fromarray(_noise()).save(path)
    check_image(path)
    assert check_files([path, None], "image") == 1
    with Image.open(path) as im:  # the damage a header read alone does not see
        im.size
    _truncate(path)
    with Image.open(path) as im:
        assert im.size == (48, 32)
    with pytest.raises(DataError, match=rf"{path.name}.*truncated or damaged (PNG|JPEG|BMP)"):
        check_image(path)
    with pytest.raises(DataError, match=path.name):
        check_files([path], "image")


def test_png_cut_after_the_image_data_and_recorded_size(tmp_path):
    """A PNG missing only its IEND chunk, and a complete file of another size than the manifest recorded."""
    path = tmp_path / "a.png"
    Image.fromarray(_noise()).save(path)
    full = path.read_bytes()
    path.write_bytes(full[:-12])  # IEND gone: the pixels still decode
    with pytest.raises(DataError, match="a.png: truncated or damaged PNG"):
        check_image(path)
    path.write_bytes(full)
    check_image(path, expected=len(full))
    with pytest.raises(DataError, match=rf"a.png: {len(full)} bytes, but {len(full) + 5} were written"):
        check_image(path, expected=len(full) + 5)


def test_not_an_image_and_missing_file(tmp_path):
    bad = tmp_path / "x.png"
    bad.write_bytes(b"hello")
    with pytest.raises(DataError, match="x.png: unreadable image"):
        check_image(bad)
    with pytest.raises(DataError, match="nope.png: file does not exist"):
        check_image(tmp_path / "nope.png")


def test_grey_mask_wrong_size_mask_and_binary_ones(tmp_path):
    img = tmp_path / "img.png"
    Image.fromarray(_noise()).save(img)
    good = tmp_path / "good.png"
    Image.fromarray(_mask()).save(good)
    check_mask(good, img)
    ones = tmp_path / "ones.png"
    Image.fromarray((_mask() > 0).astype(np.uint8)).save(ones)  # 0/1: the readers' contract allows it
    check_mask(ones, img)
    grey = tmp_path / "grey.png"
    m = _mask()
    m[20:24, 30:34] = 128  # an anti-aliased edge: not binary
    Image.fromarray(m).save(grey)
    with pytest.raises(DataError, match=r"grey.png is not binary: values \{0, 128, 255\}"):
        check_mask(grey, img)
    small = tmp_path / "small.png"
    Image.fromarray(_mask(16, 48)).save(small)
    with pytest.raises(DataError, match=r"small.png: mask size 48x16 differs from its image .*img.png \(48x32\)"):
        check_mask(small, img)
    with pytest.raises(DataError, match="grey.png"):  # the first bad file of many
        check_files([good, ones, grey, small], "mask")


def test_check_pairs_names_the_first_bad_file_and_uses_the_recorded_sizes(tmp_path):
    type_dir = tmp_path / "m" / "prod" / "crack"
    rows = []
    for i in range(3):
        ip, mp = save_pair(type_dir, i, Image.fromarray(_noise(seed=i)), _mask() > 0)
        rows.append({"index": i, "image": ip, "mask": mp, "seed": i, "reference": "", "type": "crack"})
    write_manifest(type_dir, rows)
    manifest = read_manifest(type_dir)
    assert int(manifest[1]["image_bytes"]) == (type_dir / "images" / "000001.png").stat().st_size
    assert int(manifest[1]["mask_bytes"]) == (type_dir / "masks" / "000001.png").stat().st_size
    pairs = iter_pairs(tmp_path / "m", ["prod"])
    assert pairs[0].image_bytes == int(manifest[0]["image_bytes"])
    assert check_pairs(pairs) == 3 and check_pairs_manifest(type_dir) == 3
    assert output_damage(type_dir / "manifest.csv") is None and output_damage(tmp_path / "m") is None
    # the same header, fewer bytes: found by the size alone (a stat), and named
    victim = type_dir / "images" / "000001.png"
    _truncate(victim, 0.9)
    with pytest.raises(DataError, match=r"000001.png: \d+ bytes, but \d+ were written"):
        check_pairs(pairs)
    with pytest.raises(DataError, match="images/000001.png"):
        check_pairs_manifest(type_dir)
    assert "images/000001.png" in output_damage(type_dir / "manifest.csv")
    assert "images/000001.png" in output_damage(tmp_path / "m")
    # a mask all zero for a normal item (None) is not read
    assert check_pairs([(str(type_dir / "images" / "000000.png"), None)]) == 1


# ----------------------------------------------------------------------------- weights, JSON, CSV
def test_safetensors_header_against_the_file_length(tmp_path):
    path = _safetensors(tmp_path / "model.safetensors", {"w": np.ones((4, 5)), "b": np.zeros(3)})
    header = check_safetensors(path)
    assert set(header) == {"__metadata__", "w", "b"}
    # the library reads what we check (the writer above is the format)
    from safetensors.numpy import load_file

    assert load_file(str(path))["w"].shape == (4, 5)
    full = path.read_bytes()
    path.write_bytes(full[:-7])
    with pytest.raises(CheckpointError, match=r"model.safetensors: truncated safetensors file: the header describes"):
        check_safetensors(path)
    path.write_bytes(full[:5])
    with pytest.raises(CheckpointError, match="model.safetensors: truncated safetensors file"):
        check_safetensors(path)
    path.write_bytes(full[:8] + b"{not json" + full[17:])
    with pytest.raises(CheckpointError, match="model.safetensors: damaged safetensors header"):
        check_safetensors(path)
    path.write_bytes(full + b"extra")
    with pytest.raises(CheckpointError, match="damaged safetensors file"):
        check_safetensors(path)
    assert "model.safetensors" in output_damage(path)


def test_checkpoint_folder(tmp_path):
    ckpt = tmp_path / "ckpt"
    (ckpt / "unet").mkdir(parents=True)
    _safetensors(ckpt / "unet" / "diffusion_pytorch_model.safetensors", {"w": np.ones(8)})
    (ckpt / "unet" / "config.json").write_text("{}")
    (ckpt / "tokens.json").write_text('{"product": "p"}')
    assert check_checkpoint_dir(ckpt, required=["tokens.json"]) == 3
    with pytest.raises(CheckpointError, match="rmp.json: missing"):
        check_checkpoint_dir(ckpt, required=["rmp.json"])
    (ckpt / "tokens.json").write_text('{"product": ')
    with pytest.raises(CheckpointError, match="tokens.json: not valid JSON"):
        check_checkpoint_dir(ckpt)
    assert "tokens.json" in output_damage(ckpt)


def test_bad_json_and_split_manifest(tmp_path):
    path = tmp_path / "split.json"
    path.write_text('{"product": "p", "version": 2')
    with pytest.raises(DataError, match="split.json: not valid JSON"):
        check_json(path)
    path.write_text("[1, 2]")
    with pytest.raises(DataError, match="split.json: expected a JSON object"):
        check_json(path)
    path.write_text('{"product": "p"}')
    assert check_json(path, required=["product"]) == {"product": "p"}
    with pytest.raises(DataError, match="split.json: lacks key.s. test"):
        check_json(path, required=["product", "test"])
    assert "split.json" in output_damage(path, kind="split")  # the split's own schema (Split.load)
    assert output_damage(tmp_path / "absent.json", kind="split") is None  # missing: Snakemake plans it


def test_bad_scores_csv(tmp_path):
    path = tmp_path / "scores.csv"
    text = "product,pixel_auroc,n_images\nweave,91.5,12\nmean,91.5,12\n"
    path.write_text(text)
    kw = dict(columns=["product", "pixel_auroc"], numeric=["pixel_auroc"], last_row={"product": "mean"})
    assert [r["product"] for r in check_csv(path, **kw)] == ["weave", "mean"]
    path.write_text(text[:-8])  # cut inside the last row
    with pytest.raises(DataError, match=r"scores.csv, line 3: 2 field\(s\), the header has 3"):
        check_csv(path, **kw)
    path.write_text(text.rsplit("mean", 1)[0])  # cut at a line end: the mean row is gone
    with pytest.raises(DataError, match="scores.csv: the last row is not the expected"):
        check_csv(path, **kw)
    path.write_text(text.replace("91.5,12\nmean", "high,12\nmean"))
    with pytest.raises(DataError, match="scores.csv, line 2: column pixel_auroc is not a number: 'high'"):
        check_csv(path, **kw)
    path.write_text("product,n_images\n")
    with pytest.raises(DataError, match="scores.csv: lacks column.s. pixel_auroc"):
        check_csv(path, **kw)
    path.write_text("")
    with pytest.raises(DataError, match="scores.csv: empty CSV file"):
        check_csv(path, **kw)
    assert "scores.csv" in output_damage(path, kind="csv", **kw)


def test_an_images_only_manifest_is_intact(tmp_path):
    """A generation-only method's import lists images without masks: intact, while a truncated image still is not."""
    from seas.data.integrity import check_pairs_manifest, output_damage

    (tmp_path / "images").mkdir()
    img = tmp_path / "images" / "000000.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(img)
    write_manifest(tmp_path, [{"index": 0, "image": str(img), "mask": "", "seed": "", "reference": "", "type": "t"}])
    assert check_pairs_manifest(tmp_path) == 1 and output_damage(tmp_path / "manifest.csv") is None
    img.write_bytes(img.read_bytes()[:-10])
    assert str(img) in output_damage(tmp_path / "manifest.csv")

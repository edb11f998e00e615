"""The peers' layouts (seas.data.peers) and their import (seas.data.import_pairs), issue 21 item 1.

Each tree below is built the way the peer's own generating script writes it (file names, formats, extra folders):
SeaS ``models/seas_infer.py``, AnomalyDiffusion ``generate_with_mask.py``, MAGIC ``inference.py``, DFMGAN
``generate.py``. Every pair encodes its number twice, independently: the image's grey level (20 + 10 i) and the
position of the mask's 6x6 square (inside block (i mod 4, i div 4) of a 32x32 image). An import that paired images with
masks by sorted position instead of by name (``10.jpg`` sorts before ``2.jpg``) would mix the two; the known
answer is checked on every imported pair.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seas.data import peers
from seas.data.import_pairs import import_product, import_size, main as import_main
from seas.data.pairs import iter_pairs
from seas.run.config import validate_config
from seas.run.errors import ConfigError, DataError
from seas.run.labels import external_options, external_path, method_dir, method_label

N = 11  # 0..10: natural and lexical order differ
SIDE = 32


def _image(i: int, side: int = SIDE) -> np.ndarray:
    return np.full((side, side, 3), 20 + 10 * i, np.uint8)


def _mask(i: int, side: int = SIDE) -> np.ndarray:
    m = np.zeros((side, side), np.uint8)
    b = side // 4
    y, x = b * (i // 4), b * (i % 4)
    m[y + b // 8:y + b - b // 8, x + b // 8:x + b - b // 8] = 255  # not on JPEG's 8x8 blocks: artefacts
    return m


def _rgb(m: np.ndarray) -> np.ndarray:
    return np.repeat(m[..., None], 3, axis=2)


def _save(arr: np.ndarray, path: Path, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def _decode(image: str, mask: str) -> tuple[int, int]:
    """(i from the image's grey level, i from the mask's square) of an imported pair."""
    g = float(np.asarray(Image.open(image).convert("L")).mean())
    m = np.asarray(Image.open(mask))
    assert m.ndim == 2 and set(np.unique(m)) <= {0, 255}, f"{mask}: not a single-channel 0/255 mask"
    ys, xs = np.nonzero(m)
    b = m.shape[0] // 4
    return round((g - 20) / 10), int(ys.min() // b) * 4 + int(xs.min() // b)


# ----------------------------------------------------------------------------- the peers' trees
def seas_tree(root: Path, product="bottle", atype="broken_large", n=N) -> Path:
    """HUST-SLOW/SeaS models/seas_infer.py: <output_dir>/image/{num:03}.png, mask/{num:03}.png (L, 0/255)."""
    for i in range(n):
        _save(_image(i), root / product / atype / "image" / f"{i:03}.png")
        _save(_mask(i), root / product / atype / "mask" / f"{i:03}.png")
    return root


def ad_tree(root: Path, product="capsule", atype="crack", n=N) -> Path:
    """sjtuplayer/anomalydiffusion generate_with_mask.py: generated_dataset/<sample>/<anomaly>/{image,mask,ori,
    recon,image-mask}/%d.jpg, every file a torchvision save_image JPEG (the 1-channel mask saved as 3 channels)."""
    t = root / product / atype
    for i in range(n):
        _save(_image(i), t / "image" / f"{i}.jpg")
        _save(_rgb(_mask(i)), t / "mask" / f"{i}.jpg")
        _save(np.full((SIDE, SIDE, 3), 200, np.uint8), t / "ori" / f"{i}.jpg")
        _save(_image(i), t / "recon" / f"{i}.jpg")
        grid = np.zeros((SIDE + 4, 2 * SIDE + 6, 3), np.uint8)  # make_grid of 2: padding 2
        _save(grid, t / "image-mask" / f"{i}.jpg")
    return root


def magic_tree(root: Path, product="screw", atype="scratch_head", n=N,
               setting="noise_1.0_anomaly_0.0_0.6_dynamic_20_align") -> Path:
    """yukichou/diffusion_anomaly inference.py: <output_name>/<setting>/<category>/<defect>/{image,normal,masks,
    debug_mask}/<idx>.jpg (the mask converted to RGB, JPEG); debug_mask/ holds <idx>_*.png."""
    t = root / setting / product / atype
    for i in range(n):
        _save(_image(i), t / "image" / f"{i}.jpg")
        _save(np.full((SIDE, SIDE, 3), 180, np.uint8), t / "normal" / f"{i}.jpg")
        _save(_rgb(_mask(i)), t / "masks" / f"{i}.jpg")
        _save(_mask(i), t / "debug_mask" / f"{i}_final_mask.png")
        _save(_mask(i), t / "debug_mask" / f"{i}_obj_mask.png")
    return root


def dfmgan_tree(root: Path, product="metal_nut", atype="color", n=N, side=SIDE) -> Path:
    """Ldhlwh/DFMGAN generate.py --gen-mask --gen-good: <output>/%d_img.png, %d_mask.png (RGB 0/255), %d_good.png;
    one output folder per generator, <product>_<type> as its README names it."""
    t = root / f"{product}_{atype}"
    for i in range(n):
        _save(_image(i, side), t / f"{i}_img.png")
        _save(_rgb(_mask(i, side)), t / f"{i}_mask.png")
        _save(np.full((side, side, 3), 150, np.uint8), t / f"{i}_good.png")
    return root


def ours_tree(root: Path, product="carpet", atype="hole", n=N) -> Path:
    from seas.data.pairs import save_pair, write_manifest

    t = root / product / atype
    rows = []
    for i in range(n):
        ip, mp = save_pair(t, i, Image.fromarray(_image(i)), _mask(i))
        rows.append({"index": i, "image": ip, "mask": mp, "type": atype})
    write_manifest(t, rows)
    return root


@pytest.fixture
def cfg():
    return validate_config({"dataset": {"name": "custom", "root": "/nonexistent"}, "model": {"pretrained": "tiny"},
                            "downstream": {"image_size": SIDE}, "gen_metrics": {"image_size": SIDE}})


def _check_import(out: Path, atype: str, n: int = N) -> list[dict]:
    pairs = [p for p in iter_pairs(out.parent, [out.name]) if p.type == atype]
    assert len(pairs) == n
    for k, p in enumerate(pairs):
        assert _decode(p.image, p.mask) == (k, k), f"pair {k} mixed up: {p}"
    with open(out / atype / "manifest.csv", newline="") as f:
        return list(csv.DictReader(f))


# ----------------------------------------------------------------------------- each layout: detect + import
@pytest.mark.parametrize("fmt,build,product,atype,names", [
    ("seas", seas_tree, "bottle", "broken_large", [f"{i:03}" for i in range(N)]),
    ("anomalydiffusion", ad_tree, "capsule", "crack", [str(i) for i in range(N)]),
    ("magic", magic_tree, "screw", "scratch_head", [str(i) for i in range(N)]),
    ("dfmgan", dfmgan_tree, "metal_nut", "color", [str(i) for i in range(N)]),
    ("ours", ours_tree, "carpet", "hole", [f"{i:06d}" for i in range(N)]),
])
def test_each_layout_is_detected_and_imported_by_name(fmt, build, product, atype, names, tmp_path, cfg):
    root = build(tmp_path / "src")
    assert peers.detect_format(root) == fmt
    out = tmp_path / "imported" / product
    for spec in (f"external:{root}", f"external:{root}?format={fmt}"):  # detected, and declared
        records = import_product(cfg, spec, product, out, types=[atype])
        assert [r["type"] for r in records] == [atype]
        rec = json.loads((out / atype / "import.json").read_text())
        assert rec["format"] == fmt and rec["count"] == N and rec["native_size"] == [SIDE, SIDE]
        assert rec["mask_threshold"] == 0.5 and rec["image_size"] == SIDE
        assert [s["name"] for s in rec["source_files"]] == names  # the source's number order, not lexical
        rows = _check_import(out, atype)
        assert [r["source_name"] for r in rows] == names
        jpeg_masks = fmt in ("anomalydiffusion", "magic")
        # JPEG masks carry artefacts: every one is binarised and counted; PNG masks are taken as they are
        assert rec["nonbinary_masks"] == (N if jpeg_masks else 0)
        assert {r["mask_binary"] for r in rows} == {"0" if jpeg_masks else "1"}
        # the source normal, where the layout ships one, is the pair's reference (references/ + normal_twin)
        ships_normal = fmt in ("anomalydiffusion", "magic", "dfmgan")
        assert rec["references"] is ships_normal
        if ships_normal:
            assert all((out / atype / r["normal_twin"]).is_file() for r in rows)
            assert all(r["source_normal"] for r in rows)


def test_jpeg_masks_have_artefacts_and_binarise_to_the_known_mask(tmp_path):
    root = ad_tree(tmp_path / "src", n=3)
    path = root / "capsule" / "crack" / "mask" / "2.jpg"
    raw = np.asarray(Image.open(path))
    assert raw.ndim == 3 and raw.shape[2] == 3  # 3 channels, as torchvision's save_image writes a 1-channel mask
    assert len(np.unique(raw)) > 2  # compression artefacts: not binary
    arr, binary = peers.read_mask(path, 0.5)
    assert not binary and np.array_equal(arr, (_mask(2) > 0).astype(np.uint8))


def test_threshold_is_configurable_per_method_and_by_default_key(tmp_path, cfg):
    root = seas_tree(tmp_path / "src", n=2)
    m = np.zeros((SIDE, SIDE), np.uint8)
    m[:8, :8], m[8:16, :8] = 255, 100  # not binary: 0, 100, 255
    _save(m, root / "bottle" / "broken_large" / "mask" / "001.png")
    out = tmp_path / "imp" / "bottle"
    import_product(cfg, f"external:{root}", "bottle", out)
    rec = json.loads((out / "broken_large" / "import.json").read_text())
    assert rec["nonbinary_masks"] == 1 and rec["mask_threshold"] == 0.5
    assert int(np.asarray(Image.open(out / "broken_large" / "masks" / "000001.png")).astype(bool).sum()) == 64
    import_product(cfg, f"external:{root}?mask_threshold=0.25", "bottle", out)
    assert json.loads((out / "broken_large" / "import.json").read_text())["mask_threshold"] == 0.25
    assert int(np.asarray(Image.open(out / "broken_large" / "masks" / "000001.png")).astype(bool).sum()) == 128
    cfg["downstream"]["external_mask_threshold"] = 0.3
    import_product(cfg, f"external:{root}", "bottle", out)
    assert json.loads((out / "broken_large" / "import.json").read_text())["mask_threshold"] == 0.3


def test_resized_to_the_import_size_like_our_pairs(tmp_path, cfg):
    root = dfmgan_tree(tmp_path / "src", n=5, side=64)  # native 64 px -> the run's 32
    out = tmp_path / "imp" / "metal_nut"
    rec = import_product(cfg, f"external:{root}", "metal_nut", out)[0]
    assert rec["native_size"] == [64, 64] and rec["image_size"] == import_size(cfg) == SIDE
    _check_import(out, "color", 5)
    assert Image.open(out / "color" / "images" / "000000.png").size == (SIDE, SIDE)


def test_magic_setting_folder_must_be_unique(tmp_path, cfg):
    root = magic_tree(tmp_path / "src", n=2)
    magic_tree(root, n=2, setting="noise_1.0_anomaly_0.0_0.6_dynamic_20_no_align")
    with pytest.raises(DataError, match="several folders hold product 'screw'"):
        import_product(cfg, f"external:{root}", "screw", tmp_path / "out" / "screw")
    one = root / "noise_1.0_anomaly_0.0_0.6_dynamic_20_align"
    assert import_product(cfg, f"external:{one}", "screw", tmp_path / "out" / "screw")[0]["count"] == 2


# ----------------------------------------------------------------------------- refused, naming the file
def test_missing_mask_is_refused_naming_the_image(tmp_path, cfg):
    root = ad_tree(tmp_path / "src")
    (root / "capsule" / "crack" / "mask" / "7.jpg").unlink()
    with pytest.raises(DataError, match=r"image/7\.jpg: image without mask"):
        peers.read_product(root, "capsule")
    with pytest.raises(DataError, match=r"7\.jpg: image without mask"):
        import_product(cfg, f"external:{root}", "capsule", tmp_path / "out" / "capsule")
    assert not (tmp_path / "out" / "capsule").exists()  # nothing half-written


def test_orphan_mask_is_refused(tmp_path):
    root = dfmgan_tree(tmp_path / "src", n=3)
    (root / "metal_nut_color" / "1_img.png").unlink()
    with pytest.raises(DataError, match=r"1_mask\.png: mask without image"):
        peers.read_product(root, "metal_nut")


def test_wrong_size_mask_is_refused_naming_it(tmp_path, cfg):
    root = seas_tree(tmp_path / "src", n=3)
    _save(np.zeros((16, 16), np.uint8), root / "bottle" / "broken_large" / "mask" / "002.png")
    with pytest.raises(DataError, match=r"mask/002\.png: mask size \(16, 16\) differs from image size \(32, 32\)"):
        import_product(cfg, f"external:{root}", "bottle", tmp_path / "out" / "bottle")


def test_truncated_image_is_refused_naming_it(tmp_path, cfg):
    root = magic_tree(tmp_path / "src", n=3)
    img = root / "noise_1.0_anomaly_0.0_0.6_dynamic_20_align" / "screw" / "scratch_head" / "image" / "1.jpg"
    img.write_bytes(img.read_bytes()[: len(img.read_bytes()) // 2])  # a half-copied file
    with pytest.raises(DataError, match=r"image/1\.jpg"):
        import_product(cfg, f"external:{root}", "screw", tmp_path / "out" / "screw")


def test_unknown_type_and_mixed_layouts_are_refused(tmp_path, cfg):
    root = seas_tree(tmp_path / "src", n=2)
    with pytest.raises(DataError, match="'broken_large' is not an anomaly type of 'bottle'"):
        peers.read_product(root, "bottle", types=["contamination"])
    ad_tree(root, product="capsule", n=2)
    with pytest.raises(DataError, match="mixes layouts"):
        peers.detect_format(root)
    with pytest.raises(DataError, match="no layout recognised"):
        peers.detect_format((tmp_path / "empty").mkdir() or tmp_path / "empty")


def test_images_only_for_generation_only_methods(tmp_path, cfg):
    root = tmp_path / "cdc"
    for i in range(3):
        _save(_image(i), root / "bottle" / "broken_large" / f"{i}.png")
    assert peers.detect_format(root) == "images"
    with pytest.raises(DataError, match="downstream.generation_only"):
        import_product(cfg, f"external:{root}", "bottle", tmp_path / "out" / "bottle")
    rec = import_product(cfg, f"external:{root}", "bottle", tmp_path / "out" / "bottle", images_only=True)[0]
    assert rec["count"] == 3 and rec["images_only"] and rec["mask_threshold"] is None
    assert sorted(p.name for p in (tmp_path / "out" / "bottle" / "broken_large" / "images").iterdir()) == \
        [f"{i:06d}.png" for i in range(3)]
    # a folder with masks, read for a generation-only method: images only (no masks, no references)
    ad = ad_tree(tmp_path / "ad", n=2)
    rec = import_product(cfg, f"external:{ad}", "capsule", tmp_path / "out" / "capsule", images_only=True)[0]
    assert rec["format"] == "anomalydiffusion" and rec["count"] == 2 and not rec["references"]
    assert sorted(p.name for p in (tmp_path / "out" / "capsule" / "crack").iterdir()) == \
        ["images", "import.json", "manifest.csv"]


def test_cli_imports_and_refuses_with_one_error_line(tmp_path, capsys):
    import yaml

    root = seas_tree(tmp_path / "src", n=2)
    conf = tmp_path / "c.yaml"
    conf.write_text(yaml.safe_dump({"dataset": {"name": "custom", "root": "/x"}, "model": {"pretrained": "tiny"},
                                    "downstream": {"image_size": SIDE}, "gen_metrics": {"image_size": SIDE}}))
    out = tmp_path / "out" / "bottle"
    assert import_main(["--config", str(conf), "--method", f"external:{root}?format=seas", "--product", "bottle",
                        "--types", "broken_large", "--out", str(out)]) == 0
    assert (out / "broken_large" / "manifest.csv").is_file()
    (root / "bottle" / "broken_large" / "mask" / "001.png").unlink()
    assert import_main(["--config", str(conf), "--method", f"external:{root}", "--product", "bottle",
                        "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "001.png: image without mask" in err[0]


# ----------------------------------------------------------------------------- the method spec
def test_external_spec_options_keep_the_plain_names():
    spec = "external:/data/peers/anomalydiffusion?format=anomalydiffusion&mask_threshold=0.4"
    assert external_path(spec) == "/data/peers/anomalydiffusion"
    assert external_options(spec) == {"format": "anomalydiffusion", "mask_threshold": 0.4}
    assert method_dir(spec) == method_dir("external:/data/peers/anomalydiffusion") == "external-anomalydiffusion"
    assert method_label(spec) == "external:anomalydiffusion"
    assert external_options("external:/a/b") == {"format": None, "mask_threshold": None}
    assert external_path("external:/odd?name") == "/odd?name"  # a '?' not followed by options is the path's
    with pytest.raises(ConfigError, match="format=gan"):
        external_options("external:/a?format=gan")
    with pytest.raises(ConfigError, match="mask_threshold"):
        external_options("external:/a?mask_threshold=128")
    with pytest.raises(ConfigError, match="mask_threshold"):
        validate_config({"dataset": {"name": "custom", "root": "/x"}, "model": {"pretrained": "tiny"},
                         "downstream": {"methods": ["external:/a?mask_threshold=0"]}})


# ----------------------------------------------------------------------------- the content digest (item 3)
def test_source_digest_is_by_content_and_relative_names(tmp_path):
    import os
    import shutil

    from seas.data.dataset_manifest import resolved

    root = ad_tree(tmp_path / "a", n=3)
    st = peers.read_product(root, "capsule")
    d0, manifest = peers.source_digest(root, st)
    assert len(manifest["files"]) == 3 * 5  # every file of the type folder hashed (scan), the read ones digested
    mask = root / "capsule" / "crack" / "mask" / "1.jpg"
    os.utime(mask, ns=(0, mask.stat().st_mtime_ns + 10**10))  # touched: same content
    assert peers.source_digest(root, peers.read_product(root, "capsule"), manifest)[0] == d0
    _save(np.zeros((SIDE, SIDE, 3), np.uint8), root / "capsule" / "crack" / "recon" / "1.jpg")  # not read
    assert peers.source_digest(root, peers.read_product(root, "capsule"), manifest)[0] == d0
    moved = tmp_path / "b"
    shutil.copytree(root, moved)  # the names are relative to the folder: a copy elsewhere has the same digest
    assert peers.source_digest(moved, peers.read_product(moved, "capsule"))[0] == d0
    _save(np.zeros((SIDE, SIDE, 3), np.uint8), mask)  # changed
    d1 = peers.source_digest(root, peers.read_product(root, "capsule"), manifest)[0]
    assert d1 != d0
    for sub in ("image", "mask"):  # removed
        (root / "capsule" / "crack" / sub / "2.jpg").unlink()
    assert peers.source_digest(root, peers.read_product(root, "capsule"), manifest)[0] not in (d0, d1)
    # a linked file resolves to its target, each folder resolved once
    link = tmp_path / "link.jpg"
    link.symlink_to(mask)
    assert resolved(link, {}) == str(mask.resolve()) and resolved(mask, {}) == str(mask.resolve())


def test_generation_only_methods_are_checked():
    from seas.run.labels import all_methods
    from seas.run.layout import Layout

    base = {"dataset": {"name": "custom", "root": "/x"}, "model": {"pretrained": "tiny"}}
    cfg = validate_config({**base, "downstream": {"methods": ["seas", "external:/a/ad"],
                                                  "generation_only": ["external:/b/cdc", "cutpaste"]}})
    assert all_methods(cfg) == ["seas", "external:/a/ad", "external:/b/cdc", "cutpaste"]
    lay = Layout("R", cfg)
    assert [i["method"] for i in lay.instances("import_pairs")] == ["external:/a/ad", "external:/b/cdc"]
    assert [i["method"] for i in lay.instances("baselines")] == ["cutpaste"]
    assert "external:/b/cdc" in lay.gen_metrics_methods()
    assert {i["method"] for i in lay.instances("train_seg")} == {"seas", "external:/a/ad"}  # no segmentation
    with pytest.raises(ConfigError, match="also in downstream.methods"):
        validate_config({**base, "downstream": {"methods": ["seas"], "generation_only": ["seas"]}})
    with pytest.raises(ConfigError):
        validate_config({**base, "downstream": {"generation_only": ["real"]}})

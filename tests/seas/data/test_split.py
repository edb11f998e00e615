"""Data protocol: discovery, few-shot split, loading, and every bad-input error message."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seas.data.split import SPLIT_VERSION, Split, build_split, shots_for
from seas.data.augment import augment_pair, augmentation_for
from seas.data.dataset import discover_products, discover_types, selected_products
from seas.data.images import image_to_tensor, load_image, load_mask, read_mask_array
from seas.run.errors import DataError


def _img(path: Path, size=(16, 16), value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)


def _mask(path: Path, size=(16, 16), values=(0, 255)):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.full((size[1], size[0]), values[0], np.uint8)
    a[4:8, 4:8] = values[1]
    Image.fromarray(a).save(path)


def make_tree(root: Path, product="prod", types={"crack": 7, "dent": 2}, n_good=5, n_test_good=2):
    for i in range(n_good):
        _img(root / product / "train" / "good" / f"{i:03d}.png")
    for i in range(n_test_good):
        _img(root / product / "test" / "good" / f"{i:03d}.png")
    for t, n in types.items():
        for i in range(n):
            _img(root / product / "test" / t / f"{i:03d}.png")
            _mask(root / product / "ground_truth" / t / f"{i:03d}_mask.png")
    return root


def test_shots_rule():
    assert [shots_for(n, "1/3") for n in (1, 2, 3, 5, 6, 9, 10, 83)] == [1, 1, 1, 1, 2, 3, 3, 27]
    assert shots_for(10, 2) == 2
    with pytest.raises(DataError, match="split.shots"):
        shots_for(10, "half")


def test_split_rules_floor_and_ceil_known_answers(tmp_path):
    """split.rule: floor = max(floor(n/3), 1) (SeaS), ceil = ceil(n/3) (DualAnoDiff's code); n = 3, 4, 5."""
    assert [shots_for(n, "1/3", "floor") for n in (3, 4, 5)] == [1, 1, 1]
    assert [shots_for(n, "1/3", "ceil") for n in (3, 4, 5)] == [1, 2, 2]
    assert [shots_for(n, "1/3", "ceil") for n in (1, 2, 6, 7, 83)] == [1, 1, 2, 3, 28]
    assert shots_for(5, 2, "ceil") == shots_for(5, 2, "floor") == 2  # an integer H ignores the rule
    with pytest.raises(DataError, match="split.rule"):
        shots_for(5, "1/3", "round")
    root = make_tree(tmp_path / "ds", types={"n3": 3, "n4": 4, "n5": 5})
    expected = {"floor": {"n3": 1, "n4": 1, "n5": 1}, "ceil": {"n3": 1, "n4": 2, "n5": 2}}
    for rule, counts in expected.items():
        s = build_split(root, "prod", "1/3", num_normal=3, rule=rule)
        assert {t: len(v) for t, v in s.train_anomalies.items()} == counts
        for t, k in counts.items():  # the first k in file-number order train; the rest are held out
            assert [Path(d["image"]).name for d in s.train_anomalies[t]] == [f"{i:03d}.png" for i in range(k)]
            assert sum(d["type"] == t for d in s.test) == int(t[1:]) - k
        p = s.save(tmp_path / rule / "prod.json")
        assert json.loads(p.read_text())["rule"] == rule and Split.load(p).rule == rule
    # a manifest written before the key existed reads as floor
    d = json.loads(p.read_text())
    del d["rule"]
    p.write_text(json.dumps(d))
    assert Split.load(p).rule == "floor"


def test_split_rule_from_config(make_cfg, demo_root):
    from seas.data.split import split_from_config

    assert split_from_config(make_cfg(), "weave").rule == "floor"
    assert split_from_config(make_cfg({"split.rule": "ceil"}), "weave").rule == "ceil"


def test_split_protocol(tmp_path):
    root = make_tree(tmp_path / "ds")
    # file-number order, not lexicographic: 10 must come after 9
    for i in (8, 9, 10):
        _img(root / "prod" / "test" / "crack" / f"{i}.png")
        _mask(root / "prod" / "ground_truth" / "crack" / f"{i}_mask.png")
    assert discover_products(root) == ["prod"]
    assert discover_types(root, "prod") == ["crack", "dent"]
    s = build_split(root, "prod", "1/3", num_normal=3)
    # crack: 10 images (000..006, 8, 9, 10) -> 3 train; dent: 2 -> 1 train
    assert [Path(d["image"]).name for d in s.train_anomalies["crack"]] == ["000.png", "001.png", "002.png"]
    assert [Path(d["image"]).name for d in s.train_anomalies["dent"]] == ["000.png"]
    assert [Path(p).name for p in s.train_normals] == ["000.png", "001.png", "002.png"]
    test_crack = [Path(d["image"]).name for d in s.test if d["type"] == "crack"]
    assert test_crack == ["003.png", "004.png", "005.png", "006.png", "8.png", "9.png", "10.png"]
    assert sum(d["label"] == 0 for d in s.test) == 2 and all(d["mask"] is None for d in s.test if d["label"] == 0)
    assert len(s.test) == 7 + 1 + 2
    # H-shot ablation
    s2 = build_split(root, "prod", 1, num_normal=60)
    assert all(len(v) == 1 for v in s2.train_anomalies.values()) and len(s2.train_normals) == 5
    assert s2.notes and "only 5 normal" in s2.notes[0]


def test_split_roundtrip(tmp_path):
    root = make_tree(tmp_path / "ds")
    s = build_split(root, "prod")
    p = s.save(tmp_path / "out" / "prod.json")
    assert Split.load(p) == s
    assert not list((tmp_path / "out").glob(".*tmp*")), "temporary file left behind"
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="bad.json.*not valid JSON"):
        Split.load(tmp_path / "bad.json")
    with pytest.raises(DataError, match="missing.json.*does not exist"):
        Split.load(tmp_path / "missing.json")


def test_split_lists_every_normal_for_the_segmenters_and_reads_version_1(tmp_path):
    root = make_tree(tmp_path / "ds", n_good=5)
    s = build_split(root, "prod", num_normal=2)
    good = sorted(str((root / "prod" / "train" / "good" / f"{i:03d}.png").resolve()) for i in range(5))
    assert s.version == SPLIT_VERSION == 2 and s.train_normals == good[:2] and s.all_train_normals == good
    assert s.downstream_normals("all") == good and s.downstream_normals(3) == good[:3] and s.downstream_normals(0) == []
    # a version-1 manifest (before all_train_normals) still loads; it serves up to the generator's normals
    old = json.loads(s.to_json())
    old.pop("all_train_normals")
    old["version"] = 1
    (tmp_path / "v1.json").write_text(json.dumps(old))
    v1 = Split.load(tmp_path / "v1.json")
    assert v1.all_train_normals is None and v1.train_normals == good[:2] and v1.downstream_normals(2) == good[:2]
    with pytest.raises(DataError, match=r"v1.json \(version 1\) lists only the generator's 2 normal images.*"
                                        r"downstream.normal_images: all.*rebuild the split"):
        v1.downstream_normals("all")
    (tmp_path / "v9.json").write_text(json.dumps({**old, "version": 9}))
    with pytest.raises(DataError, match="v9.json has version 9, expected one of 1, 2"):
        Split.load(tmp_path / "v9.json")


def test_error_anomaly_without_mask(tmp_path):
    root = make_tree(tmp_path / "ds")
    (root / "prod" / "ground_truth" / "crack" / "004_mask.png").unlink()
    with pytest.raises(DataError, match=r"anomaly image .*test/crack/004.png has no mask: expected .*004_mask.png"):
        build_split(root, "prod")


def test_error_mask_size(tmp_path):
    root = make_tree(tmp_path / "ds")
    _mask(root / "prod" / "ground_truth" / "dent" / "001_mask.png", size=(20, 16))
    with pytest.raises(DataError, match=r"mask .*dent/001_mask.png is 20x16 but its image .*dent/001.png is 16x16"):
        build_split(root, "prod")


def test_error_non_binary_mask(tmp_path):
    root = make_tree(tmp_path / "ds")
    _mask(root / "prod" / "ground_truth" / "crack" / "000_mask.png", values=(0, 200))
    with pytest.raises(DataError, match=r"mask .*crack/000_mask.png is not binary: values \{0, 200\}"):
        build_split(root, "prod")
    # 0/1 masks are binary too
    _mask(root / "prod" / "ground_truth" / "crack" / "000_mask.png", values=(0, 1))
    assert read_mask_array(root / "prod" / "ground_truth" / "crack" / "000_mask.png").max() == 1


def test_error_empty_type_folder(tmp_path):
    root = make_tree(tmp_path / "ds")
    (root / "prod" / "test" / "scratch").mkdir()
    with pytest.raises(DataError, match=r"anomaly-type folder .*test/scratch is empty"):
        build_split(root, "prod")


def test_error_unreadable_image(tmp_path):
    root = make_tree(tmp_path / "ds")
    (root / "prod" / "test" / "crack" / "005.png").write_bytes(b"this is not a png")
    with pytest.raises(DataError, match=r"cannot read image .*crack/005.png"):
        build_split(root, "prod")


def test_error_unknown_product(tmp_path, make_cfg):
    root = make_tree(tmp_path / "ds")
    with pytest.raises(DataError, match=r"unknown product 'bottle'.*products under .*: prod"):
        build_split(root, "bottle")
    cfg = make_cfg({"dataset.root": str(root), "dataset.products": ["prod", "bottle"]})
    with pytest.raises(DataError, match=r"dataset.products: 'bottle' not found"):
        selected_products(cfg)


def test_error_missing_root_and_no_products(tmp_path):
    with pytest.raises(DataError, match=r"dataset root .*nowhere does not exist"):
        discover_products(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no product folders"):
        discover_products(tmp_path / "empty")


def test_error_too_few_for_shots(tmp_path):
    root = make_tree(tmp_path / "ds", types={"crack": 2})
    with pytest.raises(DataError, match=r"type 'crack': 2 images leave no test image with shots=2"):
        build_split(root, "prod", 2, test_set="rest")
    # the fixed (1/3) test set cannot give a type more training images than the 1/3 split has
    with pytest.raises(DataError, match=r"type 'crack': shots=2 exceeds the 1 training image\(s\) of the 1/3 split.*"
                                        r"split.test_set: rest"):
        build_split(root, "prod", 2)
    with pytest.raises(DataError, match=r"split.test_set"):
        build_split(root, "prod", 1, test_set="all")


def test_h_shot_test_set_is_the_one_third_splits(tmp_path):
    """split.test_set (paper Tab. 22): with one_third every H tests on the 1/3 split's test images; with rest the
    images after the first H join the test set."""
    root = make_tree(tmp_path / "ds", types={"crack": 9, "dent": 10})  # 1/3: 3 and 3 training images
    third = build_split(root, "prod", "1/3", num_normal=3, validate=False)
    for h in (1, 2):
        s = build_split(root, "prod", h, num_normal=3, validate=False)
        assert s.test == third.test and s.test_set == "one_third"
        assert {t: [Path(d["image"]).name for d in v] for t, v in s.train_anomalies.items()} == \
            {"crack": [f"{i:03d}.png" for i in range(h)], "dent": [f"{i:03d}.png" for i in range(h)]}
    rest = build_split(root, "prod", 1, num_normal=3, validate=False, test_set="rest")
    assert len(rest.test) == len(third.test) + 4 and {Path(d[0]).name for d in rest.train_pairs()} == {"000.png"}
    assert Split.load(rest.save(tmp_path / "m.json")).test_set == "rest"


def test_tab22_variants_share_one_test_set(tmp_path):
    """Every variant of the shipped Tab. 22 study (config/studies/tab22_shots.yaml) tests on the same images."""
    from seas.data.split import split_from_config
    from seas.run.config import validate_config
    from seas.run.studies import load_studies, variant_configs

    root = make_tree(tmp_path / "ds", types={"crack": 9, "dent": 10})
    base = validate_config({"dataset": {"name": "demo", "root": str(root)}, "model": {"pretrained": "sd", "tiny": True},
                            "split": {"num_normal_images": 3}}, source="<test>")
    cfgs = variant_configs(base, load_studies(base)["tab22_shots"])
    assert [c["split"]["shots"] for c in cfgs.values()] == [1, 2, "1/3"]
    splits = {v: split_from_config(c, "prod") for v, c in cfgs.items()}
    assert len({json.dumps(s.test) for s in splits.values()}) == 1, sorted(splits)
    assert len({json.dumps(s.train_anomalies) for s in splits.values()}) == len(cfgs) == 3


def test_load_geometry(tmp_path):
    # a 40x20 image whose left half is black: shorter-side crop keeps the centre 20x20
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, 20:] = 255
    Image.fromarray(a).save(tmp_path / "i.png")
    m = np.zeros((20, 40), np.uint8)
    m[:, 25:30] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    img = load_image(tmp_path / "i.png", 10)
    assert img.size == (10, 10)
    arr = np.asarray(img)
    assert arr[:, :4].max() < 30 and arr[:, 6:].min() > 225
    mask = load_mask(tmp_path / "m.png", 10)
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert mask[:, 7].all() and not mask[:, :5].any()  # columns 25..30 of 40 -> 7.5..10 after crop+scale
    sq = load_image(tmp_path / "i.png", 10, policy="resize")
    assert np.asarray(sq)[:, :4].max() < 30 and np.asarray(sq)[:, 6:].min() > 225
    t = image_to_tensor(img)
    assert t.shape == (3, 10, 10) and float(t.min()) >= -1 and float(t.max()) <= 1
    assert load_mask(None, 12).shape == (12, 12)


def test_augment_pair_identical_geometry():
    import torch

    img = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(2, 4, 4)
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(40):
        a, b = augment_pair(img, img[:1].clone(), g)
        assert torch.equal(a[:1], b)
        seen.add(tuple(a[0].flatten().tolist()))
    assert len(seen) == 8  # 4 rotations x 2 flips all occur
    a, b = augment_pair(img, img[:1], g, rotate90=False, flip=False)
    assert torch.equal(a, img)


def test_augmentation_per_product(make_cfg, caplog):
    caplog.set_level("INFO", logger="seas.data.augment")
    cfg = make_cfg({"augmentation.per_product": {"metal_nut": {"flip": False}}})
    assert augmentation_for(cfg, "metal_nut") == (True, False)
    assert augmentation_for(cfg, "bottle") == (True, True)
    assert "per-product override" in caplog.text


def test_demo_split_and_cli(demo_root, write_cfg, tmp_path, capsys):
    from seas.data.split import main

    path, cfg = write_cfg()
    assert main(["--list", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "washer: hole scratch" in out and "weave: scratch stain" in out
    out_json = tmp_path / "s" / "weave.json"
    assert main(["--config", str(path), "--product", "weave", "--out", str(out_json)]) == 0
    s = json.loads(out_json.read_text())
    assert s["anomaly_types"] == ["scratch", "stain"] and len(s["train_anomalies"]["scratch"]) == 2
    assert main(["--config", str(path), "--product", "nope", "--out", str(tmp_path / "x.json")]) == 2
    assert "error: product 'nope' not found under" in capsys.readouterr().err


# ----------------------------------------------------------------------------- real users' files (issue 14)
def test_16bit_images_scaled_by_their_depth(tmp_path):
    """An I;16 PNG is not clipped to white: 8-bit and 16-bit copies of one image give the same tensor."""
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (24, 24), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    t8 = image_to_tensor(load_image(tmp_path / "g8.png", 16))
    t16 = image_to_tensor(load_image(tmp_path / "g16.png", 16))
    assert float((t8 - t16).abs().max()) <= 2 / 255 + 1e-6  # one grey level is 2/255 in [-1, 1]
    assert float(t16.std()) > 0.3  # content, not a white page
    # 12-bit data in a 16-bit container is scaled by the container's depth (dark, never clipped to white)
    Image.fromarray((grey.astype(np.uint16) * 16)).save(tmp_path / "g12.png")
    a = np.asarray(load_image(tmp_path / "g12.png"))[..., 0]
    assert np.array_equal(a, np.rint(grey.astype(np.int64) * 16 / 257).astype(np.uint8))
    # a float image is refused naming the file
    Image.fromarray(grey.astype(np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DataError, match=r"image .*f.tif is a 32-bit float image"):
        load_image(tmp_path / "f.tif")


def test_16bit_masks_read_and_split(tmp_path):
    root = make_tree(tmp_path / "ds")
    m16 = np.zeros((16, 16), np.uint16)
    m16[2:9, 3:7] = 65535
    Image.fromarray(m16).save(root / "prod" / "ground_truth" / "crack" / "000_mask.png")
    # a 16-bit image of a type
    Image.fromarray(np.full((16, 16), 40000, np.uint16)).save(root / "prod" / "test" / "crack" / "000.png")
    s = build_split(root, "prod")
    m = load_mask(s.train_anomalies["crack"][0]["mask"])
    assert m.dtype == np.uint8 and m.sum() == 7 * 4 and m[2:9, 3:7].all()
    assert abs(int(np.asarray(load_image(s.train_anomalies["crack"][0]["image"]))[0, 0, 0]) - 156) <= 1
    # a 16-bit mask with an in-between value is refused naming it
    m16[0, 0] = 1000
    Image.fromarray(m16).save(root / "prod" / "ground_truth" / "crack" / "000_mask.png")
    with pytest.raises(DataError, match=r"mask .*crack/000_mask.png is not binary: values \{0, 1000, 65535\}"):
        build_split(root, "prod")


def _png_header_only(path: Path, w: int, h: int, mode_byte: int = 0) -> None:
    """A PNG whose header claims w x h (greyscale) followed by a tiny IDAT: a decompression bomb's shape."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, mode_byte, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_huge_mask_is_a_clear_error(tmp_path):
    root = make_tree(tmp_path / "ds")
    bomb = root / "prod" / "ground_truth" / "crack" / "001_mask.png"
    _png_header_only(bomb, 15000, 15000)
    # PIL's decompression-bomb guard (applied to the header, before decoding) becomes the usual error naming the file
    with pytest.raises(DataError, match=r"image .*crack/001_mask.png is too large to decode safely "
                                        r"\(Image size \(225000000 pixels\).*downscale it"):
        build_split(root, "prod")
    with pytest.raises(DataError, match=r"image .*001_mask.png is too large to decode safely .*downscale it"):
        load_mask(bomb)
    with pytest.raises(DataError, match=r"001_mask.png is too large"):
        load_image(bomb)
    # below PIL's limit, a mis-sized mask is reported from the headers, before either file is decoded
    _png_header_only(bomb, 9000, 9000)
    with pytest.raises(DataError, match=r"mask .*crack/001_mask.png is 9000x9000 but its image .*crack/001.png is 16x16"):
        build_split(root, "prod")


def test_empty_training_mask_refused(tmp_path):
    root = make_tree(tmp_path / "ds")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "prod" / "ground_truth" / "crack" / "001_mask.png")
    with pytest.raises(DataError, match=r"type 'crack': training anomaly .*crack/001.png has an empty mask "
                                        r"\(.*crack/001_mask.png is all background\)"):
        build_split(root, "prod")
    # an empty mask among the test images is a (pixel-less) anomalous test image, accepted
    _mask(root / "prod" / "ground_truth" / "crack" / "001_mask.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "prod" / "ground_truth" / "crack" / "006_mask.png")
    s = build_split(root, "prod")
    assert [d["label"] for d in s.test if d["image"].endswith("crack/006.png")] == [1]


def test_product_without_anomaly_types_names_the_way_out(tmp_path):
    root = make_tree(tmp_path / "ds")
    make_tree(root, product="other")
    make_tree(root, product="plain", types={})
    with pytest.raises(DataError, match=r"product 'plain': .*plain/test has no anomaly-type folders besides good/ "
                                        r".*leave it out with dataset.products: \[other, prod\]"):
        discover_types(root, "plain")
    with pytest.raises(DataError, match=r"dataset.products: \[other, prod\]"):
        build_split(root, "plain")


def test_mask_with_alpha_channel(tmp_path):
    """Masks exported with an alpha channel (LA, as editors do) are read by their grey channel."""
    a = np.zeros((16, 16, 2), np.uint8)
    a[..., 1] = 255
    a[4:8, 4:8, 0] = 255
    Image.fromarray(a, mode="LA").save(tmp_path / "la.png")
    m = read_mask_array(tmp_path / "la.png")
    assert m.sum() == 16 and m[4:8, 4:8].all()

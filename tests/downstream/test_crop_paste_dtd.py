"""Issue 21 item 6: Crop&Paste (Lin et al. 2021) beside CutPaste, and DRAEM's DTD textures (or the labelled stand-in)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from downstream.baselines import crop_paste_pair, draem_pair, dtd_textures, generate_baseline
from seas.data.images import load_image, load_mask
from seas.data.pairs import iter_pairs, read_manifest
from seas.data.split import Split
from seas.run.errors import ConfigError
from seas.run.labels import DRAEM_PROCEDURAL_LABEL, method_label


def _rgb(size=64, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_crop_paste_pastes_the_real_defect_exactly_where_the_mask_says():
    normal, anomaly = _rgb(seed=1), _rgb(seed=2)
    amask = np.zeros((64, 64), np.uint8)
    amask[10:18, 20:32] = 1          # an L-shaped defect: not its bounding box
    amask[10:13, 32:40] = 1
    a = np.asarray(anomaly)
    for s in range(8):
        img, mask, p = crop_paste_pair(normal, anomaly, amask, np.random.default_rng(s), rotate90=True, flip=True)
        out, base = np.asarray(img), np.asarray(normal)
        assert mask.sum() == amask.sum()                                  # the defect's own pixels, no more
        assert np.array_equal(out[mask == 0], base[mask == 0])            # untouched elsewhere
        # the pasted pixels are the defect's, moved by the recorded rotation / flip and offset
        patch = a[10:18, 20:40][amask[10:18, 20:40] > 0]
        crop = np.rot90(a[p["src_y"]:p["src_y"] + p["patch_h"], p["src_x"]:p["src_x"] + p["patch_w"]], p["rot90"])
        alpha = np.rot90(amask[p["src_y"]:p["src_y"] + p["patch_h"], p["src_x"]:p["src_x"] + p["patch_w"]], p["rot90"])
        if p["flip"]:
            crop, alpha = crop[:, ::-1], alpha[:, ::-1]
        h, w = alpha.shape
        region = mask[p["dst_y"]:p["dst_y"] + h, p["dst_x"]:p["dst_x"] + w]
        assert np.array_equal(region, alpha.astype(np.uint8))
        assert np.array_equal(out[p["dst_y"]:p["dst_y"] + h, p["dst_x"]:p["dst_x"] + w][alpha > 0], crop[alpha > 0])
        assert sorted(map(tuple, out[mask > 0])) == sorted(map(tuple, patch))  # the same colours, the real crop's
    _, m0, p0 = crop_paste_pair(normal, anomaly, amask, np.random.default_rng(0), rotate90=False, flip=False)
    assert p0["rot90"] == 0 and not p0["flip"]


def test_crop_paste_baseline_takes_the_types_real_anomalies(make_cfg, split_path, tmp_path):
    cfg = make_cfg(downstream__num_baseline_images_per_type=3)
    split = Split.load(split_path("washer"))
    out = generate_baseline(cfg, "crop_paste", split, tmp_path / "crop_paste" / "washer", progress=False)
    for t in split.anomaly_types:
        rows = read_manifest(out / t)
        real = {d["image"]: d["mask"] for d in split.train_anomalies[t]}
        assert {r["anomaly"] for r in rows} <= set(real)  # crops come from this type's training anomalies
        for r in rows:
            m = load_mask(out / t / r["mask"])
            src = load_mask(real[r["anomaly"]], 64)
            assert m.sum() == src.sum() > 0  # the whole real defect (it fits: same size), pasted once
            assert r["reference"] in split.train_normals
    assert len(iter_pairs(out.parent, ["washer"])) == 3 * len(split.anomaly_types)


def _fake_dtd(root, categories=("banded", "dotted"), n=2):
    for c in categories:
        (root / "images" / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((40, 50, 3), 40 * i + 90 * (c == "dotted"), np.uint8)).save(
                root / "images" / c / f"{c}_{i:04d}.jpg")
    (root / "labels").mkdir()
    (root / "labels" / "train1.txt").write_text("banded/banded_0000.jpg\n")  # the archive's other folders: ignored
    return root


def test_dtd_loader_reads_the_archive_layout_and_names_the_key(tmp_path):
    root = _fake_dtd(tmp_path / "dtd")
    files = dtd_textures(root)
    assert [f"{p.parent.name}/{p.name}" for p in files] == ["banded/banded_0000.jpg", "banded/banded_0001.jpg",
                                                            "dotted/dotted_0000.jpg", "dotted/dotted_0001.jpg"]
    assert dtd_textures(root / "images") == files  # the images folder itself
    with pytest.raises(ConfigError, match=r"downstream\.dtd_root: .*missing is not a folder"):
        dtd_textures(tmp_path / "missing")
    (tmp_path / "empty" / "images" / "banded").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"downstream\.dtd_root: no DTD images"):
        dtd_textures(tmp_path / "empty")


def test_draem_with_dtd_blends_a_dtd_texture(make_cfg, split_path, tmp_path):
    root = _fake_dtd(tmp_path / "dtd")
    cfg = make_cfg(downstream__num_baseline_images_per_type=2, downstream__dtd_root=str(root))
    split = Split.load(split_path("weave"))
    out = generate_baseline(cfg, "draem", split, tmp_path / "draem" / "weave", progress=False)
    rows = read_manifest(out / split.anomaly_types[0])
    assert {r["source"] for r in rows} == {"dtd"} and {r["texture"] for r in rows} <= {str(p) for p in dtd_textures(root)}
    # the formula with a texture: outside the mask the normal image is untouched
    normal = load_image(split.train_normals[0], 64)
    img, mask, p = draem_pair(normal, np.random.default_rng(0), texture=_rgb(seed=3))
    assert p["source"] == "dtd" and np.array_equal(np.asarray(img)[mask == 0], np.asarray(normal)[mask == 0])
    bad = make_cfg(downstream__num_baseline_images_per_type=2, downstream__dtd_root=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match=r"downstream\.dtd_root"):
        generate_baseline(bad, "draem", split, tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


def test_draem_without_dtd_is_labelled_procedural(make_cfg, tmp_path):
    cfg = make_cfg()
    assert cfg["downstream"]["dtd_root"] is None
    assert method_label("draem", cfg) == DRAEM_PROCEDURAL_LABEL == "draem (procedural textures, not DTD)"
    assert method_label("draem", make_cfg(downstream__dtd_root=str(tmp_path))) == "draem"
    assert method_label("crop_paste", cfg) == "crop_paste" and method_label("cutpaste", cfg) == "cutpaste"
    from downstream.report.paper import _norm_method  # still compared with the paper's DRAEM column

    assert _norm_method(DRAEM_PROCEDURAL_LABEL) == _norm_method("DRAEM")
    assert _norm_method("crop_paste") == _norm_method("Crop&Paste")

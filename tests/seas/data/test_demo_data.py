"""The procedural demo dataset: determinism, MVTec layout, exact masks, variety, marker/skip/refuse rules, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seas.data.demo_data import MARKER_NAME, PRODUCTS, generate_demo_dataset, main, render_sample
from seas.run.errors import ConfigError, DataError
from seas.run.runtime import derive_seed

SMALL = dict(seed=3, image_size=48, num_train_good=4, num_test_good=2, num_per_type=3)
SIZE = 64  # render_sample statistics


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _eroded_fraction(mask: np.ndarray) -> float:
    """Fraction of mask pixels whose 8 neighbours are all in the mask (thin strokes -> small, blobs -> large)."""
    m = np.pad(mask > 0, 1)
    inner = np.ones_like(m[1:-1, 1:-1])
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            inner &= m[1 + dy: m.shape[0] - 1 + dy, 1 + dx: m.shape[1] - 1 + dx]
    return inner.sum() / max((mask > 0).sum(), 1)


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return generate_demo_dataset(tmp_path_factory.mktemp("demo") / "d", **SMALL)


def test_same_seed_same_bytes_other_seed_differs(small, tmp_path):
    again = generate_demo_dataset(tmp_path / "again", **SMALL)
    a, b = _files(small), _files(again)
    assert a.keys() == b.keys() and a == b
    other = _files(generate_demo_dataset(tmp_path / "other", **{**SMALL, "seed": 4}))
    assert other.keys() == a.keys()
    pngs = [k for k in a if k.endswith(".png") and "ground_truth" not in k]
    assert all(other[k] != a[k] for k in pngs)


def test_layout_counts_and_masks(small):
    assert sorted(p.name for p in small.iterdir() if p.is_dir()) == ["washer", "weave"]
    for product, types in PRODUCTS.items():
        root = small / product
        assert sorted(p.name for p in (root / "test").iterdir()) == sorted(("good",) + types)
        assert sorted(p.name for p in (root / "ground_truth").iterdir()) == sorted(types)
        assert [p.name for p in sorted((root / "train/good").iterdir())] == ["000.png", "001.png", "002.png", "003.png"]
        assert [p.name for p in sorted((root / "test/good").iterdir())] == ["000.png", "001.png"]
        for t in types:
            imgs = sorted((root / "test" / t).iterdir())
            masks = sorted((root / "ground_truth" / t).iterdir())
            assert [p.name for p in imgs] == ["000.png", "001.png", "002.png"]
            assert [p.name for p in masks] == ["000_mask.png", "001_mask.png", "002_mask.png"]
            for ip, mp in zip(imgs, masks):
                img, mask = Image.open(ip), Image.open(mp)
                assert img.mode == "RGB" and img.size == (48, 48)
                assert mask.mode == "L" and mask.size == (48, 48)
                m = np.asarray(mask)
                assert set(np.unique(m)) == {0, 255}
                assert 6 <= (m > 0).sum() < 0.5 * m.size
    marker = json.loads((small / MARKER_NAME).read_text())
    assert {k: marker[k] for k in SMALL} == SMALL
    assert marker["products"] == {p: list(t) for p, t in PRODUCTS.items()}


def test_saved_files_match_render_and_masks_are_exact(small):
    """Each saved anomaly equals render_sample's image, and it differs from the defect-free render
    exactly on the mask's pixels."""
    for product, types in PRODUCTS.items():
        for t in types:
            for i in range(SMALL["num_per_type"]):
                s = render_sample(product, t, derive_seed(SMALL["seed"], "demo", product, "test", t, i), 48)
                img = np.asarray(Image.open(small / product / "test" / t / f"{i:03d}.png"))
                mask = np.asarray(Image.open(small / product / "ground_truth" / t / f"{i:03d}_mask.png"))
                np.testing.assert_array_equal(img, s.image)
                changed = np.any(img != s.clean, axis=-1)
                np.testing.assert_array_equal(mask > 0, changed)
        good = render_sample(product, None, derive_seed(SMALL["seed"], "demo", product, "train", "good", 0), 48)
        assert good.mask is None and np.array_equal(good.image, good.clean)
        np.testing.assert_array_equal(np.asarray(Image.open(small / product / "train/good/000.png")), good.image)


def test_normal_images_vary(small):
    for product in PRODUCTS:
        imgs = [np.asarray(Image.open(p), dtype=np.float64) for p in sorted((small / product / "train/good").iterdir())]
        imgs += [np.asarray(Image.open(p), dtype=np.float64) for p in sorted((small / product / "test/good").iterdir())]
        for i in range(len(imgs)):
            for j in range(i + 1, len(imgs)):
                assert np.abs(imgs[i] - imgs[j]).mean() > 3.0, (product, i, j)
        # ... but they stay one product: mean colours close together
        means = np.array([im.mean(axis=(0, 1)) for im in imgs])
        assert np.ptp(means, axis=0).max() < 40


def _stats(product, t, n=8):
    out = []
    for k in range(n):
        s = render_sample(product, t, 1000 + k, SIZE)
        m = s.mask > 0
        delta = s.image.astype(np.float64) - s.clean
        out.append({"area": m.mean(), "solid": _eroded_fraction(s.mask), "lum": s.image[m].mean(),
                    "delta": delta[m].mean(), "clean_lum": s.clean[m].mean(), "mask": m, "s": s})
    return out


def test_weave_scratch_vs_stain():
    scratch, stain = _stats("weave", "scratch"), _stats("weave", "stain")
    # scratches are thin strokes, stains are solid blobs
    assert max(d["solid"] for d in scratch) < 0.1
    assert min(d["solid"] for d in stain) > 0.3
    for d in stain:  # a stain only darkens (multiplicative tint < 1)
        s, m = d["s"], d["mask"]
        assert np.all(s.image[m].astype(int) <= s.clean[m].astype(int))
        assert d["delta"] < -5
    for d in scratch:  # a scratch pushes every pixel towards one colour: all brighter or all darker
        s, m = d["s"], d["mask"]
        lum_delta = s.image[m].astype(int).sum(-1) - s.clean[m].astype(int).sum(-1)
        assert np.all(lum_delta > 0) or np.all(lum_delta < 0)
        assert abs(d["delta"]) > 20


def test_washer_hole_vs_scratch():
    hole, scratch = _stats("washer", "hole"), _stats("washer", "scratch")
    assert np.mean([d["solid"] for d in hole]) > np.mean([d["solid"] for d in scratch]) + 0.3
    assert max(d["lum"] for d in hole) < 75  # holes are dark (anti-aliased rims included)
    for d in hole + scratch:  # both sit on the metal part (bright in the clean render), not on the background
        assert d["clean_lum"] > 90
    assert np.mean([d["delta"] for d in hole]) < -60


def test_defects_vary_in_position():
    for product, types in PRODUCTS.items():
        for t in types:
            centroids = [np.argwhere(d["mask"]).mean(0) for d in _stats(product, t, n=6)]
            spread = np.ptp(np.array(centroids), axis=0)
            assert spread.max() > 0.2 * SIZE, (product, t)


def test_render_sample_errors():
    with pytest.raises(ConfigError, match="tile"):
        render_sample("tile", None, 0, 64)
    with pytest.raises(ConfigError, match="crack"):
        render_sample("weave", "crack", 0, 64)
    with pytest.raises(ConfigError, match="image_size"):
        render_sample("weave", None, 0, 16)
    with pytest.raises(ConfigError, match="num_per_type"):
        generate_demo_dataset("/nonexistent/never", num_per_type=0)


def test_skip_when_marker_matches_regenerate_when_not(tmp_path):
    out = generate_demo_dataset(tmp_path / "d", **SMALL)
    probe = out / "weave/train/good/000.png"
    before = probe.stat().st_mtime_ns
    (out / "weave/note.txt").write_text("kept only if not regenerated")
    generate_demo_dataset(out, **SMALL)
    assert probe.stat().st_mtime_ns == before and (out / "weave/note.txt").exists()
    # a missing file makes it regenerate
    probe.unlink()
    generate_demo_dataset(out, **SMALL)
    assert probe.exists() and not (out / "weave/note.txt").exists()
    # other parameters replace the old dataset
    generate_demo_dataset(out, **{**SMALL, "num_test_good": 1})
    assert sorted(p.name for p in (out / "weave/test/good").iterdir()) == ["000.png"]
    assert json.loads((out / MARKER_NAME).read_text())["num_test_good"] == 1


def test_refuses_to_clobber_non_demo_directory(tmp_path):
    precious = tmp_path / "mvtec"
    (precious / "bottle").mkdir(parents=True)
    (precious / "bottle" / "x.png").write_bytes(b"not mine")
    with pytest.raises(DataError, match="mvtec"):
        generate_demo_dataset(precious, **SMALL)
    assert (precious / "bottle" / "x.png").read_bytes() == b"not mine"
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a directory"):
        generate_demo_dataset(tmp_path / "file", **SMALL)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (generate_demo_dataset(empty, **SMALL) / MARKER_NAME).is_file()


def test_cli_flags_override_config(tmp_path, capsys):
    import yaml

    cfg = {"dataset": {"name": "demo", "root": str(tmp_path / "unused"),
                       "demo": {"seed": 5, "image_size": 40, "num_train_good": 3, "num_test_good": 1,
                                "num_per_type": 3}},
           "model": {"pretrained": "unused"}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(path), "--out", str(tmp_path / "a"), "--image-size", "32"]) == 0
    marker = json.loads((tmp_path / "a" / MARKER_NAME).read_text())
    assert (marker["seed"], marker["image_size"], marker["num_train_good"]) == (5, 32, 3)
    assert Image.open(tmp_path / "a/washer/test/hole/002.png").size == (32, 32)
    # --set reaches the config; plain flags work without a config
    assert main(["--config", str(path), "--set", "dataset.demo.seed=9", "--out", str(tmp_path / "b")]) == 0
    assert json.loads((tmp_path / "b" / MARKER_NAME).read_text())["seed"] == 9
    assert main(["--out", str(tmp_path / "c"), "--image-size", "32", "--num-train-good", "3",
                 "--num-test-good", "1", "--num-per-type", "3"]) == 0
    assert len(list((tmp_path / "c/weave/train/good").iterdir())) == 3
    # bad input -> exit status 2 with a message naming the problem, nothing written: a flag below its floor is
    # refused by argparse (seas.run.cli_types), a config value by the schema
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "d"), "--image-size", "8"])
    assert exc.value.code == 2 and "argument --image-size: must be an integer >= 32, got '8'" in capsys.readouterr().err
    assert main(["--config", str(path), "--set", "dataset.demo.image_size=8", "--out", str(tmp_path / "d")]) == 2
    assert "dataset.demo.image_size" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()

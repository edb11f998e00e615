"""Built-in baselines: Perlin noise, CutPaste, DRAEM-style, real; the CLI writes the pairs layout."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from PIL import Image

from downstream.baselines import (
    METHODS, cutpaste_pair, draem_pair, fractal_noise, generate_baseline, main, perlin_mask, perlin_noise, real_pair,
)
from seas.data.pairs import iter_pairs, read_manifest
from seas.data.split import Split
from seas.data.images import load_mask
from seas.run.errors import DataError


def _rgb(size=64, seed=0) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


def test_perlin_noise_known_properties():
    rng = np.random.default_rng(1)
    n = perlin_noise((64, 48), (4, 3), rng)
    assert n.shape == (64, 48)
    # exactly zero on lattice points: pixel (i*64/4, j*48/3)
    assert np.allclose(n[::16, ::16], 0.0, atol=1e-12)
    assert np.abs(n).max() <= 1.0 + 1e-9 and n.std() > 0.05
    # smooth: neighbouring pixels differ far less than the value range
    assert np.abs(np.diff(n, axis=0)).max() < 0.3
    # deterministic by generator state, different for another seed
    assert np.array_equal(perlin_noise((32, 32), (2, 2), np.random.default_rng(5)),
                          perlin_noise((32, 32), (2, 2), np.random.default_rng(5)))
    assert not np.allclose(perlin_noise((32, 32), (2, 2), np.random.default_rng(5)),
                           perlin_noise((32, 32), (2, 2), np.random.default_rng(6)))
    f = fractal_noise((32, 32), (2, 2), np.random.default_rng(0), octaves=3)
    assert f.shape == (32, 32) and np.isfinite(f).all()


def test_perlin_mask_is_binary_and_nonempty():
    for s in range(5):
        m, res, angle = perlin_mask(64, np.random.default_rng(s))
        assert -90 <= angle <= 90
        assert m.dtype == np.uint8 and set(np.unique(m).tolist()) <= {0, 1} and m.mean() >= 0.002
        assert 1 <= min(res) and max(res) <= 16


def test_cutpaste_changes_only_the_mask():
    src = _rgb()
    for s in range(6):
        img, mask, p = cutpaste_pair(src, np.random.default_rng(s))
        a, b = np.asarray(src), np.asarray(img)
        assert img.size == src.size and mask.shape == (64, 64) and mask.any()
        assert np.array_equal(a[mask == 0], b[mask == 0])  # outside the pasted area: untouched
        if p["variant"] == "patch":  # an axis-aligned rectangle of the drawn size at the drawn place
            assert mask.sum() == p["patch_w"] * p["patch_h"]
            assert mask[p["dst_y"]:p["dst_y"] + p["patch_h"], p["dst_x"]:p["dst_x"] + p["patch_w"]].all()


def test_draem_blend_formula_and_untouched_outside():
    normal = _rgb(seed=1)
    for s in range(4):
        img, mask, p = draem_pair(normal, np.random.default_rng(s), [_rgb(seed=2)])
        a, b = np.asarray(normal).astype(int), np.asarray(img).astype(int)
        assert np.array_equal(a[mask == 0], b[mask == 0])
        assert (np.abs(a - b)[mask == 1]).mean() > 1  # the texture shows inside the mask
        assert 0 <= p["beta"] <= 0.8 and p["source"] in ("procedural", "normal:0")
    # beta ~ 0 on a black image: inside the mask only the (procedural) source shows
    img, mask, p = draem_pair(Image.new("RGB", (32, 32), (0, 0, 0)), np.random.default_rng(0), [], beta_max=1e-9)
    assert p["source"] == "procedural" and np.asarray(img)[mask == 1].mean() > 0


def _dihedral(a: np.ndarray) -> list[np.ndarray]:
    out = []
    for k in range(4):
        r = np.rot90(a, k, axes=(0, 1))
        out += [r, r[:, ::-1]]
    return out


def test_real_pair_is_a_rigid_transform():
    img = _rgb(16)
    mask = np.zeros((16, 16), np.uint8)
    mask[1:4, 2:9] = 1
    same, m_same, _ = real_pair(img, mask, seed=3, rotate90=False, flip=False)
    assert np.array_equal(np.asarray(same), np.asarray(img)) and np.array_equal(m_same, mask)
    seen = set()
    for seed in range(12):
        out, m, _ = real_pair(img, mask, seed=seed, rotate90=True, flip=True)
        cands = _dihedral(np.asarray(img))
        k = [i for i, c in enumerate(cands) if np.array_equal(c, np.asarray(out))]
        assert k, "output is not a rotation/flip of the input"
        assert np.array_equal(_dihedral(mask)[k[0]], m)  # mask transformed identically
        seen.add(k[0])
    assert len(seen) > 2


@pytest.mark.parametrize("method", METHODS)
def test_generate_writes_layout_deterministically(method, make_cfg, split_path, tmp_path):
    cfg = make_cfg(downstream__num_baseline_images_per_type=3)
    split = Split.load(split_path("washer"))
    out1 = generate_baseline(cfg, method, split, tmp_path / "a" / method / "washer", progress=False)
    out2 = generate_baseline(cfg, method, split, tmp_path / "b" / method / "washer", progress=False)
    pairs = iter_pairs(out1.parent, ["washer"])
    assert sorted({p.type for p in pairs}) == split.anomaly_types and len(pairs) == 3 * len(split.anomaly_types)
    for p in pairs:
        img = Image.open(p.image)
        assert img.size == (64, 64) and img.mode == "RGB"
        assert load_mask(p.mask).any()  # every pair has an anomaly
        twin = p.image.replace(str(out1), str(out2))
        assert hashlib.sha256(open(p.image, "rb").read()).digest() == hashlib.sha256(open(twin, "rb").read()).digest()
    rows = read_manifest(out1 / split.anomaly_types[0])
    assert [int(r["index"]) for r in rows] == [0, 1, 2] and len({r["seed"] for r in rows}) == 3
    assert all(r["method"] == method and float(r["anomalous_fraction"]) > 0 for r in rows)
    if method == "real":
        assert {r["reference"] for r in rows} <= {d["image"] for d in split.train_anomalies[split.anomaly_types[0]]}
    else:
        assert {r["reference"] for r in rows} <= set(split.train_normals)


def test_cli_and_errors(write_cfg, split_path, tmp_path, capsys):
    cfg_path, _ = write_cfg(downstream__num_baseline_images_per_type=2)
    out = tmp_path / "methods" / "cutpaste" / "weave"
    assert main(["--config", str(cfg_path), "--method", "cutpaste", "--split", str(split_path("weave")),
                 "--out", str(out)]) == 0
    assert len(iter_pairs(out.parent, ["weave"])) == 4
    assert main(["--config", str(cfg_path), "--method", "draem", "--split", str(tmp_path / "missing.json"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "missing.json" in capsys.readouterr().err
    split = Split.load(split_path("weave"))
    split.train_anomalies = {t: [] for t in split.anomaly_types}
    with pytest.raises(DataError, match="no training anomalies"):
        generate_baseline(write_cfg()[1], "real", split, tmp_path / "y", progress=False)
    assert not (tmp_path / "y").exists()  # nothing half-written

"""downstream.report.sample_grid: the report's grid of image-mask pairs (overlay pixels, layout, CLI errors)."""
from __future__ import annotations

import numpy as np
from PIL import Image

from downstream.report import sample_grid


def test_overlay_known_pixels():
    img = Image.fromarray(np.full((5, 5, 3), 100, np.uint8))
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    out = np.asarray(sample_grid.overlay(img, mask))
    assert tuple(out[0, 0]) == (100, 100, 100)  # outside: unchanged
    assert tuple(out[2, 2]) == (178, 50, 50)  # interior: 50 % red tint (0.5*100 + 0.5*255 = 177.5 -> 178)
    assert tuple(out[1, 1]) == (255, 0, 0) and tuple(out[1, 2]) == (255, 0, 0)  # boundary: pure red


def test_sample_grid_cli(tmp_path):
    for t, n in (("crack", 3), ("good", 1)):
        for sub in ("images", "masks"):
            (tmp_path / "P" / t / sub).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((16, 16, 3), 60 * i, np.uint8)).save(tmp_path / "P" / t / "images" / f"{i:06d}.png")
            Image.fromarray(np.full((16, 16), 255, np.uint8)).save(tmp_path / "P" / t / "masks" / f"{i:06d}.png")
    pairs = sample_grid.collect_pairs(tmp_path / "P", per_type=2)
    assert list(pairs) == ["crack", "good"] and [len(v) for v in pairs.values()] == [2, 1]
    out = tmp_path / "grid.png"
    assert sample_grid.main(["--pairs", str(tmp_path / "P"), "--out", str(out), "--per-type", "2", "--cell", "32"]) == 0
    grid = Image.open(out)
    assert grid.size == (96 + 4 * (32 + 2), 2 * (32 + 2))
    assert sample_grid.main(["--pairs", str(tmp_path / "missing"), "--out", str(out)]) == 2

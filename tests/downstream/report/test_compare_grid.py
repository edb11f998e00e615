"""downstream.report.compare_grid: real training defects beside each method's pairs, per product and type."""
from __future__ import annotations

import json

import numpy as np
from PIL import Image

from downstream.report import compare_grid


def _png(path, value, size=16, mask=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.zeros((size, size), np.uint8)
    if mask:
        arr[4:12, 4:12] = 255
        Image.fromarray(arr).save(path)
    else:
        Image.fromarray(np.full((size, size, 3), value, np.uint8)).save(path)
    return str(path)


def test_compare_grid(tmp_path, capsys):
    real = {t: [{"image": _png(tmp_path / "data" / t / "0.png", 200), "mask": _png(tmp_path / "data" / t / "0m.png", 0, mask=True)}]
            for t in ("crack", "stain")}
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"product": "weave", "root": str(tmp_path), "shots": "1/3", "anomaly_types": ["crack", "stain"],
                                 "train_normals": [], "train_anomalies": real, "test": []}))
    for i in range(4):  # method a: 4 crack pairs (3 shown), no stain folder
        _png(tmp_path / "a" / "crack" / "images" / f"{i:06d}.png", 50)
        _png(tmp_path / "a" / "crack" / "masks" / f"{i:06d}.png", 0, mask=True)
    for t in ("crack", "stain"):
        _png(tmp_path / "b" / t / "images" / "000000.png", 100)
    out = tmp_path / "grid.png"
    argv = ["--split", str(split), "--pairs", f"a={tmp_path / 'a'}", "--pairs", f"b={tmp_path / 'b'}",
            "--out", str(out), "--cell", "32", "--per-type", "3"]
    assert compare_grid.main(argv) == 0
    rows = compare_grid.compare_rows(compare_grid.Split.load(split), [("a", tmp_path / "a"), ("b", tmp_path / "b")], 3)
    assert [(t, s, len(items)) for t, s, items in rows] == [
        ("crack", compare_grid.REAL, 1), ("crack", "a", 3), ("crack", "b", 1),
        ("stain", compare_grid.REAL, 1), ("stain", "a", 0), ("stain", "b", 1)]
    grid = np.asarray(Image.open(out).convert("RGB"))
    # 130 px labels + 3 pairs x 2 cells of 32 (+2 gap); 6 rows of 32 (+2), 8 px between the two types, 18 title
    assert grid.shape == (18 + 6 * 34 + 8, 130 + 6 * 34, 3)
    y, x = 18, 130
    assert (grid[y + 16, x + 16] == 200).all()  # the real defect's image
    ov = grid[y + 16, x + 34 + 16]  # its overlay: red tint inside the mask
    assert ov[0] > ov[1] and ov[0] > ov[2]
    assert (grid[y + 34 + 16, x + 16] == 50).all()  # method a's first pair, row below
    assert compare_grid.main(["--split", str(tmp_path / "nope.json"), "--out", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err

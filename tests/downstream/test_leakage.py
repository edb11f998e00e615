"""Issue 21 item 4: test images planted among generated pairs are found (exact, resized, JPEG-recompressed copies),
clean pairs pass, gen_metrics counts them, train_seg refuses them unless downstream.leakage.allow names the method."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest
from PIL import Image

from downstream.baselines import generate_baseline
from downstream.leakage import DEFAULT_THRESHOLD, find_copies, main, pair_images, product_copies, signature
from seas.data.pairs import read_manifest, write_manifest
from seas.data.split import Split
from seas.run.errors import DataError


def _jpeg(img: Image.Image, quality: int = 75) -> Image.Image:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _plant(pairs_dir, t, test_images):
    """Overwrite the first pairs of type t with: an exact copy, a resized one, a JPEG one, resized + JPEG."""
    imgs = sorted((pairs_dir / t / "images").iterdir())
    src = [Image.open(p).convert("RGB") for p in test_images[:4]]
    size = Image.open(imgs[0]).size
    planted = [src[0].resize(size), src[1].resize((200, 200), Image.BICUBIC).resize(size, Image.BICUBIC),
               _jpeg(src[2].resize(size)), _jpeg(src[3].resize((48, 48), Image.BILINEAR).resize(size), 60)]
    for p, img in zip(imgs, planted):
        img.save(p)
    # the planted pairs are what the method wrote: its manifest records their sizes (seas.data.integrity checks them)
    write_manifest(pairs_dir / t, read_manifest(pairs_dir / t))
    return [str(p) for p in imgs[:4]], [str(p) for p in test_images[:4]]


@pytest.fixture
def pairs(make_cfg, split_path, tmp_path):
    cfg = make_cfg(downstream__num_baseline_images_per_type=6)
    split = Split.load(split_path("washer"))
    return cfg, split, generate_baseline(cfg, "cutpaste", split, tmp_path / "methods" / "cutpaste" / "washer",
                                         progress=False)


def test_planted_copies_found_and_clean_pairs_pass(pairs):
    cfg, split, out = pairs
    tests = [d["image"] for d in split.test]
    clean = product_copies(out, split, DEFAULT_THRESHOLD)
    assert clean["test_copies"] == 0 and clean["n_images"] == 6 * len(split.anomaly_types)
    t = split.anomaly_types[0]
    planted, sources = _plant(out, t, [d["image"] for d in split.test if d["type"] != "good"] + tests)
    res = product_copies(out, split, DEFAULT_THRESHOLD)
    assert res["test_copies"] == 4
    assert [(c["image"], c["test_image"]) for c in res["copies"]] == list(zip(planted, sources))
    assert max(c["distance"] for c in res["copies"]) <= 0.004  # the margin documented in docs/METHOD.md


def test_signature_margin_between_copies_and_distinct_images(demo_root):
    """The documented figures: copies <= 0.004, distinct demo images >= 0.017, the threshold 0.01 between them."""
    files = sorted(p for p in demo_root.rglob("*.png") if "ground_truth" not in p.parts)
    sig = np.stack([signature(Image.open(p)) for p in files])
    d = np.abs(sig[:, None] - sig[None]).mean((-1, -2))
    np.fill_diagonal(d, np.inf)
    assert d.min() >= 0.017 > DEFAULT_THRESHOLD
    worst = 0.0
    for p in files[::7]:
        img = Image.open(p).convert("RGB")
        for v in (img.resize((200, 200), Image.BICUBIC), _jpeg(img), _jpeg(img.resize((256, 256)), 60)):
            worst = max(worst, float(np.abs(signature(v) - signature(img)).mean()))
    assert worst <= 0.004 < DEFAULT_THRESHOLD
    # brightness shifts are the same picture (mean-normalised)
    shifted = Image.fromarray(np.clip(np.asarray(Image.open(files[0]).convert("L"), np.int16) + 12, 0, 255).astype(np.uint8))
    assert find_copies([files[0]], [files[0]])[0].distance == 0.0
    assert np.abs(signature(shifted) - signature(Image.open(files[0]))).mean() < 0.004


def test_gen_metrics_counts_and_train_seg_refuses_naming_method_file_and_key(pairs, make_cfg, tmp_path):
    cfg, split, out = pairs
    split_file = tmp_path / "split" / "washer.json"
    t = split.anomaly_types[0]
    planted, sources = _plant(out, t, [d["image"] for d in split.test])
    from downstream.gen_metrics import product_metrics

    gm = product_metrics(make_cfg(gen_metrics__enabled=False), split, out, "cutpaste")
    assert gm["test_copies"] == 4 and gm["test_copy_files"][0]["image"] == planted[0]

    from downstream.train_seg import train_segmentation

    seg_cfg = make_cfg({"downstream.train.lfd": {"iterations": 1, "batch_size": 2, "num_workers": 0}})
    with pytest.raises(DataError) as e:
        train_segmentation(seg_cfg, "lfd", out.parent, [split_file], tmp_path / "seg", method="cutpaste", progress=False)
    msg = str(e.value)
    assert "'cutpaste'" in msg and planted[0] in msg and sources[0] in msg and "downstream.leakage.allow" in msg
    assert not (tmp_path / "seg").exists()
    info = train_segmentation(seg_cfg, "lfd", out.parent, [split_file], tmp_path / "seg", method="cutpaste",
                              progress=False, allow_test_copies=True)
    assert info["test_copies"] == 4 and info["test_copies_allowed"]
    assert json.loads((tmp_path / "seg" / "train.json").read_text())["test_copies"] == 4


def test_cli_reports_copies(pairs, write_cfg, tmp_path, capsys):
    cfg, split, out = pairs
    _plant(out, split.anomaly_types[0], [d["image"] for d in split.test])
    path, _ = write_cfg()
    assert main(["--config", str(path), "--split", str(tmp_path / "split" / "washer.json"), "--pairs", str(out),
                 "--out", str(tmp_path / "copies.json")]) == 0
    assert "cutpaste washer: 4 test copies" in capsys.readouterr().out
    assert json.loads((tmp_path / "copies.json").read_text())["test_copies"] == 4
    assert len(pair_images(out)) == 6 * len(split.anomaly_types)

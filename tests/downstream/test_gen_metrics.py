"""IS / IC-LPIPS: clustering maths on hand-built cases, LPIPS/Inception loading, one product end to end."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image


# ----------------------------------------------------------------------------- pure clustering maths
# 5 generated images, 3 training anomaly images
D_TO_REFS = np.array([
    [0.1, 0.9, 0.8],  # -> 0
    [0.2, 0.7, 0.9],  # -> 0
    [0.3, 0.3, 0.9],  # tie 0/1 -> 0 (lower index)
    [0.9, 0.1, 0.8],  # -> 1 (singleton)
    [0.5, 0.6, 0.7],  # -> 0
])
D_PAIRS = np.array([
    [0.0, 0.2, 0.4, 0.9, 0.1],
    [0.2, 0.0, 0.6, 0.9, 0.3],
    [0.4, 0.6, 0.0, 0.9, 0.5],
    [0.9, 0.9, 0.9, 0.0, 0.9],
    [0.1, 0.3, 0.5, 0.9, 0.0],
])


def test_cluster_assignment_and_cap():
    from downstream.gen_metrics import assign_clusters, cluster_members

    labels = assign_clusters(D_TO_REFS)
    assert labels.tolist() == [0, 0, 0, 1, 0]
    assert cluster_members(labels, 3, cap=140) == [[0, 1, 2, 4], [3], []]
    assert cluster_members(labels, 3, cap=2) == [[0, 1], [3], []]


def test_ic_lpips_known_case():
    from downstream.gen_metrics import ic_lpips_from_matrices

    # cluster 0 = {0,1,2,4}: pairs 0.2 0.4 0.1 0.6 0.3 0.5 -> mean 0.35; cluster 1 singleton -> 0; cluster 2 empty -> 0
    score, per = ic_lpips_from_matrices(D_TO_REFS, D_PAIRS, cap=140)
    assert per == pytest.approx([0.35, 0.0, 0.0])
    assert score == pytest.approx(0.35 / 3)
    # cap 3 keeps {0,1,2}: pairs 0.2 0.4 0.6 -> 0.4
    score, per = ic_lpips_from_matrices(D_TO_REFS, D_PAIRS, cap=3)
    assert per == pytest.approx([0.4, 0.0, 0.0]) and score == pytest.approx(0.4 / 3)


def test_isc_splits_keep_two_images_per_split():
    from downstream.gen_metrics import isc_splits

    assert isc_splits(1000) == 10 and isc_splits(3) == 1 and isc_splits(9) == 4 and isc_splits(1) == 1


def test_ic_lpips_needs_references():
    from downstream.gen_metrics import assign_clusters

    with pytest.raises(ValueError):
        assign_clusters(np.zeros((3, 0)))


# ----------------------------------------------------------------------------- networks (random, same architecture)
def _imgs(n, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, size, size, generator=g) * 2 - 1


def test_ic_lpips_with_lpips_vgg_matches_the_matrix_route():
    from downstream.gen_metrics import (build_lpips, distances_to_references, ic_lpips, ic_lpips_from_matrices, lpips_distances)

    model, label = build_lpips(None, "cpu", seed=0)
    assert label == "random"
    gen, refs = _imgs(4, seed=1), _imgs(2, seed=2)
    # identical images are at distance 0, different ones at a positive distance
    assert np.allclose(lpips_distances(model, gen, gen), 0.0, atol=1e-6)
    assert (lpips_distances(model, gen, gen.flip(0)) > 0).all()
    score, per, sizes = ic_lpips(model, gen, refs, cap=140)
    d = distances_to_references(model, gen, refs)
    n = gen.shape[0]
    iu, ju = np.triu_indices(n, k=1)
    pairs = np.zeros((n, n))
    pairs[iu, ju] = lpips_distances(model, gen[iu], gen[ju])
    pairs = pairs + pairs.T
    ref_score, ref_per = ic_lpips_from_matrices(d, pairs, cap=140)
    assert score == pytest.approx(ref_score, rel=1e-6) and per == pytest.approx(ref_per, rel=1e-6)
    assert sum(sizes) == n
    # copies of one image all join one cluster and have IC-LPIPS 0
    same = gen[:1].repeat(3, 1, 1, 1)
    assert ic_lpips(model, same, refs)[0] == pytest.approx(0.0, abs=1e-6)


def test_lpips_weights_loaded_from_the_configured_folder(tmp_path):
    import lpips

    from seas.run.errors import CheckpointError
    from downstream.gen_metrics import LPIPS_LINEAR_FILE, VGG16_FILE, build_lpips

    with pytest.raises(CheckpointError, match=LPIPS_LINEAR_FILE):
        build_lpips(str(tmp_path), "cpu")
    # a torchvision-style VGG-16 state dict ("features.N.*") and LPIPS linear layers, written by hand
    src, _ = build_lpips(None, "cpu", seed=5)
    vgg = {"features." + k.split(".", 1)[1]: v.clone() for k, v in src.net.state_dict().items()}
    torch.save(vgg, tmp_path / VGG16_FILE)
    with pytest.raises(CheckpointError, match=LPIPS_LINEAR_FILE):
        build_lpips(str(tmp_path), "cpu")
    lin = {k: torch.full_like(v, 0.5) for k, v in src.state_dict().items() if k.startswith("lin")}
    torch.save(lin, tmp_path / LPIPS_LINEAR_FILE)
    model, label = build_lpips(str(tmp_path), "cpu")
    assert label == str(tmp_path)
    assert torch.equal(model.net.slice1[0].weight, vgg["features.0.weight"])
    assert all(float(p.detach().min()) == 0.5 for n, p in model.named_parameters() if n.startswith("lin"))
    assert isinstance(model, lpips.LPIPS)


def test_missing_inception_weights_is_a_clear_error(make_cfg, split_path, tmp_path):
    from seas.run.errors import CheckpointError
    from downstream.gen_metrics import product_metrics

    pairs = _write_pairs(tmp_path / "pairs", {"scratch": 2})
    cfg = make_cfg({"gen_metrics.inception_weights": str(tmp_path / "nope.pth")})
    with pytest.raises(CheckpointError, match="nope.pth"):
        product_metrics(cfg, split_path("weave"), pairs, "m")


# ----------------------------------------------------------------------------- one product end to end
def _write_pairs(root: Path, counts: dict) -> Path:
    rng = np.random.default_rng(0)
    for t, n in counts.items():
        (root / t / "images").mkdir(parents=True, exist_ok=True)
        (root / t / "masks").mkdir(parents=True, exist_ok=True)
        for j in range(n):
            Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(root / t / "images" / f"{j:06d}.png")
            Image.fromarray(np.zeros((48, 48), np.uint8)).save(root / t / "masks" / f"{j:06d}.png")
    return root


def test_product_metrics_cli_with_random_networks(write_cfg, split_path, tmp_path):
    from downstream.gen_metrics import main

    pairs = _write_pairs(tmp_path / "pairs", {"scratch": 3, "good": 2})
    path, _ = write_cfg({"gen_metrics.image_size": 32})
    out = tmp_path / "gm" / "weave.json"
    rc = main(["--config", str(path), "--split", str(split_path("weave")), "--pairs", str(pairs), "--method", "m",
               "--out", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert res["product"] == "weave" and res["method"] == "m"
    assert res["inception"] == "random" and res["lpips"] == "random"
    assert list(res["per_type"]) == ["scratch"] and res["n_images"] == 3  # good/ is not scored
    t = res["per_type"]["scratch"]
    assert np.isfinite(t["is"]) and t["is"] >= 1.0
    assert t["is"] != 1.0  # Kaiming re-initialised Inception: not the degenerate all-equal prediction
    assert sum(t["cluster_sizes"]) == 3 and res["is"] == t["is"] and res["ic_lpips"] == t["ic_lpips"]
    # KID against every real scratch anomaly of weave (training + held-out), subset size clamped to the 3 generated
    from seas.data.split import Split

    split = Split.load(split_path("weave"))
    n_real = len(split.train_anomalies["scratch"]) + sum(d["type"] == "scratch" for d in split.test)
    assert res["kid_reference"] == "all" and t["n_real"] == n_real and t["kid_subset_size"] == 3
    assert np.isfinite(t["kid"]) and res["kid"] == t["kid"]


def test_kid_subset_size_and_reference_sets(split_path):
    from seas.data.split import Split
    from seas.run.errors import DataError
    from downstream.gen_metrics import kid_reference_images, kid_subset_size

    assert kid_subset_size(1000, 20) == 20 and kid_subset_size(5, 20) == 5 and kid_subset_size(5000, 4000) == 1000
    assert kid_subset_size(50, 40, cap=30) == 30
    with pytest.raises(DataError, match="KID needs at least 2"):
        kid_subset_size(10, 1)
    split = Split.load(split_path("weave"))
    train = kid_reference_images(split, "stain", "train")
    held = kid_reference_images(split, "stain", "held_out")
    assert train == [d["image"] for d in split.train_anomalies["stain"]]
    assert held and all(d["label"] == 1 for d in split.test if d["image"] in held)
    assert kid_reference_images(split, "stain", "all") == train + held and not set(train) & set(held)
    with pytest.raises(DataError, match="kid_reference"):
        kid_reference_images(split, "stain", "everything")


def test_kid_with_random_inception_on_small_sets(tmp_path):
    """KID plumbing on tiny random image sets (random-init Inception): finite, subset size adapted to the sets."""
    from downstream.gen_metrics import build_inception_weights, inception_metrics

    w = build_inception_weights(tmp_path / "inc.pt", seed=0)
    g = torch.Generator().manual_seed(0)
    gen = (torch.rand(4, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    real = (torch.rand(3, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    m = inception_metrics(gen, w, "cpu", real_uint8=real, kid_subsets=5, seed=1)
    assert m["kid_subset_size"] == 3 and np.isfinite(m["kid"]) and np.isfinite(m["kid_std"]) and m["is"] >= 1.0
    assert inception_metrics(gen, w, "cpu", real_uint8=real, kid_subsets=5, seed=1)["kid"] == m["kid"]  # seeded
    assert "kid" not in inception_metrics(gen, w, "cpu")


def test_gen_metrics_cli_help(capsys):
    from downstream.gen_metrics import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0 and "--pairs" in capsys.readouterr().out


# ----------------------------------------------------------------------------- mask-defect agreement
def test_difference_map_and_topk_iou_known_answers():
    from downstream.gen_metrics import difference_map, topk_iou

    a = np.zeros((2, 3, 3), np.uint8)
    b = a.copy()
    b[0, 1] = [255, 0, 0]
    b[1, 2] = [255, 255, 255]
    d = difference_map(a, b)
    assert d.tolist() == [[0, 1 / 3, 0], [0, 0, 1]]
    mask = np.zeros((2, 3), bool)
    mask[1, 2] = mask[0, 0] = True  # k = 2: the top-2 pixels are (1,2) and (0,1); one of them hits
    assert topk_iou(d, mask) == pytest.approx(1 / 3)
    assert topk_iou(d, d > 0) == 1.0


def test_agreement_perfect_vs_random_baseline():
    from downstream.gen_metrics import mask_defect_agreement, random_shift

    rng = np.random.default_rng(0)
    masks, diffs = [], []
    for i in range(6):
        m = np.zeros((32, 32), bool)
        y, x = rng.integers(0, 24, 2)
        m[y:y + 6, x:x + 5] = True
        masks.append(m)
        diffs.append(m * 0.8 + rng.random((32, 32)) * 0.1)  # the image departs exactly where the mask is
    r = mask_defect_agreement(diffs, masks, seed=1)
    assert r["ap"] == pytest.approx(100.0) and r["iou"] == pytest.approx(100.0)
    assert r["random_ap"] < 30 and r["random_iou"] < 30 and r["n_masked"] == 6
    assert mask_defect_agreement(diffs, masks, seed=1) == r  # seeded
    s = random_shift(masks[0], np.random.default_rng(3))
    assert s.sum() == masks[0].sum()
    # a difference map unrelated to the masks scores like the random baseline, far below the perfect one
    noise = [rng.random((32, 32)) for _ in masks]
    r2 = mask_defect_agreement(noise, masks, seed=1)
    assert r2["ap"] < 30 and r2["iou"] < 30
    # masks covering every pixel say nothing about where the defect is: no AP (one class), left out of the IoU
    full = [np.ones((32, 32), bool)] * 2
    r3 = mask_defect_agreement(noise[:2], full, seed=1)
    assert np.isnan(r3["ap"]) and np.isnan(r3["iou"]) and r3["n_full"] == 2


def test_type_agreement_reads_twins(tmp_path):
    from downstream.gen_metrics import type_agreement

    t = tmp_path / "hole"
    for sub in ("images", "masks", "references"):
        (t / sub).mkdir(parents=True)
    assert type_agreement(tmp_path / "nope", 0) is None
    for j in range(2):
        twin = np.full((16, 16, 3), 100, np.uint8)
        img = twin.copy()
        img[4:8, 4:8] = 200
        mask = np.zeros((16, 16), np.uint8)
        mask[4:8, 4:8] = 255
        Image.fromarray(img).save(t / "images" / f"{j:06d}.png")
        Image.fromarray(twin).save(t / "references" / f"{j:06d}.png")
        Image.fromarray(mask).save(t / "masks" / f"{j:06d}.png")
    r = type_agreement(t, 0)
    assert r["ap"] == pytest.approx(100.0) and r["iou"] == pytest.approx(100.0) and r["n_images"] == 2
    (t / "references" / "000001.png").unlink()
    from seas.run.errors import DataError

    with pytest.raises(DataError, match="000001.png"):
        type_agreement(t, 0)

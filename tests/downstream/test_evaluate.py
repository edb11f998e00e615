"""downstream.evaluate on the demo dataset's test splits, with stand-in models whose maps are known.

The stand-in returns, for each input image, a map computed beforehand from that image's true mask
(looked up by the image's bytes), so the expected scores are known: 100 for the masks themselves, and the
direct metric functions' values for blurred, noisy masks.
"""
from __future__ import annotations

import hashlib
import json
import sys
import types

import numpy as np
import pytest
import torch
import yaml
from scipy import ndimage

from downstream import evaluate as E
from downstream import metrics as M
from seas.run.config import validate_config
from seas.run.errors import CheckpointError

SIZE = 64


def _key(x: torch.Tensor) -> str:
    return hashlib.sha1(x.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


class LookupModel:
    """``predict(x)`` -> the map stored for each image of the batch (a stand-in for SegModel.predict)."""

    def __init__(self, datasets, make_map):
        self.maps, self.by_product = {}, {}
        for ds in datasets:
            for i in range(len(ds)):
                it = ds[i]
                amap = make_map(np.asarray(it["mask"]), i).astype(np.float32)
                self.maps[_key(it["image"])] = amap
                self.by_product.setdefault(it["product"], []).append((amap, np.asarray(it["mask"]), it["label"]))
        self.calls = 0

    def eval(self):
        return self

    def predict(self, x):
        self.calls += 1
        return torch.stack([torch.from_numpy(self.maps[_key(xi)]) for xi in x])


@pytest.fixture(scope="module")
def cfg(demo_root):
    return validate_config({
        "dataset": {"name": "demo", "root": str(demo_root)},
        "model": {"pretrained": "unused", "tiny": True},
        "device": "cpu",
        "downstream": {"image_size": SIZE, "evaluation": {"batch_size": 3, "num_workers": 0}},
    }, source="<test>")


@pytest.fixture(scope="module")
def splits(demo_root, tmp_path_factory):
    from seas.data.split import build_split

    out = tmp_path_factory.mktemp("split")
    return [build_split(demo_root, p, "1/3", 8).save(out / f"{p}.json") for p in ("weave", "washer")]


@pytest.fixture(scope="module")
def datasets(splits, cfg):
    from downstream.segmentation.data import SegTestDataset

    return [SegTestDataset([str(s)], SIZE, policy=cfg["dataset"]["image_policy"]) for s in splits]


def _blurred(mask, i):
    rng = np.random.default_rng(i)
    m = ndimage.gaussian_filter(mask.astype(np.float64), sigma=2.0) + rng.normal(0, 0.05, mask.shape)
    return np.clip(m, 0, 1)


def test_perfect_maps_score_100(cfg, splits, datasets):
    model = LookupModel(datasets, lambda mask, i: mask.astype(np.float32))
    rows = E.evaluate(model.predict, splits, cfg)
    assert [r["product"] for r in rows] == ["weave", "washer", "mean"]
    for r in rows:
        for k in M.METRIC_COLUMNS:
            assert r[k] == pytest.approx(100.0), (r["product"], k)
    assert rows[0]["n_images"] == len(datasets[0]) and rows[2]["n_images"] == sum(len(d) for d in datasets)
    assert model.calls == sum(-(-len(d) // 3) for d in datasets)  # batches of 3


def test_blurred_maps_match_direct_metrics(cfg, splits, datasets, tmp_path):
    model = LookupModel(datasets, _blurred)
    rows = E.evaluate(model.predict, splits, cfg, batch_size=4)
    for r in rows[:2]:
        maps, masks, labels = zip(*model.by_product[r["product"]])
        s = np.concatenate([m.ravel() for m in maps])
        y = np.concatenate([k.ravel() for k in masks])
        direct = {"pixel_auroc": M.pixel_auroc(s, y), "pixel_ap": M.pixel_ap(s, y), "pixel_f1max": M.f1_max(s, y),
                  "pixel_iou_fixed": M.iou_at_threshold(s, y, cfg["downstream"]["iou_threshold"]),
                  "pixel_iou_best": M.best_iou_per_image(maps, masks),
                  "pixel_iou_pooled": M.pooled_best_iou(s, y), "pixel_pro": M.pro(maps, masks, 0.3),
                  **M.image_metrics(maps, labels)}
        for k in M.METRIC_COLUMNS:
            assert r[k] == pytest.approx(100 * direct[k], rel=1e-6), (r["product"], k)
        assert 50 < r["pixel_auroc"] < 100  # blurred + noisy: good, not perfect
    for k in M.METRIC_COLUMNS:
        assert rows[2][k] == pytest.approx((rows[0][k] + rows[1][k]) / 2)
    out = E.write_scores(rows, tmp_path / "scores.csv")
    back = E.read_scores(out)
    assert [r["product"] for r in back] == ["weave", "washer", "mean"]
    assert back[1]["pixel_pro"] == pytest.approx(rows[1]["pixel_pro"])
    assert open(out).readline().strip().split(",") == E.SCORE_COLUMNS


def test_wrong_map_shape_is_an_error(cfg, splits, datasets):
    model = LookupModel(datasets, lambda mask, i: mask.astype(np.float32))
    with pytest.raises(CheckpointError, match="shape"):
        E.evaluate(lambda x: model.predict(x)[:, :, :-1], splits[:1], cfg)


def test_cli(cfg, splits, datasets, tmp_path, monkeypatch, capsys):
    model = LookupModel(datasets, _blurred)
    fake = types.ModuleType("downstream.segmentation.models")
    fake.load_trained = lambda ckpt, c, device: model
    monkeypatch.setitem(sys.modules, "downstream.segmentation.models", fake)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    ckpt = tmp_path / "segmentation" / "lfd" / "seas"
    ckpt.mkdir(parents=True)
    (ckpt / "train.json").write_text(json.dumps({"model": "lfd"}))
    out = ckpt / "scores.csv"
    argv = ["--config", str(cfg_path), "--checkpoint", str(ckpt), "--splits", *map(str, splits), "--out", str(out)]
    assert E.main(argv + ["--model", "lfd"]) == 0
    rows = E.read_scores(out)
    assert [r["product"] for r in rows] == ["weave", "washer", "mean"]
    assert E.main(argv + ["--model", "upernet"]) == 2  # the checkpoint holds an lfd
    assert "holds a 'lfd' model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        E.main(["--help"])


def test_cli_with_a_real_random_init_lfd(cfg, splits, tmp_path):
    """Integration with  downstream.segmentation.models / downstream.segmentation.data: a saved random-init LFD, scored end to end."""
    from  downstream.segmentation.models import MODEL_FILE, TRAIN_JSON, build_model
    from seas.run.runtime import save_safetensors_atomic

    torch.manual_seed(0)
    model = build_model("lfd", cfg, load_pretrained=False)
    ckpt = tmp_path / "segmentation" / "lfd" / "seas"
    save_safetensors_atomic(model.state_dict(), ckpt / MODEL_FILE)
    (ckpt / TRAIN_JSON).write_text(json.dumps({"model": "lfd", "num_classes": 2, "backbone_init": "random-init"}))
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = ckpt / "scores.csv"
    assert E.main(["--config", str(cfg_path), "--model", "lfd", "--checkpoint", str(ckpt),
                   "--splits", *map(str, splits), "--out", str(out)]) == 0
    rows = E.read_scores(out)
    assert [r["product"] for r in rows] == ["weave", "washer", "mean"]
    for r in rows:
        for k in M.METRIC_COLUMNS:
            assert 0.0 <= r[k] <= 100.0, (r["product"], k)
        assert r["pixel_mode"] == "exact"

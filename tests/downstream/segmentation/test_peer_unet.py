"""Issue 21 item 5: downstream.protocol peer_per_product_unet -- DRAEM's U-Net per product as AnomalyDiffusion's
train-localization.py trains it, its checkpoint picked on a validation split of the training data (test only as a
switch the protocol column names)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from downstream.baselines import generate_baseline
from downstream.segmentation import data as seg_data
from downstream.segmentation import peer_unet
from downstream.segmentation.data import SegTrainDataset
from downstream.segmentation.models import build_model, load_trained, peer_focal_loss
from downstream.segmentation.peer_unet import carve_validation, epoch_samples, selection_score
from seas.data.split import Split
from seas.run.errors import ConfigError

PEER = {"downstream.protocol": "peer_per_product_unet", "downstream.models": ["draem_unet"],
        "downstream.image_size": 64,
        "downstream.train.draem_unet": {"epochs": 2, "samples_per_epoch": 4, "batch_size": 2, "num_workers": 0},
        "downstream.evaluation.num_workers": 0}


def test_focal_loss_known_answer_and_gradient():
    prob = torch.full((1, 2, 2, 2), 0.5, requires_grad=True)
    target = torch.tensor([[[0, 1], [1, 0]]])
    pt = 0.5 + 1e-5  # (1 - 1e-5) * 0.5 + 1e-5 * 0.5 + smooth
    expected = -((1 - pt) ** 2) * math.log(pt)
    loss = peer_focal_loss(prob, target)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert prob.grad is not None and torch.isfinite(prob.grad).all()
    # a confident right answer costs ~0, a confident wrong one a lot
    right = torch.tensor([[[[0.999]], [[0.001]]]])
    assert peer_focal_loss(right, torch.zeros(1, 1, 1)) < 1e-5 < peer_focal_loss(right, torch.ones(1, 1, 1))


def test_draem_unet_is_anomalibs_discriminative_subnetwork(make_cfg):
    from anomalib.models.image.draem.torch_model import DiscriminativeSubNetwork

    model = build_model("draem_unet", make_cfg(PEER))
    assert isinstance(model.net, DiscriminativeSubNetwork)
    x = torch.randn(2, 3, 64, 64)
    assert model(x).shape == (2, 2, 64, 64) and model.predict(x).shape == (2, 64, 64)
    conv = next(m for m in model.net.modules() if isinstance(m, torch.nn.Conv2d))
    assert abs(conv.weight.std().item() - 0.02) < 0.005  # the peer's N(0, 0.02) init


def test_config_ties_the_protocol_to_its_model(make_cfg):
    with pytest.raises(ConfigError, match=r"downstream.models: \[draem_unet\]"):
        make_cfg({"downstream.protocol": "peer_per_product_unet"})
    with pytest.raises(ConfigError, match="draem_unet is the model of downstream.protocol"):
        make_cfg({"downstream.models": ["lfd", "draem_unet"]})
    cfg = make_cfg(PEER)
    assert cfg["downstream"]["peer_unet"] == {"select_on": "validation", "validation_fraction": 0.1}
    from downstream.report.tables import protocol_label
    from seas.run.layout import seg_scopes

    assert seg_scopes(cfg, ["a", "b"]) == ["product-a", "product-b"]
    assert protocol_label(cfg).startswith("peer-per-product-unet (split floor 1/3")
    assert "checkpoint picked on test" not in protocol_label(cfg)
    on_test = make_cfg({**PEER, "downstream.peer_unet": {"select_on": "test"}})
    assert protocol_label(on_test).endswith("; checkpoint picked on test)")


def _items(make_cfg, split_path, tmp_path, product="weave", n=6):
    cfg = make_cfg({**PEER, "downstream.num_baseline_images_per_type": n})
    split = Split.load(split_path(product))
    generate_baseline(cfg, "cutpaste", split, tmp_path / "methods" / "cutpaste" / product, progress=False)
    return cfg, split


def test_validation_split_is_seeded_disjoint_and_from_training_data(make_cfg, split_path, tmp_path):
    cfg, split = _items(make_cfg, split_path, tmp_path)
    ds = SegTrainDataset.from_config(cfg, tmp_path / "methods" / "cutpaste", [split_path("weave")])
    train, val = carve_validation(ds.items, 0.25, seed=3)
    assert carve_validation(ds.items, 0.25, seed=3) == (train, val)
    assert carve_validation(ds.items, 0.25, seed=4)[1] != val
    assert sorted(train + val) == sorted(ds.items) and not set(train) & set(val)
    assert {it.origin for it in val} == {"pairs", "normal"}
    tests = {d["image"] for d in split.test}
    assert not {it.image for it in train + val} & tests
    idx = epoch_samples(train, 200, seed=0, epoch=0)
    normal = sum(train[i].mask is None for i in idx)
    assert 70 < normal < 130 and epoch_samples(train, 200, 0, 0) == idx != epoch_samples(train, 200, 0, 1)
    assert selection_score({"image_auroc": 90, "pixel_auroc": 80, "pixel_ap": 10, "pixel_pro": float("nan")}) == 180


@pytest.mark.parametrize("select_on", ["validation", "test"])
def test_checkpoint_choice_reads_test_images_only_on_the_switch(select_on, make_cfg, split_path, tmp_path,
                                                                monkeypatch):
    cfg, split = _items(make_cfg, split_path, tmp_path)
    cfg["downstream"]["peer_unet"]["select_on"] = select_on
    tests = {d["image"] for d in split.test}
    read: list[str] = []
    orig = seg_data.load_image

    def spy(path, *a, **kw):
        read.append(str(path))
        return orig(path, *a, **kw)

    monkeypatch.setattr(seg_data, "load_image", spy)
    monkeypatch.setattr(peer_unet, "load_image", spy)
    from downstream.train_seg import train_segmentation

    out = tmp_path / "seg" / "product-weave"
    info = train_segmentation(cfg, "draem_unet", tmp_path / "methods" / "cutpaste", [split_path("weave")], out,
                              method="cutpaste", progress=False)
    assert info["select_on"] == select_on and info["iterations"] == 2 * 2 and len(info["selection_scores"]) == 2
    touched = set(read) & tests
    if select_on == "validation":
        assert not touched and info["n_selection_images"] == 2  # one pair + one normal image of the training data
    else:
        assert touched == tests  # the whole test set, every epoch
    # the selected checkpoint loads and scores the product (the evaluate stage)
    monkeypatch.setattr(seg_data, "load_image", orig)
    from downstream.evaluate import main as evaluate_main

    scores = tmp_path / "scores.csv"
    assert evaluate_main(["--config", str(_write(cfg, tmp_path)), "--model", "draem_unet", "--checkpoint", str(out),
                          "--splits", str(split_path("weave")), "--out", str(scores)]) == 0
    text = scores.read_text()
    assert "weave" in text and "pixel_auroc" in text
    model = load_trained(out, cfg)
    assert model.backbone_init.startswith("random-init") and np.isfinite(info["final_loss"])


def _write(cfg, tmp_path):
    import yaml

    p = tmp_path / "peer.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p

"""Segmentation models: LFD (ours) and the mmseg BiSeNetV2 / UPerNet wrappers."""
from __future__ import annotations

import json

import pytest
import torch

from downstream.segmentation.lfd import LFD, SelectiveFusion, count_parameters
from downstream.segmentation.models import MODEL_FILE, TRAIN_JSON, build_model, load_trained
from seas.run.errors import CheckpointError, ConfigError
from seas.run.runtime import save_safetensors_atomic

torch.set_num_threads(1)


def test_lfd_parameter_count_matches_paper():
    n = count_parameters(LFD(num_classes=2))
    assert abs(n - 0.936e6) / 0.936e6 < 0.10, n
    assert n == 936_067  # the figure quoted in downstream/segmentation/lfd.py


def test_lfd_shapes_and_asymmetric_context():
    net = LFD(2).eval()
    seen = {}
    net.context.register_forward_hook(lambda m, i, o: seen.update(ctx_in=tuple(i[0].shape), ctx_out=tuple(o.shape)))
    net.detail.register_forward_hook(lambda m, i, o: seen.update(det_out=tuple(o.shape)))
    with torch.no_grad():
        y = net(torch.randn(1, 3, 96, 128))
    assert y.shape == (1, 2, 96, 128)
    assert seen["ctx_in"] == (1, 3, 48, 32)  # height / 2, width / 4
    assert seen["ctx_out"] == (1, 128, 6, 4)  # ResNet-18 stages 1-2: / 8 of the context input
    assert seen["det_out"] == (1, 64, 24, 32)  # ResNet-18 stage 1: / 4, full-resolution input


def test_selective_fusion_known_answers():
    fuse = SelectiveFusion(channels=4, hidden=4).eval()
    detail = torch.randn(1, 4, 8, 8)
    context = torch.randn(1, 4, 4, 4)
    up = torch.nn.functional.interpolate(context, size=(8, 8), mode="bilinear", align_corners=False)
    last = fuse.attention[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(50.0)  # attention ~ 1: detail passes fully
        assert torch.allclose(fuse(detail, context), detail + up, atol=1e-5)
        last.bias.fill_(-50.0)  # attention ~ 0: context only
        assert torch.allclose(fuse(detail, context), up, atol=1e-5)
        last.bias.fill_(0.0)  # attention 0.5
        assert torch.allclose(fuse(detail, context), 0.5 * detail + up, atol=1e-5)


def test_lfd_pretrained_backbone(make_cfg, tmp_path):
    from torchvision.models import resnet18

    ref = resnet18(weights=None).state_dict()
    path = tmp_path / "resnet18.pth"
    torch.save(ref, path)
    model = build_model("lfd", make_cfg(downstream__pretrained_backbones={"resnet18": str(path)}))
    assert model.backbone_init == f"pretrained:{path}"
    for trunk in (model.net.detail, model.net.context):
        assert torch.equal(trunk.state_dict()["layer1.0.conv1.weight"], ref["layer1.0.conv1.weight"])
    assert build_model("lfd", make_cfg()).backbone_init == "random-init"
    with pytest.raises(ConfigError, match="nope.pth not found"):
        build_model("lfd", make_cfg(downstream__pretrained_backbones={"resnet18": str(tmp_path / "nope.pth")}))
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="lacks"):
        build_model("lfd", make_cfg(downstream__pretrained_backbones={"resnet18": str(tmp_path / "bad.pth")}))
    with pytest.raises(ConfigError, match="unknown"):
        build_model("segformer", make_cfg())
    # random initialisation only when said: an unset (null) backbone is an error naming the file it needs
    with pytest.raises(ConfigError, match="resnet18 is not set but lfd uses it.*resnet18-f37072fd.pth"):
        build_model("lfd", make_cfg(downstream__pretrained_backbones={"resnet18": None}))


def _check_model(model, n_losses: int):
    x = torch.randn(2, 3, 64, 64)
    target = torch.zeros(2, 64, 64, dtype=torch.long)
    target[:, 20:40, 10:30] = 1
    model.train()
    losses = model.loss(x, target)
    assert len(losses) == n_losses and all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    model.eval()
    logits = model(x)
    assert logits.shape == (2, 2, 64, 64)
    prob = model.predict(x)
    assert prob.shape == (2, 64, 64) and float(prob.min()) >= 0 and float(prob.max()) <= 1
    assert torch.allclose(prob, torch.softmax(logits, 1)[:, 1], atol=1e-6)
    return losses


def test_bisenetv2_mmseg(make_cfg, tmp_path):
    model = build_model("bisenetv2", make_cfg())
    bb = model.net.backbone
    assert type(bb).__name__ == "BiSeNetV2" and len(model.net.auxiliary_head) == 4
    losses = _check_model(model, n_losses=5)  # decode head + 4 auxiliary heads
    assert set(losses) == {"decode.loss_ce"} | {f"aux_{i}.loss_ce" for i in range(4)}
    assert 10e6 < count_parameters(model) < 16e6  # mmseg's BiSeNetV2 (14.8M with Cityscapes' 19 classes)

    # checkpoint round trip through load_trained
    ckpt = tmp_path / "ckpt"
    save_safetensors_atomic(model.state_dict(), ckpt / MODEL_FILE)
    (ckpt / TRAIN_JSON).write_text(json.dumps({"model": "bisenetv2", "backbone_init": "random-init"}))
    again = load_trained(ckpt, make_cfg())
    x = torch.randn(1, 3, 64, 64)
    assert torch.allclose(again.predict(x), model.eval().predict(x), atol=1e-6)
    with pytest.raises(CheckpointError, match="train the model first"):
        load_trained(tmp_path / "none", make_cfg())


def test_upernet_mmseg(make_cfg, tmp_path):
    model = build_model("upernet", make_cfg())
    assert type(model.net.backbone).__name__ == "ResNetV1c" and model.backbone_init == "random-init"
    losses = _check_model(model, n_losses=2)
    assert set(losses) == {"decode.loss_ce", "aux.loss_ce"}
    # a V1c state dict (here: a perturbed copy of the model's own) loads into the backbone
    state = {f"backbone.{k}": v + 1 if v.is_floating_point() else v for k, v in model.net.backbone.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "r50.pth")
    pre = build_model("upernet", make_cfg(downstream__pretrained_backbones={"resnet50": str(tmp_path / "r50.pth")}))
    assert torch.equal(pre.net.backbone.state_dict()["stem.0.weight"], state["backbone.stem.0.weight"])
    assert pre.backbone_init.startswith("pretrained:")
    # a torchvision-style ResNet-50 (7x7 stem `conv1`, no deep `stem.*`) is not V1c: a clear error
    with pytest.raises(CheckpointError, match="tv50.pth: not a ResNet-50-V1c"):
        pre.load_backbone({"conv1.weight": torch.zeros(64, 3, 7, 7)}, str(tmp_path / "tv50.pth"))
    with pytest.raises(ConfigError, match="missing.pth not found"):
        build_model("upernet", make_cfg(downstream__pretrained_backbones={"resnet50": str(tmp_path / "missing.pth")}))

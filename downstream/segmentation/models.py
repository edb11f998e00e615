"""Segmentation models of the downstream benchmark, behind one small interface (:class:`SegModel`).

* ``bisenetv2`` — mmsegmentation's BiSeNetV2 (detail branch 64/64/128, semantic branch 16/32/64/128,
  BGA 128) with an FCN decode head and 4 auxiliary FCN heads, as in mmseg's
  ``configs/_base_/models/bisenetv2.py`` (BN instead of SyncBN). Trained from scratch, as there.
* ``upernet``   — mmsegmentation's UPerNet on ResNet-50-V1c (``configs/_base_/models/upernet_r50.py``):
  UPerHead (pool scales 1/2/3/6, 512 channels) + auxiliary FCN head on stage 3 (loss weight 0.4). ImageNet
  weights from ``downstream.pretrained_backbones.resnet50`` — mmseg's ``open-mmlab://resnet50_v1c`` file
  (``resnet50_v1c-2cccc1ad.pth``; deep-stem ``stem.*`` keys) — or random init where it says ``random``.
* ``lfd``       — :class:`downstream.segmentation.lfd.LFD` (ours, 0.94M parameters) with mmseg's CrossEntropyLoss. ImageNet
  weights for its two ResNet-18 trunks from ``downstream.pretrained_backbones.resnet18`` (a torchvision
  ``resnet18`` state dict, ``resnet18-f37072fd.pth``), or random init where it says ``random``.

* ``draem_unet`` — DRAEM's discriminative U-Net (anomalib's ``DiscriminativeSubNetwork``: 3 -> 2 channels, base
  width 64), the per-product model of AnomalyDiffusion's downstream protocol (``downstream.protocol:
  peer_per_product_unet``; sjtuplayer/anomalydiffusion train-localization.py): conv weights N(0, 0.02), BatchNorm
  weights N(1, 0.02) and biases 0 as that script initialises it, RGB in [0, 1] (the ImageNet-normalised input is
  mapped back), the script's focal loss (:func:`peer_focal_loss`). Trained by downstream.segmentation.peer_unet.

The mmseg models are built from ``mmengine.config.ConfigDict`` through ``mmseg.registry.MODELS``; their
losses are mmseg's own (decode head + auxiliary heads, ``EncoderDecoder.loss``). No mmengine Runner and no
mmengine checkpoint loading (it fails on torch ≥ 2.6): checkpoints are plain ``state_dict`` safetensors.

Every model takes ImageNet-normalised RGB (``downstream.segmentation.data.normalize_image``) and predicts 2 classes
(0 = normal, 1 = anomalous).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn

from seas.run.config import resolve_backbone
from seas.run.errors import CheckpointError, ConfigError
from downstream.segmentation.lfd import LFD
# Lazy imports: mmseg / mmengine are imported inside the builders (heavy: registering mmseg's modules takes seconds).

__all__ = ["MODEL_NAMES", "SegModel", "MMSegModel", "LFDModel", "DraemUNetModel", "peer_focal_loss", "peer_weights_init", "bisenetv2_config", "upernet_config",
           "build_model", "load_trained", "load_resnet50_v1c_state", "MODEL_FILE", "TRAIN_JSON"]

MODEL_NAMES = ("bisenetv2", "upernet", "lfd", "draem_unet")
MODEL_FILE = "model.safetensors"
TRAIN_JSON = "train.json"
RANDOM_INIT = "random-init"


def _norm_cfg() -> dict:
    return dict(type="BN", requires_grad=True)


def _ce(weight: float = 1.0) -> dict:
    # avg_non_ignore=True: PyTorch's mean; identical to mmseg's default here (no ignored pixels), minus its warning
    return dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=weight, avg_non_ignore=True)


def bisenetv2_config(num_classes: int = 2):
    """mmseg's BiSeNetV2 + FCN decode head + 4 auxiliary FCN heads (ConfigDict for ``MODELS.build``)."""
    from mmengine.config import ConfigDict

    norm = _norm_cfg()
    aux = [  # (in_index, in_channels, channels) of mmseg's 4 auxiliary heads
        (1, 16, 16), (2, 32, 64), (3, 64, 256), (4, 128, 1024)]
    return ConfigDict(
        type="EncoderDecoder",
        backbone=dict(type="BiSeNetV2", detail_channels=(64, 64, 128), semantic_channels=(16, 32, 64, 128),
                      semantic_expansion_ratio=6, bga_channels=128, out_indices=(0, 1, 2, 3, 4), init_cfg=None,
                      align_corners=False, norm_cfg=norm),
        decode_head=dict(type="FCNHead", in_channels=128, in_index=0, channels=1024, num_convs=1,
                         concat_input=False, dropout_ratio=0.1, num_classes=num_classes, norm_cfg=norm,
                         align_corners=False, loss_decode=_ce()),
        auxiliary_head=[dict(type="FCNHead", in_channels=cin, channels=ch, num_convs=2, num_classes=num_classes,
                             in_index=idx, norm_cfg=norm, concat_input=False, align_corners=False,
                             loss_decode=_ce()) for idx, cin, ch in aux],
        train_cfg=dict(),
        test_cfg=dict(mode="whole"),
    )


def upernet_config(num_classes: int = 2):
    """mmseg's UPerNet on ResNet-50-V1c + auxiliary FCN head (ConfigDict for ``MODELS.build``)."""
    from mmengine.config import ConfigDict

    norm = _norm_cfg()
    return ConfigDict(
        type="EncoderDecoder",
        backbone=dict(type="ResNetV1c", depth=50, num_stages=4, out_indices=(0, 1, 2, 3), dilations=(1, 1, 1, 1),
                      strides=(1, 2, 2, 2), norm_cfg=norm, norm_eval=False, style="pytorch",
                      contract_dilation=True),
        decode_head=dict(type="UPerHead", in_channels=[256, 512, 1024, 2048], in_index=[0, 1, 2, 3],
                         pool_scales=(1, 2, 3, 6), channels=512, dropout_ratio=0.1, num_classes=num_classes,
                         norm_cfg=norm, align_corners=False, loss_decode=_ce()),
        auxiliary_head=dict(type="FCNHead", in_channels=1024, in_index=2, channels=256, num_convs=1,
                            concat_input=False, dropout_ratio=0.1, num_classes=num_classes, norm_cfg=norm,
                            align_corners=False, loss_decode=_ce(0.4)),
        train_cfg=dict(),
        test_cfg=dict(mode="whole"),
    )


def _mmseg_registry():
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    return MODELS


def _quiet_init_weights(net: nn.Module) -> None:
    """``net.init_weights()`` without mmengine's per-parameter INFO dump (thousands of log lines)."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        net.init_weights()
    finally:
        logger.setLevel(level)


class SegModel(nn.Module):
    """``forward(x) -> logits [B,C,H,W]`` at the input size; ``loss(x, target) -> {name: scalar}``;
    ``predict(x) -> float [B,H,W]`` (softmax probability of class 1, no grad)."""

    name: str = ""
    num_classes: int = 2
    backbone_init: str = RANDOM_INIT

    def loss(self, x: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.forward(x).float(), dim=1)[:, 1]


class MMSegModel(SegModel):
    """An mmseg ``EncoderDecoder`` (built from a ConfigDict), called through its own methods."""

    def __init__(self, name: str, model_cfg, num_classes: int = 2):
        super().__init__()
        self.name, self.num_classes = name, num_classes
        self.net = _mmseg_registry().build(model_cfg)
        _quiet_init_weights(self.net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from mmseg.models.utils import resize

        logits = self.net.decode_head(self.net.extract_feat(x))
        return resize(logits, size=x.shape[-2:], mode="bilinear", align_corners=self.net.align_corners)

    def loss(self, x: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """mmseg's decode-head + auxiliary-head losses (``EncoderDecoder.loss``), accuracies dropped."""
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample

        samples = []
        for t in target:
            s = SegDataSample(gt_sem_seg=PixelData(data=t[None].long()))
            s.set_metainfo({"img_shape": tuple(x.shape[-2:]), "ori_shape": tuple(x.shape[-2:])})
            samples.append(s)
        losses = self.net.loss(x, samples)
        return {k: v for k, v in losses.items() if "loss" in k}

    def load_backbone(self, state: Mapping[str, torch.Tensor], source: str) -> None:
        own = self.net.backbone.state_dict()
        missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
        if missing:
            raise CheckpointError(
                f"{source}: not a ResNet-50-V1c state dict: {len(missing)} backbone keys missing, e.g. {missing[:3]} "
                "(expected mmseg's open-mmlab://resnet50_v1c weights, resnet50_v1c-2cccc1ad.pth)"
            )
        bad = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        if bad:
            raise CheckpointError(f"{source}: shape mismatch for {bad[:3]}")
        self.net.backbone.load_state_dict({k: state[k] for k in own if k in state}, strict=False)


class LFDModel(SegModel):
    """:class:`downstream.segmentation.lfd.LFD` with mmseg's CrossEntropyLoss."""

    def __init__(self, num_classes: int = 2):
        super().__init__()

        self.name, self.num_classes = "lfd", num_classes
        self.net = LFD(num_classes)
        self.criterion = _mmseg_registry().build(_ce())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss(self, x: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss_ce": self.criterion(self.forward(x), target.long(), ignore_index=255)}


def peer_focal_loss(prob: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, smooth: float = 1e-5) -> torch.Tensor:
    """The focal loss of AnomalyDiffusion's (and DRAEM's) segmentation training, on softmax probabilities
    ``prob`` [B,C,H,W] and class indices ``target`` [B,H,W]: the one-hot target clamped to [smooth/(C-1), 1-smooth],
    p_t = sum(onehot * prob) + smooth, loss = mean(-(1 - p_t)^gamma * log p_t) (alpha = 1 per class)."""
    c = prob.shape[1]
    p = prob.permute(0, 2, 3, 1).reshape(-1, c)
    onehot = torch.nn.functional.one_hot(target.reshape(-1).long(), c).to(p.dtype)
    onehot = onehot.clamp(smooth / (c - 1), 1.0 - smooth)
    pt = (onehot * p).sum(1) + smooth
    return (-(1 - pt).pow(gamma) * pt.log()).mean()


def peer_weights_init(m: nn.Module) -> None:
    """AnomalyDiffusion's ``weights_init`` (train-localization.py): conv weights N(0, 0.02), BatchNorm N(1, 0.02), 0."""
    name = m.__class__.__name__
    if "Conv" in name and getattr(m, "weight", None) is not None:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


class DraemUNetModel(SegModel):
    """DRAEM's discriminative U-Net (anomalib) with the peer's initialisation, input range and focal loss."""

    backbone_init = "random-init (N(0, 0.02), AnomalyDiffusion's weights_init)"

    def __init__(self, num_classes: int = 2, base_width: int = 64):
        super().__init__()
        from anomalib.models.image.draem.torch_model import DiscriminativeSubNetwork

        self.name, self.num_classes = "draem_unet", num_classes
        self.net = DiscriminativeSubNetwork(in_channels=3, out_channels=num_classes, base_width=base_width)
        self.net.apply(peer_weights_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from downstream.segmentation.data import IMAGENET_MEAN, IMAGENET_STD

        mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
        return self.net(x * std + mean)  # the peer feeds RGB in [0, 1]

    def loss(self, x: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"loss_focal": peer_focal_loss(torch.softmax(self.forward(x).float(), dim=1), target)}


def _load_state_file(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
            raise CheckpointError(f"{path}: cannot read state dict: {e}") from e
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, got {type(state).__name__}")
    out = {}
    for k, v in state.items():
        for prefix in ("module.", "backbone."):
            k = k.removeprefix(prefix)
        out[k] = v
    return out


def load_resnet50_v1c_state(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"downstream.pretrained_backbones.resnet50: {path} not found (mmseg's ImageNet ResNet-50-V1c weights, "
            "resnet50_v1c-2cccc1ad.pth from open-mmlab://resnet50_v1c; set it to `random` for random init)"
        )
    return _load_state_file(path)


def load_resnet18_state(path: str | Path) -> dict[str, torch.Tensor]:
    """A torchvision ``resnet18`` state dict (LFD's trunks) from ``.pth``/``.pt`` or ``.safetensors``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"downstream.pretrained_backbones.resnet18: {path} not found (an ImageNet torchvision resnet18 "
            "state dict, e.g. resnet18-f37072fd.pth; set it to `random` for random init)"
        )
    return _load_state_file(path)


def build_model(name: str, cfg: Mapping, num_classes: int = 2, load_pretrained: bool = True) -> SegModel:
    """The segmentation model ``name`` (one of MODEL_NAMES); pretrained backbone per config when asked.

    ``model.backbone_init`` is ``"pretrained:<path>"`` or ``"random-init"`` (``downstream.pretrained_backbones``
    set to ``random``, or ``load_pretrained`` off: :func:`load_trained` restores the recorded value).
    """
    if name not in MODEL_NAMES:
        raise ConfigError(f"downstream model {name!r} unknown (choose from {', '.join(MODEL_NAMES)})")
    key = {"upernet": "resnet50", "lfd": "resnet18"}.get(name)
    # a path, a file name under $TORCH_HOME/hub/checkpoints, or `random` (seas.run.config.resolve_backbone: a
    # missing file or an unset key is a ConfigError naming the file and where it comes from)
    path = resolve_backbone(cfg, key) if key and load_pretrained else None
    state = None
    if path:  # read (and fail on a missing file) before building the network
        state = load_resnet50_v1c_state(path) if name == "upernet" else load_resnet18_state(path)
    if name == "bisenetv2":
        model: SegModel = MMSegModel(name, bisenetv2_config(num_classes), num_classes)
    elif name == "upernet":
        model = MMSegModel(name, upernet_config(num_classes), num_classes)
        if state is not None:
            model.load_backbone(state, str(path))
    elif name == "draem_unet":
        model = DraemUNetModel(num_classes)
    else:
        model = LFDModel(num_classes)
        if state is not None:
            model.net.load_backbone(state)
    if state is not None:
        model.backbone_init = f"pretrained:{path}"
    return model


def load_trained(checkpoint_dir: str | Path, cfg: Mapping, device="cpu") -> SegModel:
    """The model trained by ``python -m downstream.train_seg`` in ``checkpoint_dir`` (eval mode, on ``device``)."""
    from safetensors.torch import load_file

    ckpt = Path(checkpoint_dir)
    meta_path, weights = ckpt / TRAIN_JSON, ckpt / MODEL_FILE
    for p in (meta_path, weights):
        if not p.is_file():
            raise CheckpointError(f"{p}: missing; train the model first (python -m downstream.train_seg … --out {ckpt})")
    from seas.data.integrity import check_checkpoint_dir

    check_checkpoint_dir(ckpt)  # a truncated model.safetensors or train.json is named before anything loads
    meta = json.loads(meta_path.read_text())
    name = meta.get("model")
    if name not in MODEL_NAMES:
        raise CheckpointError(f"{meta_path}: unknown model {name!r}")
    model = build_model(name, cfg, num_classes=int(meta.get("num_classes", 2)), load_pretrained=False)
    state = load_file(str(weights))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{weights}: does not match a {name} model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    model.backbone_init = meta.get("backbone_init", RANDOM_INIT)
    return model.to(device).eval()

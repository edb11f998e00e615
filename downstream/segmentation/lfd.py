"""LFD: the lightweight bilateral segmentation network of "Exploiting Low-level Representations for
Ultra-Fast Road Segmentation" (Zhou et al., IEEE T-ITS 2024). Our implementation, built from torchvision's
ResNet-18 stages.

* Spatial-detail branch — the first stage of ResNet-18 (stem + ``layer1``: 64 channels at 1/4 resolution)
  on the full-resolution image: low-level, high-resolution features; a 1×1 conv-BN-ReLU lifts them to 128.
* Context branch — the input is first downsampled *asymmetrically* (height ÷ 2, width ÷ 4 at the paper's
  setting, which suits wide road images) and passed through ResNet-18's stem, ``layer1`` and ``layer2``
  (128 channels). On the smaller input this reaches a receptive field comparable to ResNet-18's third stage
  on the full image at a fraction of the cost. Two residual aggregation blocks of factorised depthwise
  convolutions (1×5 then 5×1, the first dilated horizontally) + a pointwise conv-BN-ReLU enlarge it further.
* Selective fusion — the context features, upsampled to the detail resolution, and the detail features are
  concatenated; a small 1×1-conv MLP gives a per-pixel attention a ∈ (0, 1) (sigmoid);
  fused = a · detail + context.
* Head — 1×1 conv-BN-ReLU, 1×1 conv to the classes, bilinear upsampling to the input size.

Two independent ResNet-18 trunks feed the branches (they do not share weights). At the paper's setting
(2 classes) the network has 936,067 parameters (the paper: 0.936M). ImageNet weights for the trunks come from
a torchvision ``resnet18`` state dict (``load_resnet18_weights``); there is no download here.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from seas.run.errors import CheckpointError
# Lazy imports: torchvision's resnet18 is imported where the trunks are built (heavy optional import).

__all__ = ["LFD", "SelectiveFusion", "ContextAggregation", "count_parameters"]


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _resnet18_trunk(stages: int) -> nn.Sequential:
    """ResNet-18's stem and its first ``stages`` residual stages (torchvision module names kept)."""
    from torchvision.models import resnet18

    net = resnet18(weights=None)
    parts = [("conv1", net.conv1), ("bn1", net.bn1), ("relu", net.relu), ("maxpool", net.maxpool)]
    parts += [(f"layer{i}", getattr(net, f"layer{i}")) for i in range(1, stages + 1)]
    return nn.Sequential(OrderedDict(parts))


class ContextAggregation(nn.Module):
    """Residual block: depthwise 1×k (dilated along the width) -> depthwise k×1 -> pointwise conv-BN-ReLU."""

    def __init__(self, channels: int, kernel: int = 5, dilation: int = 1):
        super().__init__()
        pad = dilation * (kernel - 1) // 2
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, (1, kernel), padding=(0, pad), dilation=(1, dilation), groups=channels),
            nn.Conv2d(channels, channels, (kernel, 1), padding=(kernel // 2, 0), groups=channels),
            _conv_bn_relu(channels, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SelectiveFusion(nn.Module):
    """Pixel-wise attention between detail (low-level) and context features: a·detail + context."""

    def __init__(self, channels: int = 128, hidden: int = 128):
        super().__init__()
        self.attention = nn.Sequential(_conv_bn_relu(2 * channels, hidden), nn.Conv2d(hidden, 1, 1))

    def forward(self, detail: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        context = F.interpolate(context, size=detail.shape[-2:], mode="bilinear", align_corners=False)
        a = torch.sigmoid(self.attention(torch.cat([context, detail], dim=1)))
        return a * detail + context


class LFD(nn.Module):
    """LFD segmentation network. ``forward(x [B,3,H,W]) -> logits [B,num_classes,H,W]``.

    ``context_downsample`` = (height factor, width factor) of the context branch's input (paper: (2, 4)).
    """

    def __init__(self, num_classes: int = 2, context_downsample: tuple[int, int] = (2, 4), channels: int = 128):
        super().__init__()
        self.context_downsample = tuple(int(v) for v in context_downsample)
        self.detail = _resnet18_trunk(stages=1)
        self.detail_proj = _conv_bn_relu(64, channels)
        self.context = _resnet18_trunk(stages=2)
        self.aggregate = nn.Sequential(ContextAggregation(channels, 5, dilation=2), ContextAggregation(channels, 5, 1))
        self.fusion = SelectiveFusion(channels)
        self.head = nn.Sequential(_conv_bn_relu(channels, channels), nn.Conv2d(channels, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        fy, fx = self.context_downsample
        small = F.interpolate(x, size=(max(1, h // fy), max(1, w // fx)), mode="bilinear", align_corners=False)
        context = self.aggregate(self.context(small))
        detail = self.detail_proj(self.detail(x))
        logits = self.head(self.fusion(detail, context))
        return F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)

    def load_backbone(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load ImageNet ResNet-18 weights (torchvision key names) into both trunks."""
        for trunk in (self.detail, self.context):
            own = trunk.state_dict()
            missing = [k for k in own if k not in state]
            if missing:
                raise CheckpointError(f"ResNet-18 state dict lacks {len(missing)} keys, e.g. {missing[:3]}")
            bad = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
            if bad:
                raise CheckpointError(f"ResNet-18 state dict: shape mismatch for {bad[:3]}")
            trunk.load_state_dict({k: state[k] for k in own})


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

"""The training augmentation (augmentation.rotate90 / flip, per product): one draw, applied alike to images,
masks and latents (docs/METHOD.md, "Augmentation")."""
from __future__ import annotations

import logging
from typing import Mapping
# Lazy imports: torch is imported inside the functions that use it: the workflow imports this package at parse time.

log = logging.getLogger(__name__)


def draw_augmentation(generator=None, rotate90: bool = True, flip: bool = True) -> tuple[int, bool]:
    """The random part of :func:`augment_pair`: (k quarter turns, horizontal flip), drawn from ``generator``."""
    import torch

    k = int(torch.randint(0, 4, (1,), generator=generator)) if rotate90 else 0
    flipped = bool(torch.rand(1, generator=generator) < 0.5) if flip else False
    return k, flipped


def apply_augmentation(x, k: int, flipped: bool):
    """Rotate (C,H,W) ``x`` by k·90° and flip it horizontally if ``flipped``."""
    import torch

    if k:
        x = torch.rot90(x, k, dims=(-2, -1))
    if flipped:
        x = torch.flip(x, dims=(-1,))
    return x


def augment_pair(image, mask, generator=None, rotate90: bool = True, flip: bool = True):
    """Rotate by k·90° and optionally flip horizontally, identically for image (C,H,W) and mask (C',H,W)."""
    k, flipped = draw_augmentation(generator, rotate90, flip)
    return apply_augmentation(image, k, flipped), apply_augmentation(mask, k, flipped)


def augmentation_for(cfg: Mapping, product: str) -> tuple[bool, bool]:
    """(rotate90, flip) for a product: ``augmentation`` defaults with ``augmentation.per_product`` overrides.

    Logged, so that augmenting a product whose orientation *is* the defect (metal_nut flip,
    transistor misplaced) is visible, not silent.
    """
    aug = cfg["augmentation"]
    over = aug["per_product"].get(product, {})
    rot, flip = bool(over.get("rotate90", aug["rotate90"])), bool(over.get("flip", aug["flip"]))
    log.info("augmentation for %s: rotate90=%s flip=%s%s", product, rot, flip, " (per-product override)" if over else "")
    return rot, flip

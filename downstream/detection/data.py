"""The detectors' training data of one product: its normal training images, and for the ``+ pairs`` variants a
method's generated pairs with each pair's clean reconstruction target.

DRAEM learns to reconstruct the clean image under the anomaly it is shown, so every anomalous training sample needs
its normal counterpart. Generators that inpaint ship it (AnomalyDiffusion's ``ori/``, MAGIC's ``normal/``); SeaS
generates from noise but writes each pair's normal-prompt twin from the same noise and seed into
``<type>/references/`` (``generation.reference_images``): that twin is the target (protocol choice
``DRAEM target: normal-prompt twin``). A pair without a twin (an imported method, or generation without
references) gets, with ``downstream.detector_train.<det>.missing_target: nearest_normal``, the product's training
normal closest to it in mean squared pixel difference (``DRAEM target: nearest normal``), and with ``error`` (the
default) stops with :class:`MissingTargetError` naming the pair.
"""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np

from seas.data.images import load_image, load_mask
from seas.data.pairs import GOOD, iter_pairs
from seas.run.errors import DataError

__all__ = ["REFERENCES", "TrainPair", "MissingTargetError", "product_pairs", "load_rgb", "load_binary_mask",
           "nearest_normal"]

REFERENCES = "references"  # seas.method.generate.REFERENCES (not imported: a floor above would load diffusers)


class MissingTargetError(DataError):
    """A generated pair has no clean reconstruction target (no ``references/`` twin)."""


class TrainPair(NamedTuple):
    image: str
    mask: str
    target: str | None   # the clean twin (None: to be chosen by missing_target)
    type: str


def product_pairs(pairs_root: str | Path, product: str) -> list[TrainPair]:
    """The anomalous pairs of one product (``good`` folders left out: the normals come from the split) with their
    ``references/`` twins where present."""
    out = []
    for p in iter_pairs(pairs_root, [product]):
        if p.type == GOOD:
            continue
        twin = Path(p.image).parent.parent / REFERENCES / Path(p.image).name
        out.append(TrainPair(p.image, p.mask, str(twin) if twin.is_file() else None, p.type))
    if not out:
        raise DataError(f"{pairs_root}: no anomalous pairs of product {product!r}")
    return out


def load_rgb(path: str, size: int, policy: str) -> np.ndarray:
    """float32 [3,H,W] in [0, 1]."""
    return np.asarray(load_image(path, size, policy), dtype=np.float32).transpose(2, 0, 1) / 255.0


def load_binary_mask(path: str | None, size: int, policy: str) -> np.ndarray:
    """float32 [1,H,W] in {0, 1}."""
    return load_mask(path, size, policy)[None].astype(np.float32)


def nearest_normal(image: np.ndarray, normals: Sequence[np.ndarray]) -> int:
    """Index of the normal image closest to ``image`` in mean squared difference."""
    if not len(normals):
        raise DataError("no normal training image to take a reconstruction target from")
    return int(np.argmin([float(np.mean((image - n) ** 2)) for n in normals]))

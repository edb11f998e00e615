"""torch Datasets for the downstream segmentation models.

* :class:`SegTrainDataset` — a method's image-mask pairs (``seas.data.pairs.iter_pairs``) + the normal training
  images of every split (all-zero masks: every ``train/good`` image with ``downstream.normal_images: all``, the
  paper and the authors' downstream code, else the first N; independent of the generator's
  ``split.num_normal_images``) (+ the splits' real training anomalies, the generator's 1/3, when
  ``downstream.include_real_anomalies``, as the authors' downstream code), brought to ``downstream.image_size`` by ``dataset.image_policy``,
  random horizontal / vertical flips. Items: ``(image float[3,H,W] ImageNet-normalised, mask int64[H,W])``.
  Indexable by ``i`` or by ``(i, seed)``: the training loop passes a per-sample seed so that the flips are
  reproducible across resumes and DataLoader workers.
* :class:`SegTestDataset` — the held-out anomalies + ``test/good`` of every split. Items are dicts
  ``{image: float[3,H,W] ImageNet-normalised, mask: uint8[H,W] in {0,1}, label: int, product, type, path}``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from seas.data.split import Split
from seas.data.images import load_image, load_mask
from seas.run.errors import DataError

from seas.data.integrity import check_pairs
from seas.data.pairs import Pair, iter_pairs

log = logging.getLogger(__name__)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "normalize_image", "denormalize_image", "TrainItem",
           "SegTrainDataset", "SegTestDataset", "load_splits"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_image(img) -> torch.Tensor:
    """PIL RGB -> float32 [3,H,W], (x/255 − ImageNet mean) / std (the input every model here expects)."""
    arr = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((arr - mean) / std).contiguous()


def denormalize_image(t: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`normalize_image`: float [3,H,W] in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=t.dtype).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=t.dtype).view(3, 1, 1)
    return t * std + mean


def load_splits(split_paths: Sequence[str | Path]) -> list[Split]:
    if not split_paths:
        raise DataError("no split manifests given (--splits split/*.json)")
    splits = [Split.load(p) for p in split_paths]
    seen: dict[str, str] = {}
    for p, s in zip(split_paths, splits):
        if s.product in seen:
            raise DataError(f"{p}: product {s.product!r} also in {seen[s.product]}")
        seen[s.product] = str(p)
    return splits


class TrainItem(NamedTuple):
    """One training sample's sources: image path, mask path (None = all zero), product, type, origin."""

    image: str
    mask: str | None
    product: str
    type: str
    origin: str  # "pairs" | "normal" | "real"
    #: the byte sizes the pairs manifest recorded (seas.data.pairs.Pair; None where nothing was recorded)
    image_bytes: int | None = None
    mask_bytes: int | None = None


class SegTrainDataset(Dataset):
    """Pairs of one method + normal images (+ real anomalies), resized, randomly flipped."""

    def __init__(self, items: Sequence[TrainItem], image_size: int, policy: str = "shorter_side_center_crop",
                 hflip: bool = True, vflip: bool = True):
        if not items:
            raise DataError("segmentation training set is empty")
        self.items = list(items)
        self.image_size = int(image_size)
        self.policy = policy
        self.hflip, self.vflip = hflip, vflip

    @classmethod
    def from_config(cls, cfg: Mapping, pairs_root: str | Path, split_paths: Sequence[str | Path],
                    pairs: Sequence[Pair] | None = None) -> "SegTrainDataset":
        """Pairs under ``pairs_root`` for the splits' products + their normals (+ real anomalies, per config)."""
        splits = load_splits(split_paths)
        products = [s.product for s in splits]
        if pairs is None:
            pairs = iter_pairs(pairs_root, products)
        items = [TrainItem(p.image, p.mask, p.product, p.type, "pairs", getattr(p, "image_bytes", None),
                           getattr(p, "mask_bytes", None)) for p in pairs]
        n_normal = cfg["downstream"]["normal_images"]
        for s in splits:
            items += [TrainItem(n, None, s.product, "good", "normal") for n in s.downstream_normals(n_normal)]
            if cfg["downstream"]["include_real_anomalies"]:
                items += [TrainItem(d["image"], d["mask"], s.product, t, "real")
                          for t in s.anomaly_types for d in s.train_anomalies.get(t, [])]
        return cls(items, cfg["downstream"]["image_size"], cfg["dataset"]["image_policy"])

    def __len__(self) -> int:
        return len(self.items)

    def check(self) -> int:
        """Every item's files intact before training starts (seas.data.integrity.check_pairs: images complete and of
        their recorded size, masks binary and of their image's size); DataError naming the first bad file."""
        t0 = time.perf_counter()
        n = check_pairs(self.items)
        log.info("training set: %d items intact (%.2f s)", n, time.perf_counter() - t0)
        return n

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for it in self.items:
            out[it.origin] = out.get(it.origin, 0) + 1
        return out

    def __getitem__(self, key) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key if isinstance(key, tuple) else (key, None)
        it = self.items[int(index)]
        img = load_image(it.image, self.image_size, self.policy)
        mask = load_mask(it.mask, self.image_size, self.policy, like=img)
        if mask.shape != (img.size[1], img.size[0]):
            raise DataError(f"{it.mask}: mask size {mask.shape[::-1]} differs from image {it.image} {img.size}")
        x = normalize_image(img)
        y = torch.from_numpy(mask.astype(np.int64))
        g = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        flips = torch.rand(2, generator=g)
        if self.hflip and flips[0] < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        if self.vflip and flips[1] < 0.5:
            x, y = x.flip(-2), y.flip(-2)
        return x.contiguous(), y.contiguous()


class SegTestDataset(Dataset):
    """Held-out anomalies + ``test/good`` of every split, at ``image_size`` (``policy`` as for training)."""

    def __init__(self, split_paths: Sequence[str | Path], image_size: int, policy: str = "shorter_side_center_crop"):
        self.splits = load_splits(split_paths)
        self.image_size = int(image_size)
        self.policy = policy
        self.items = [(s.product, d) for s in self.splits for d in s.test]
        if not self.items:
            raise DataError(f"no test images in the splits {[str(p) for p in split_paths]}")

    @property
    def products(self) -> list[str]:
        return [s.product for s in self.splits]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        product, d = self.items[index]
        img = load_image(d["image"], self.image_size, self.policy)
        mask = load_mask(d.get("mask"), self.image_size, self.policy, like=img)
        return {"image": normalize_image(img), "mask": torch.from_numpy(mask.astype(np.uint8)),
                "label": int(d["label"]), "product": product, "type": d["type"], "path": d["image"]}

"""A detector row's scores: the detector's anomaly maps and image scores through OUR metric code
(:class:`downstream.metrics.ProductMetrics`, the segmenters' path), never anomalib's metrics.

``predict`` takes float[B,3,H,W] in [0, 1] and returns ``(maps [B,H,W], image scores [B])``.
"""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch
from torch.utils.data import DataLoader

from seas.run.errors import CheckpointError, DataError

from downstream.metrics import ProductMetrics

__all__ = ["score_product"]


def score_product(predict: Callable, dataset, metrics: Mapping | None = None, batch_size: int = 8,
                  desc: str = "detector") -> dict:
    """The metrics row (percent, ``downstream.metrics.METRIC_COLUMNS``) of one product's test dataset
    (``downstream.segmentation.data.SegTestDataset`` items: ImageNet-normalised images, 0/1 masks)."""
    from downstream.segmentation.data import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    acc = ProductMetrics(**(metrics or {}))
    products: set[str] = set()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    with torch.no_grad():
        for batch in loader:
            x = (batch["image"] * std + mean).clamp(0, 1)
            maps, scores = predict(x)
            maps, scores = np.asarray(maps, np.float32), np.asarray(scores, np.float64).reshape(-1)
            masks = batch["mask"].numpy()
            if maps.shape != masks.shape or len(scores) != len(masks):
                raise CheckpointError(f"{desc}: maps {maps.shape} / scores {scores.shape} for masks {masks.shape}")
            for amap, mask, label, score, path in zip(maps, masks, batch["label"], scores, batch["path"]):
                try:
                    acc.update(amap, mask, int(label), image_score=float(score))
                except DataError as e:
                    raise DataError(f"{path}: {e}") from None
            products.update(batch["product"])
    if len(products) != 1:
        raise DataError(f"{desc}: expected the test images of exactly one product, got {sorted(products) or 'none'}")
    row = acc.compute()
    row["product"] = products.pop()
    return row

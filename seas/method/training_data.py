"""The training data of the generator and of the RMP: one loader and one batch draw, used by both stages.

:func:`load_train_data` reads every training anomaly (image, mask, type) and normal image of a split at the model
resolution (few-shot: small enough to keep in memory). :func:`draw_keys` draws a batch as latent-cache keys
(seas.method.latents: ``(("a" | "n", index), quarter turns, flipped)``) with the augmented masks: the abnormal
images first, then the normal ones, each with its own augmentation draw from ``generator``.

The two stages draw their image indices differently, as they always have (a named choice, kept so that a move
does not change a result): the generator without replacement while the pool is large enough (``replacement=False``:
a random permutation, then draws with replacement when the batch is larger than the pool), the RMP with
replacement (``replacement=True``).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from seas.data.augment import apply_augmentation, draw_augmentation
from seas.data.images import image_to_tensor, load_image, load_mask, mask_to_tensor
from seas.run.errors import DataError

__all__ = ["TrainData", "load_train_data", "pick", "draw_keys"]


@dataclass
class TrainData:
    anomalies: list[tuple[torch.Tensor, torch.Tensor, str]]  # (image [3,H,W] in [-1,1], mask [1,H,W] {0,1}, type)
    normals: list[torch.Tensor]  # [3,H,W] in [-1,1]


def load_train_data(split, resolution: int, policy: str = "shorter_side_center_crop", *,
                    stage: str = "generator") -> TrainData:
    """All training images of a split at ``resolution``; a DataError naming ``stage`` if it has no anomalies."""
    anomalies = [(image_to_tensor(load_image(image, resolution, policy)),
                  mask_to_tensor(load_mask(mask, resolution, policy)), typ) for image, mask, typ in split.train_pairs()]
    if not anomalies:
        raise DataError(f"split of {split.product}: no training anomalies" + ("" if stage == "generator"
                                                                                else f" for the {stage}"))
    normals = [image_to_tensor(load_image(p, resolution, policy)) for p in split.train_normals]
    return TrainData(anomalies, normals)


def pick(n: int, k: int, generator: torch.Generator, replacement: bool = False) -> list[int]:
    """``k`` indices of ``range(n)``: with ``replacement``, uniform draws; else without replacement when n >= k."""
    if k <= 0:
        return []
    if replacement or n < k:
        return torch.randint(0, n, (k,), generator=generator).tolist()
    return torch.randperm(n, generator=generator)[:k].tolist()


def draw_keys(data: TrainData, n_abnormal: int, n_normal: int, generator: torch.Generator, rotate90: bool = True,
              flip: bool = True, *, replacement: bool = False) -> tuple[list, list[torch.Tensor], list[str]]:
    """(latent keys [A + N], augmented masks [A], types [A]) of one batch: abnormal images first."""
    keys, masks, types = [], [], []
    for i in pick(len(data.anomalies), n_abnormal, generator, replacement):
        _, mask, typ = data.anomalies[i]
        k, flipped = draw_augmentation(generator, rotate90, flip)
        keys.append((("a", i), k, flipped)), masks.append(apply_augmentation(mask, k, flipped)), types.append(typ)
    if n_normal > 0 and not data.normals:
        raise DataError("batch_normal > 0 but the split has no normal training images")
    for i in pick(len(data.normals), n_normal, generator, replacement):
        keys.append((("n", i), *draw_augmentation(generator, rotate90, flip)))
    return keys, masks, types

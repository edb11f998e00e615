"""AnomalyDiffusion's downstream protocol (``downstream.protocol: peer_per_product_unet``), honestly.

As ``train-localization.py`` of sjtuplayer/anomalydiffusion trains it, per product (the workflow's scope
``product-<P>``): DRAEM's discriminative U-Net (``draem_unet``, downstream.segmentation.models) from its random
initialisation, Adam (``downstream.train.draem_unet.lr``, 1e-4), MultiStepLR x0.2 at 80 % and 90 % of the
``epochs`` (200), ``samples_per_epoch`` (500) samples per epoch in batches of ``batch_size`` (8), each sample a normal
training image (all-zero mask) or, with probability 1/2, a generated pair (a uniform anomaly type, then a uniform pair
of it), at ``downstream.image_size`` (256 there), no flips; the focal loss on the softmax. After every epoch the
model is scored and kept when image AUROC + pixel AUROC + pixel AP + PRO beats the best so far (the script's rule).

Where it is scored is the switch ``downstream.peer_unet.select_on``:

* ``validation`` (default): a split carved from the training data, seeded (``derive_seed(seed, "peer-unet-val",
  product)``): ``validation_fraction`` of the product's pairs and of its normal images (at least one of each), never
  trained on. No test image is read before the evaluate stage.
* ``test``: the product's held-out test set (the split manifest's ``test``), as the script does (acknowledged in
  sjtuplayer/anomalydiffusion#41): the tables' ``protocol`` column says ``checkpoint picked on test``.

Departures from the script: images go through the pipeline's reader (``dataset.image_policy``) instead of a plain
resize; the image score of the evaluate stage is the max of the map (the script: the max of its 21 x 21 mean filter);
the run is not resumable (the script's is not either: an interrupted job starts over).
"""
from __future__ import annotations

import json
import logging
import math
import shutil
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from seas.data.images import load_image, load_mask
from seas.run.errors import DataError
from seas.run.runtime import atomic_dir, derive_seed, get_device, save_safetensors_atomic, seed_everything

from downstream.segmentation.data import SegTestDataset, SegTrainDataset, TrainItem, load_splits, normalize_image
from downstream.segmentation.models import MODEL_FILE, TRAIN_JSON, build_model

__all__ = ["SELECTION_COLUMNS", "carve_validation", "SelectionDataset", "epoch_samples", "selection_score",
           "train_peer_unet"]

log = logging.getLogger(__name__)

#: the script's checkpoint rule: the sum of these (downstream.metrics columns, percent)
SELECTION_COLUMNS = ("image_auroc", "pixel_auroc", "pixel_ap", "pixel_pro")


def carve_validation(items: Sequence[TrainItem], fraction: float, seed: int) -> tuple[list[TrainItem], list[TrainItem]]:
    """(train, validation): per product, ``fraction`` of its pairs and of its normal images (at least one of each,
    and at least one of each left to train on), drawn with ``derive_seed(seed, "peer-unet-val", product, origin)``."""
    train, val = [], []
    for product in sorted({it.product for it in items}):
        for origin in ("pairs", "normal"):
            group = [it for it in items if it.product == product and it.origin == origin]
            if len(group) < 2:
                raise DataError(f"{product}: {len(group)} {origin} image(s); downstream.peer_unet.select_on: "
                                "validation carves at least one from the training data and trains on the rest")
            k = min(len(group) - 1, max(1, int(round(fraction * len(group)))))
            rng = np.random.default_rng(derive_seed(seed, "peer-unet-val", product, origin))
            held = set(rng.permutation(len(group))[:k].tolist())
            val += [it for i, it in enumerate(group) if i in held]
            train += [it for i, it in enumerate(group) if i not in held]
        train += [it for it in items if it.product == product and it.origin not in ("pairs", "normal")]
    return train, val


class SelectionDataset(Dataset):
    """Validation items as the evaluate stage's datasets give them (``{image, mask, label, product, type, path}``)."""

    def __init__(self, items: Sequence[TrainItem], image_size: int, policy: str):
        self.items, self.image_size, self.policy = list(items), int(image_size), policy

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        it = self.items[i]
        img = load_image(it.image, self.image_size, self.policy)
        mask = load_mask(it.mask, self.image_size, self.policy, like=img)
        return {"image": normalize_image(img), "mask": torch.from_numpy(mask.astype(np.uint8)),
                "label": int(mask.any()), "product": it.product, "type": it.type, "path": it.image}


def epoch_samples(items: Sequence[TrainItem], n: int, seed: int, epoch: int) -> list[int]:
    """The ``n`` item indices of one epoch (the script's sampling): each a normal image (uniform) or, with
    probability 1/2, an anomalous item: a uniform anomaly type, then a uniform item of it."""
    normals = [i for i, it in enumerate(items) if it.mask is None]
    by_type: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        if it.mask is not None:
            by_type.setdefault(it.type, []).append(i)
    types = sorted(by_type)
    if not normals or not types:
        raise DataError("peer_per_product_unet: needs normal training images and generated pairs "
                        f"(got {len(normals)} normal, {sum(map(len, by_type.values()))} anomalous)")
    rng = np.random.default_rng(derive_seed(seed, "peer-unet-epoch", epoch))
    out = []
    for _ in range(n):
        if rng.random() < 0.5:
            out.append(normals[int(rng.integers(0, len(normals)))])
        else:
            group = by_type[types[int(rng.integers(0, len(types)))]]
            out.append(group[int(rng.integers(0, len(group)))])
    return out


def selection_score(row: Mapping) -> float:
    """The script's checkpoint criterion: image AUROC + pixel AUROC + pixel AP + PRO (undefined terms count 0)."""
    return float(sum(0.0 if not math.isfinite(float(row[c])) else float(row[c]) for c in SELECTION_COLUMNS))


class _Indexed(Dataset):
    def __init__(self, base: SegTrainDataset, indices: Sequence[int]):
        self.base, self.indices = base, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.base[self.indices[i]]


def train_peer_unet(cfg: Mapping, pairs_root: str | Path, split_paths: Sequence[str | Path], out: str | Path,
                    method: str | None = None, progress: bool = True, allow_test_copies: bool = False) -> dict:
    """Train ``draem_unet`` as the peer's script does; write ``out/model.safetensors`` (the selected epoch's
    weights) + ``out/train.json``; returns the train.json dict."""
    from downstream.evaluate import evaluate_dataset
    from downstream.train_seg import check_test_copies

    d = cfg["downstream"]
    t, sel = d["train"]["draem_unet"], d["peer_unet"]
    method = method or Path(pairs_root).name
    out = Path(out)
    device = get_device(cfg)
    seed = derive_seed(cfg["seed"], "downstream-train", "draem_unet", method)
    seed_everything(seed % 2**32)
    full = SegTrainDataset.from_config(cfg, pairs_root, split_paths)
    test_copies = check_test_copies(cfg, method, full, split_paths, allow_test_copies)
    size, policy = int(d["image_size"]), cfg["dataset"]["image_policy"]
    if sel["select_on"] == "validation":
        train_items, val_items = carve_validation(full.items, float(sel["validation_fraction"]), seed)
        selection = SelectionDataset(val_items, size, policy)
        log.info("checkpoint choice on a validation split of the training data: %d images", len(val_items))
    else:
        train_items = full.items
        selection = SegTestDataset([str(p) for p in split_paths], size, policy)
        products = {s.product for s in load_splits(split_paths)}
        if len(products) != 1:
            raise DataError(f"select_on test scores one product's test set; got the splits of {sorted(products)}")
        log.warning("checkpoint choice on the TEST set (downstream.peer_unet.select_on: test), as the peer's script")
    train = SegTrainDataset(train_items, size, policy, hflip=False, vflip=False)
    model = build_model("draem_unet", cfg).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=float(t["lr"]))
    epochs, n_per_epoch, batch = int(t["epochs"]), int(t["samples_per_epoch"]), int(t["batch_size"])
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [epochs * 0.8, epochs * 0.9], gamma=0.2)
    kw = {"pro_max_fpr": 0.3}  # the selection's PRO as the script's calculate_au_pro integrates it (to FPR 0.3)
    best, best_epoch, best_state, history, scores = 0.0, None, None, [], []
    steps, t0 = 0, time.perf_counter()
    for epoch in tqdm(range(epochs), desc=f"draem_unet/{method}", disable=not progress, dynamic_ncols=True):
        model.train()
        loader = DataLoader(_Indexed(train, epoch_samples(train.items, n_per_epoch, seed, epoch)), batch_size=batch,
                            shuffle=False, num_workers=int(t["num_workers"]))
        for x, y in loader:
            x, y = x.to(device), y.to(device)
            loss = model.loss(x, y)["loss_focal"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
            steps += 1
        sched.step()
        model.eval()
        if len(set(_products(selection))) == 1:
            row = evaluate_dataset(model.predict, selection, batch_size=batch, device=device, metrics=kw,
                                   desc=f"select epoch {epoch}")
        else:
            row = _multi_product_row(model, selection, batch, device, kw)
        score = selection_score(row)
        scores.append(round(score, 4))
        if score > best:  # the script: strictly better than the best so far (starting at 0)
            best, best_epoch = score, epoch
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    seconds = time.perf_counter() - t0
    if best_state is None:  # never above 0 (e.g. every term undefined): the last epoch
        best_epoch, best_state = epochs - 1, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    info = {
        "model": "draem_unet", "method": method, "pairs_root": str(pairs_root),
        "products": sorted({it.product for it in full.items}), "protocol": "peer_per_product_unet",
        "iterations": steps, "epochs": epochs, "samples_per_epoch": n_per_epoch, "batch_size": batch,
        "image_size": size, "optimizer": "adam", "lr": float(t["lr"]), "schedule": "MultiStepLR x0.2 at 80%, 90%",
        "select_on": sel["select_on"], "n_selection_images": len(selection), "best_epoch": best_epoch,
        "selection_score": round(best, 4), "selection_scores": scores, "backbone_init": model.backbone_init,
        "num_classes": model.num_classes, "train_items": train.counts(),
        "first_loss": history[0] if history else math.nan,
        "final_loss": float(np.mean(history[-20:])) if history else math.nan,
        "seconds": round(seconds, 2), "device": str(device), "seed": seed,
        "include_real_anomalies": bool(d["include_real_anomalies"]), "normal_images": d["normal_images"],
        "test_copies": test_copies, "test_copies_allowed": bool(allow_test_copies),
    }
    with atomic_dir(out) as tmp:
        save_safetensors_atomic(best_state, tmp / MODEL_FILE, metadata={"model": "draem_unet", "method": method})
        (tmp / TRAIN_JSON).write_text(json.dumps(info, indent=1))
    shutil.rmtree(Path(str(out) + ".work"), ignore_errors=True)
    log.info("draem_unet/%s: %d epochs (%d steps) in %.0f s; checkpoint of epoch %d (selection %.2f on %s)", method,
             epochs, steps, seconds, best_epoch, best, sel["select_on"])
    return info


def _products(ds) -> list[str]:
    return [it.product for it in ds.items] if isinstance(ds, SelectionDataset) else [p for p, _ in ds.items]


def _multi_product_row(model, selection, batch, device, kw) -> dict:
    """Several products in one validation set (a model trained on several splits): the products' mean row."""
    from downstream.evaluate import evaluate_dataset

    rows = []
    for p in sorted(set(_products(selection))):
        sub = SelectionDataset([it for it in selection.items if it.product == p], selection.image_size,
                               selection.policy)
        rows.append(evaluate_dataset(model.predict, sub, batch_size=batch, device=device, metrics=kw, desc=p))
    return {c: float(np.nanmean([r[c] for r in rows])) for c in SELECTION_COLUMNS}

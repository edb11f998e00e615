"""Score a trained segmentation model on the held-out test images of every product: one CSV row per product.

    python -m downstream.evaluate --config C --model MODEL --checkpoint segmentation/MODEL/M \\
        --splits split/*.json --out segmentation/MODEL/M/scores.csv

Products are evaluated one after the other (one split manifest = one product), so only one product's pixels
are ever held (see :class:`downstream.metrics.ProductMetrics` for the memory bound). The CSV has the columns
:data:`SCORE_COLUMNS`: ``product``, the metrics of :data:`downstream.metrics.METRIC_COLUMNS` in percent, and
counts; a last row ``product = mean`` averages each metric over the products (a NaN metric stays NaN).
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import math
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence
import json

import numpy as np
from tqdm import tqdm

from seas.run.cli_types import nonneg_int, positive_int
from seas.run.config import add_config_arguments, config_from_args
from seas.run.errors import CheckpointError, DataError
from seas.data.integrity import check_csv, check_split_files
from seas.data.split import Split

from downstream.metrics import INFO_COLUMNS, METRIC_COLUMNS, ProductMetrics
from seas.run.runtime import atomic_write_text, cli, get_device, setup_logging
from seas.run.stages import STAGES
# Lazy imports: torch and the models (mmseg) are imported inside the functions that use them: downstream.report.tables imports this module in the base env.

log = logging.getLogger(__name__)

#: the config keys this stage reads: declared once, in the stage registry (seas.run.stages)
CONFIG_KEYS = STAGES["evaluate"].config_keys

__all__ = ["SCORE_COLUMNS", "MEAN_ROW", "metric_kwargs", "evaluate_dataset", "evaluate", "add_mean_row",
           "write_scores", "read_scores", "main"]

SCORE_COLUMNS = ["product"] + METRIC_COLUMNS + INFO_COLUMNS
MEAN_ROW = "mean"
#: what a complete scores file holds (seas.data.integrity.check_csv; the tables check every file before reading)
SCORES_CHECK = {"columns": ["product"] + METRIC_COLUMNS, "numeric": METRIC_COLUMNS, "last_row": {"product": MEAN_ROW}}
MODELS = ("bisenetv2", "upernet", "lfd", "draem_unet")  # = downstream.segmentation.models.MODEL_NAMES


def metric_kwargs(cfg: Mapping) -> dict:
    """:class:`ProductMetrics` arguments from ``downstream.iou_threshold`` and ``downstream.evaluation``."""
    d = cfg["downstream"]
    e = d["evaluation"]
    return dict(
        iou_threshold=d["iou_threshold"],
        best_iou_max_fpr=e["best_iou_max_fpr"],
        pro_max_fpr=e["pro_max_fpr"],
        max_exact_pixels=e["max_exact_pixels"],
        bins=e["histogram_bins"],
    )


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _collate(items: list[dict]) -> dict:
    import torch

    return {
        "image": torch.stack([torch.as_tensor(it["image"]) for it in items]),
        "mask": np.stack([_to_numpy(it["mask"]).astype(np.uint8) for it in items]),
        "label": [int(it["label"]) for it in items],
        "product": [str(it["product"]) for it in items],
        "path": [str(it.get("path", "")) for it in items],
    }


def evaluate_dataset(predict: Callable, dataset, *, batch_size: int = 8, num_workers: int = 0, device="cpu",
                     metrics: Mapping | None = None, desc: str = "evaluate") -> dict:
    """Run ``predict`` (float[B,3,H,W] -> float[B,H,W] anomaly probability) over one product's dataset.

    Returns the metrics row of :class:`ProductMetrics` with ``product`` set (the dataset must hold one product).
    """
    import torch
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=_collate)
    acc = ProductMetrics(**(metrics or {}))
    products: set[str] = set()
    with torch.no_grad():
        for batch in tqdm(loader, desc=desc, unit="batch", leave=False):
            out = predict(batch["image"].to(device))
            maps = _to_numpy(out.float() if hasattr(out, "float") else out).astype(np.float32, copy=False)
            masks = batch["mask"]
            if maps.shape != masks.shape:
                raise CheckpointError(f"{desc}: the model returned maps of shape {tuple(maps.shape)} for masks of "
                                      f"shape {tuple(masks.shape)} (predict must return [B,H,W] at input size)")
            for amap, mask, label, path in zip(maps, masks, batch["label"], batch["path"]):
                try:
                    acc.update(amap, mask, label)
                except DataError as e:
                    raise DataError(f"{path}: {e}") from None
            products.update(batch["product"])
    if len(products) != 1:
        raise DataError(f"{desc}: expected the test images of exactly one product, got {sorted(products) or 'none'}")
    row = acc.compute()
    row["product"] = products.pop()
    return row


def _default_dataset_factory(split_path: Path, image_size: int, policy: str):
    from downstream.segmentation.data import SegTestDataset

    return SegTestDataset([str(split_path)], image_size, policy=policy)


def evaluate(predict: Callable, split_paths: Sequence, cfg: Mapping, *, device="cpu", batch_size: int | None = None,
             num_workers: int | None = None, dataset_factory: Callable | None = None) -> list[dict]:
    """One metrics row per split manifest (= product), in the order given, plus the ``mean`` row.

    ``dataset_factory(split_path, image_size, policy)`` builds a product's test dataset (default:
    ``downstream.segmentation.data.SegTestDataset([split_path], downstream.image_size, dataset.image_policy)``).
    """
    ev = cfg["downstream"]["evaluation"]
    batch_size = batch_size or ev["batch_size"]
    num_workers = ev["num_workers"] if num_workers is None else num_workers
    image_size = cfg["downstream"]["image_size"]
    policy = cfg["dataset"]["image_policy"]
    factory = dataset_factory or _default_dataset_factory
    kw = metric_kwargs(cfg)
    rows = []
    for p in split_paths:
        p = Path(p)
        if not p.is_file():
            raise DataError(f"split manifest {p} does not exist")
        row = evaluate_dataset(predict, factory(p, image_size, policy), batch_size=batch_size, num_workers=num_workers,
                               device=device, metrics=kw, desc=p.stem)
        log.info("%s: %s", row["product"], ", ".join(f"{k}={row[k]:.2f}" for k in METRIC_COLUMNS))
        rows.append(row)
    names = [r["product"] for r in rows]
    if len(set(names)) != len(names):
        raise DataError(f"the split manifests name a product twice: {names}")
    return add_mean_row(rows)


def add_mean_row(rows: list[dict]) -> list[dict]:
    """Append ``product = mean``: per-metric mean over products (NaN propagates), counts summed."""
    if not rows:
        raise DataError("no product was evaluated")
    mean = {"product": MEAN_ROW}
    for k in METRIC_COLUMNS:
        mean[k] = float(np.mean([float(r[k]) for r in rows]))
    for k in ("n_images", "n_anomalous", "n_regions", "n_pixels"):
        mean[k] = int(sum(int(r[k]) for r in rows))
    modes = sorted({r["pixel_mode"] for r in rows})
    mean["pixel_mode"] = "+".join(modes)
    return rows + [mean]


def _fmt(v) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    return str(v)


def write_scores(rows: Iterable[Mapping], path: str | Path) -> Path:
    """Write the rows (columns :data:`SCORE_COLUMNS`) atomically."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(SCORE_COLUMNS)
    for r in rows:
        w.writerow([_fmt(r[c]) for c in SCORE_COLUMNS])
    return atomic_write_text(path, buf.getvalue())


def read_scores(path: str | Path) -> list[dict]:
    """Read a scores.csv; metric values as floats. Raises DataError naming the file when absent or malformed."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"scores file {path} does not exist (run `python -m downstream.evaluate` first)")
    # every row complete (a file cut mid-row is named, not a TypeError), metrics numbers, the mean row last
    check_csv(path, **SCORES_CHECK)
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ["product"] + METRIC_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"scores file {path} lacks columns: {', '.join(missing)}")
        rows = []
        for r in reader:
            try:
                for c in METRIC_COLUMNS:
                    r[c] = float(r[c])
            except ValueError as e:
                raise DataError(f"scores file {path}, product {r.get('product')}: {e}") from None
            rows.append(r)
    if not any(r["product"] == MEAN_ROW for r in rows):
        raise DataError(f"scores file {path} has no '{MEAN_ROW}' row")
    return rows


# ----------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m downstream.evaluate",
        description="Score a trained segmentation model on the test images of each split manifest "
                    "(held-out anomalies + test/good) and write one CSV row per product plus a 'mean' row. "
                    "Metrics (percent): " + ", ".join(METRIC_COLUMNS) + ". Definitions: downstream/metrics.py.",
    )
    add_config_arguments(p)
    p.add_argument("--model", required=True, choices=MODELS, help="segmentation model name (checked against the checkpoint)")
    p.add_argument("--checkpoint", required=True, help="training output folder segmentation/MODEL/METHOD")
    p.add_argument("--splits", required=True, nargs="+", help="split manifests split/<product>.json")
    p.add_argument("--out", required=True, help="scores CSV to write")
    p.add_argument("--batch-size", type=positive_int, default=None, help="default: downstream.evaluation.batch_size")
    p.add_argument("--num-workers", type=nonneg_int, default=None, help="default: downstream.evaluation.num_workers")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _check_model_name(checkpoint: Path, model: str) -> None:
    meta = checkpoint / "train.json"
    if meta.is_file():
        try:
            recorded = json.loads(meta.read_text()).get("model")
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{meta} is not valid JSON: {e}") from None
        if recorded and recorded != model:
            raise CheckpointError(f"{checkpoint} holds a '{recorded}' model, but --model {model} was given")


@cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.verbose)
    cfg = config_from_args(args)
    ckpt = Path(args.checkpoint)
    if not ckpt.is_dir():
        raise CheckpointError(f"checkpoint folder {ckpt} does not exist (run `python -m downstream.train_seg` first)")
    _check_model_name(ckpt, args.model)
    for p in args.splits:  # the test images and masks, before the model loads (its weights: load_trained)
        check_split_files(Split.load(p), ("test",))
    device = get_device(cfg)

    from downstream.segmentation.models import load_trained

    model = load_trained(ckpt, cfg, device)
    if hasattr(model, "eval"):
        model.eval()
    rows = evaluate(model.predict, args.splits, cfg, device=device, batch_size=args.batch_size,
                    num_workers=args.num_workers)
    write_scores(rows, args.out)
    m = rows[-1]
    log.info("wrote %s (%d products): mean %s", args.out, len(rows) - 1,
             ", ".join(f"{k}={m[k]:.2f}" for k in METRIC_COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

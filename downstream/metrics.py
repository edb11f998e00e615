"""Segmentation and detection metrics for anomaly maps: pure functions + a bounded-memory accumulator.

Units. The pure functions return fractions in [0, 1], like scikit-learn. :class:`ProductMetrics` and
everything written to disk (``scores.csv``, ``results/<run>/tables/*.csv``) are in **percent** (0-100), like the
paper's tables (:data:`SCALE`).

Column names (used by ``downstream.evaluate`` and ``downstream.report.tables``), :data:`METRIC_COLUMNS`:

``pixel_auroc``      ROC AUC over all pixels of a product (test anomalies + test good)
``pixel_ap``         average precision over the same pixels (``sklearn.metrics.average_precision_score``)
``pixel_f1max``      max F1 over all thresholds of the pixel precision-recall curve
Three IoUs, each TP / (TP + FP + FN) of ``map >= t`` against the masks, differing only in how t is chosen:

``pixel_iou_best``   **the paper's IoU** (every IoU column of Tab. 2, 4, 5, 9, 11-13, 15, 17, 19-21, 24-29, 31, 33):
                     the SeaS/LFD authors' definition (HUST-SLOW/LFD ``models/_LFD.py``: per test image with a
                     non-empty mask, ``iou_curve(gt, pred).max()`` (``utils/utils.py``), then ``np.mean`` over
                     those images; normal images do not enter). Per anomalous image the best IoU over every
                     threshold (optionally only thresholds whose per-image FPR <= ``best_iou_max_fpr``), averaged
                     over anomalous images. It picks a threshold per image with the ground truth in hand: an upper
                     bound, not a deployable score.
``pixel_iou_pooled`` one threshold for the whole product: the t that maximises the IoU of all the product's test
                     pixels pooled (normal images included), i.e. an oracle threshold chosen on the test set like
                     F1-max's. Since IoU = F1 / (2 - F1) is increasing in F1, that t is the F1-max threshold and
                     the value is ``f1max / (2 - f1max)``, computed from the same pooled precision-recall curve
                     (histogram mode included).
``pixel_iou_fixed``  IoU at the fixed threshold ``downstream.iou_threshold`` (default **0.5**: "IoU at 0.5", the
                     probability of the defect class), pooled over all pixels of a product; the deployable one.
``pixel_pro``        per-region overlap (MVTec AD's definition): mean over ground-truth connected components
                     (8-connectivity, ``scipy.ndimage.label``) of the covered fraction, as a function of the
                     pixel FPR over all normal pixels; area under that curve up to FPR 0.3, divided by 0.3.
``image_auroc``, ``image_ap``, ``image_f1max``  the same curves on one score per image: the max of its map.

Threshold convention: a pixel is predicted anomalous when ``score >= threshold`` (scikit-learn's curves).

Memory. :class:`ProductMetrics` keeps, per product, one float32 per pixel (plus one float32 per anomalous
pixel: the inverse area of its ground-truth region, for PRO) — 4-5 bytes a pixel while accumulating. The
largest MVTec AD product at 256 px is < 10 M test pixels; ``compute()`` then peaks at ~80 bytes a pixel
(measured: 9.8 M pixels -> 0.8 GB peak RSS, 15 s on one CPU core, mostly scikit-learn's sorts).
When a product exceeds ``max_exact_pixels`` (default 2**25 ≈ 33.5 M pixels, i.e. ≲ 2.7 GB peak) the
accumulator switches to fixed-bin histograms over ``score_range`` (``bins`` bins, default 65,536):
``pixel_auroc/ap/f1max/pro`` are then the *exact* metrics of the scores quantised to bins of width
(hi - lo) / bins (1.5e-5 for probabilities); scores of positives and negatives that fall in one bin count
as ties (so is ``pixel_iou_pooled``, derived from the F1-max curve). ``pixel_iou_fixed``, ``pixel_iou_best`` and
the image metrics are always exact (per-image or counts).
"""
from __future__ import annotations

import logging
import math
from typing import Iterable, Sequence

import numpy as np
from scipy import ndimage
from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_curve

from seas.run.errors import DataError

log = logging.getLogger(__name__)

__all__ = [
    "SCALE", "PIXEL_COLUMNS", "IMAGE_COLUMNS", "METRIC_COLUMNS", "INFO_COLUMNS",
    "pixel_auroc", "pixel_ap", "f1_max", "iou_at_threshold", "iou_from_f1", "pooled_best_iou", "best_iou", "best_iou_per_image",
    "region_weights", "pro", "pro_from_weights", "image_scores", "image_metrics", "curve_metrics",
    "histogram_bins", "ProductMetrics",
]

SCALE = 100.0  # fractions -> percent, for everything written to disk
PIXEL_COLUMNS = ["pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_iou_fixed", "pixel_iou_best", "pixel_iou_pooled",
                 "pixel_pro"]
IMAGE_COLUMNS = ["image_auroc", "image_ap", "image_f1max"]
METRIC_COLUMNS = PIXEL_COLUMNS + IMAGE_COLUMNS
INFO_COLUMNS = ["n_images", "n_anomalous", "n_regions", "n_pixels", "pixel_mode"]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


# ----------------------------------------------------------------------------- helpers
def _flat(scores, labels, weights=None):
    s = np.asarray(scores).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape:
        raise ValueError(f"scores ({s.size}) and labels ({y.size}) differ in size")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or inf")
    y = y.astype(bool)
    w = None if weights is None else np.asarray(weights, dtype=np.float64).ravel()
    return s, y, w


def _both_classes(y, w=None) -> bool:
    if w is None:
        return bool(y.any()) and not bool(y.all())
    return float(w[y].sum()) > 0 and float(w[~y].sum()) > 0


def _f1_max_from_pr(precision, recall) -> float:
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom, dtype=np.float64), where=denom > 0)
    return float(f1.max())


# ----------------------------------------------------------------------------- pixel / generic curves
def pixel_auroc(scores, labels, sample_weight=None) -> float:
    """ROC AUC (fraction) of scores against binary labels; NaN when only one class is present.

    Computed as scikit-learn's binary ``roc_auc_score`` does (``auc(*roc_curve(...)[:2])``), minus its
    label-binarising pass, which triples the time on ten million pixels."""
    s, y, w = _flat(scores, labels, sample_weight)
    if not _both_classes(y, w):
        return math.nan
    fpr, tpr, _ = roc_curve(y, s, sample_weight=w)
    return float(auc(fpr, tpr))


def pixel_ap(scores, labels, sample_weight=None) -> float:
    """Average precision (fraction), scikit-learn's step-wise definition; NaN without positives."""
    s, y, w = _flat(scores, labels, sample_weight)
    if not (y.any() if w is None else float(w[y].sum()) > 0):
        return math.nan
    return float(average_precision_score(y, s, sample_weight=w))


def f1_max(scores, labels, sample_weight=None) -> float:
    """Max over thresholds (``score >= t``) of F1 = 2PR/(P+R), from ``precision_recall_curve``."""
    s, y, w = _flat(scores, labels, sample_weight)
    if not (y.any() if w is None else float(w[y].sum()) > 0):
        return math.nan
    precision, recall, _ = precision_recall_curve(y, s, sample_weight=w)
    return _f1_max_from_pr(precision, recall)


def curve_metrics(scores, labels, sample_weight=None) -> dict:
    """``{"auroc", "ap", "f1max"}`` (fractions) of one score/label set (optionally weighted: histogram mode)."""
    return {
        "auroc": pixel_auroc(scores, labels, sample_weight),
        "ap": pixel_ap(scores, labels, sample_weight),
        "f1max": f1_max(scores, labels, sample_weight),
    }


def _iou_counts(scores, labels, threshold) -> tuple[int, int, int]:
    s, y, _ = _flat(scores, labels)
    pred = s >= threshold
    tp = int(np.count_nonzero(pred & y))
    fp = int(np.count_nonzero(pred & ~y))
    fn = int(np.count_nonzero(~pred & y))
    return tp, fp, fn


def iou_at_threshold(scores, labels, threshold: float = 0.5) -> float:
    """IoU = TP / (TP + FP + FN) of ``scores >= threshold``, pooled over every pixel given (one product).

    NaN when there is neither a positive label nor a positive prediction (0/0)."""
    tp, fp, fn = _iou_counts(scores, labels, threshold)
    denom = tp + fp + fn
    return tp / denom if denom else math.nan


def iou_from_f1(f1: float) -> float:
    """IoU of the threshold whose F1 is ``f1``: TP/(TP+FP+FN) = F1/(2-F1) (NaN stays NaN)."""
    return f1 / (2.0 - f1) if math.isfinite(f1) else math.nan


def pooled_best_iou(scores, labels, sample_weight=None) -> float:
    """Max over thresholds of the IoU of all pixels given, pooled (one threshold for the set): the F1-max
    threshold's IoU, ``f1max / (2 - f1max)``; NaN without positives."""
    return iou_from_f1(f1_max(scores, labels, sample_weight))


def best_iou(anomaly_map, mask, max_fpr: float = 1.0) -> float:
    """Best IoU over all thresholds for ONE image with at least one anomalous pixel (fraction).

    Thresholds are every distinct score (``score >= t``); with ``max_fpr < 1`` only thresholds whose
    per-image false-positive rate is <= max_fpr count (a variant of the authors' utility does this with 0.3).
    """
    s, y, _ = _flat(anomaly_map, mask)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0:
        raise ValueError("best_iou: the mask has no anomalous pixel")
    if n_neg == 0:
        return 1.0  # a threshold below every score predicts the whole (all-anomalous) image
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    tp = tpr * n_pos
    fp = fpr * n_neg
    iou = tp / (fp + n_pos)  # FN = P - TP, so TP + FP + FN = FP + P
    keep = fpr <= max_fpr + 1e-12
    return float(iou[keep].max())


def best_iou_per_image(maps: Iterable, masks: Iterable, max_fpr: float = 1.0) -> float:
    """The authors' IoU: mean over images whose mask is non-empty of :func:`best_iou`; NaN if none."""
    values = [best_iou(m, k, max_fpr) for m, k in zip(maps, masks) if np.asarray(k).any()]
    return float(np.mean(values)) if values else math.nan


# ----------------------------------------------------------------------------- PRO
def region_weights(mask) -> tuple[np.ndarray, int]:
    """Per pixel of ``mask`` (HxW): 1 / area of its 8-connected ground-truth region (0 outside); region count."""
    mask = np.asarray(mask).astype(bool)
    regions, n = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if n == 0:
        return np.zeros(mask.shape, dtype=np.float64), 0
    areas = np.bincount(regions.ravel(), minlength=n + 1).astype(np.float64)
    inv = np.zeros_like(areas)
    inv[1:] = 1.0 / areas[1:]
    return inv[regions], n


def pro_from_weights(scores, labels, weights, n_regions: int, max_fpr: float = 0.3) -> float:
    """Normalised area under the PRO curve up to ``max_fpr``.

    ``weights``: for positive pixels 1/area of their region (their sum is ``n_regions``), for negatives the
    pixel count they stand for (1, or a histogram count). With these sample weights scikit-learn's
    ``roc_curve`` returns exactly (FPR, mean per-region overlap) at every threshold; the curve is cut at
    ``max_fpr`` by linear interpolation, integrated with the trapezoidal rule and divided by ``max_fpr``.
    """
    s, y, w = _flat(scores, labels, weights)
    if n_regions <= 0 or not _both_classes(y, w):
        return math.nan
    keep = w > 0
    if not keep.all():
        s, y, w = s[keep], y[keep], w[keep]
    fpr, overlap, _ = roc_curve(y, s, sample_weight=w, drop_intermediate=False)
    # tpr is normalised by the total positive weight; that total is n_regions up to rounding.
    idx = int(np.searchsorted(fpr, max_fpr, side="right"))
    x, v = fpr[:idx], overlap[:idx]
    if idx < len(fpr) and (idx == 0 or fpr[idx - 1] < max_fpr):
        x0, x1, v0, v1 = fpr[idx - 1], fpr[idx], overlap[idx - 1], overlap[idx]
        v_cut = v0 + (v1 - v0) * (max_fpr - x0) / (x1 - x0)
        x, v = np.r_[x, max_fpr], np.r_[v, v_cut]
    if len(x) < 2:
        return 0.0
    return float(auc(x, v) / max_fpr)


def pro(maps: Sequence, masks: Sequence, max_fpr: float = 0.3) -> float:
    """PRO (fraction) of a set of anomaly maps vs masks (all images of one product, normal ones included)."""
    scores, labels, weights, n_regions = [], [], [], 0
    for m, k in zip(maps, masks):
        k = np.asarray(k).astype(bool)
        rw, n = region_weights(k)
        scores.append(np.asarray(m, dtype=np.float64).ravel())
        labels.append(k.ravel())
        weights.append(np.where(k, rw, 1.0).ravel())
        n_regions += n
    return pro_from_weights(np.concatenate(scores), np.concatenate(labels), np.concatenate(weights),
                            n_regions, max_fpr)


# ----------------------------------------------------------------------------- image level
def image_scores(maps: Iterable) -> np.ndarray:
    """One detection score per image: the max of its anomaly map."""
    return np.array([float(np.max(m)) for m in maps], dtype=np.float64)


def image_metrics(maps: Iterable, labels) -> dict:
    """``{"image_auroc", "image_ap", "image_f1max"}`` (fractions) with max-of-map scores."""
    s = image_scores(maps)
    c = curve_metrics(s, np.asarray(labels))
    return {"image_auroc": c["auroc"], "image_ap": c["ap"], "image_f1max": c["f1max"]}


# ----------------------------------------------------------------------------- histogram mode
def histogram_bins(scores, score_range=(0.0, 1.0), bins: int = 65536) -> np.ndarray:
    """Bin index (int64 in [0, bins)) of each score; the order-preserving quantisation of histogram mode."""
    lo, hi = score_range
    s = np.asarray(scores, dtype=np.float64).ravel()
    if s.size and (s.min() < lo or s.max() > hi):
        raise DataError(f"histogram mode needs scores within [{lo}, {hi}], got [{s.min()}, {s.max()}]")
    idx = np.floor((s - lo) * (bins / (hi - lo))).astype(np.int64)
    return np.minimum(idx, bins - 1)


class ProductMetrics:
    """Accumulates one product's test images and computes every column of :data:`METRIC_COLUMNS` (percent).

    >>> acc = ProductMetrics(iou_threshold=0.5)
    >>> for amap, mask, label in items: acc.update(amap, mask, label)   # float HxW, uint8 HxW {0,1}, 0/1
    >>> row = acc.compute()     # {"pixel_auroc": 97.1, ..., "n_images": 83, "pixel_mode": "exact"}

    ``compute()`` frees the pixel buffers; the accumulator cannot be updated afterwards.
    """

    def __init__(self, iou_threshold: float = 0.5, best_iou_max_fpr: float = 1.0, pro_max_fpr: float = 0.3,
                 max_exact_pixels: int = 2**25, bins: int = 65536, score_range=(0.0, 1.0)):
        self.iou_threshold = float(iou_threshold)
        self.best_iou_max_fpr = float(best_iou_max_fpr)
        self.pro_max_fpr = float(pro_max_fpr)
        self.max_exact_pixels = int(max_exact_pixels)
        self.bins = int(bins)
        self.score_range = (float(score_range[0]), float(score_range[1]))
        self.mode = "exact"
        self._pos_scores: list[np.ndarray] = []   # float32 scores of anomalous pixels
        self._pos_weights: list[np.ndarray] = []  # float32 1/area of their region
        self._neg_scores: list[np.ndarray] = []   # float32 scores of normal pixels
        self._hist_pos_w = self._hist_neg = None  # histogram mode: weight sums per bin
        self._hist_pos_n = None
        self.n_pixels = 0
        self.n_regions = 0
        self.tp = self.fp = self.fn = 0
        self.best_ious: list[float] = []
        self.image_score: list[float] = []
        self.image_label: list[int] = []
        self.n_label_mask_mismatch = 0
        self._done = False

    # -- accumulation
    def update(self, anomaly_map, mask, label: int, image_score: float | None = None) -> None:
        """Add one test image. ``image_score``: the model's own detection score (the anomaly detectors'); default
        the max of its map (the segmenters')."""
        if self._done:
            raise RuntimeError("ProductMetrics.update() after compute()")
        amap = np.asarray(anomaly_map, dtype=np.float32)
        mask = np.asarray(mask)
        if amap.ndim != 2 or amap.shape != mask.shape:
            raise DataError(f"anomaly map {amap.shape} and mask {mask.shape} must be the same HxW")
        if not np.all(np.isfinite(amap)):
            raise DataError("anomaly map contains NaN or inf")
        if mask.size and (mask.min() < 0 or mask.max() > 1):
            raise DataError(f"mask values must be 0/1, got range [{mask.min()}, {mask.max()}]")
        pos = mask.astype(bool)
        label = int(label)
        if label != int(pos.any()):
            self.n_label_mask_mismatch += 1

        self.image_score.append(float(amap.max()) if image_score is None else float(image_score))
        self.image_label.append(label)
        tp, fp, fn = _iou_counts(amap, pos, self.iou_threshold)
        self.tp, self.fp, self.fn = self.tp + tp, self.fp + fp, self.fn + fn
        if pos.any():
            self.best_ious.append(best_iou(amap, pos, self.best_iou_max_fpr))
        rw, n = region_weights(pos)
        self.n_regions += n

        pos_s, pos_w, neg_s = amap[pos], rw[pos].astype(np.float32), amap[~pos]
        self.n_pixels += amap.size
        if self.mode == "exact" and self.n_pixels > self.max_exact_pixels:
            log.info("product exceeds %d pixels: switching to %d-bin histograms", self.max_exact_pixels, self.bins)
            self._to_histogram()
        if self.mode == "exact":
            self._pos_scores.append(pos_s)
            self._pos_weights.append(pos_w)
            self._neg_scores.append(neg_s)
        else:
            self._add_to_histogram(pos_s, pos_w, neg_s)

    def _to_histogram(self) -> None:
        self.mode = "histogram"
        self._hist_pos_w = np.zeros(self.bins, dtype=np.float64)
        self._hist_pos_n = np.zeros(self.bins, dtype=np.int64)
        self._hist_neg = np.zeros(self.bins, dtype=np.int64)
        for ps, pw, ns in zip(self._pos_scores, self._pos_weights, self._neg_scores):
            self._add_to_histogram(ps, pw, ns)
        self._pos_scores, self._pos_weights, self._neg_scores = [], [], []

    def _add_to_histogram(self, pos_s, pos_w, neg_s) -> None:
        pb = histogram_bins(pos_s, self.score_range, self.bins)
        self._hist_pos_w += np.bincount(pb, weights=pos_w.astype(np.float64), minlength=self.bins)
        self._hist_pos_n += np.bincount(pb, minlength=self.bins)
        self._hist_neg += np.bincount(histogram_bins(neg_s, self.score_range, self.bins), minlength=self.bins)

    # -- results
    def _pixel_curves(self) -> dict:
        if self.mode == "exact":
            pos_s = np.concatenate(self._pos_scores) if self._pos_scores else np.zeros(0, np.float32)
            neg_s = np.concatenate(self._neg_scores) if self._neg_scores else np.zeros(0, np.float32)
            pos_w = np.concatenate(self._pos_weights) if self._pos_weights else np.zeros(0, np.float32)
            self._pos_scores, self._pos_weights, self._neg_scores = [], [], []
            scores = np.concatenate([pos_s, neg_s])
            labels = np.zeros(scores.size, dtype=np.uint8)
            labels[: pos_s.size] = 1
            del neg_s
            out = curve_metrics(scores, labels)
            weights = np.ones(scores.size, dtype=np.float64)
            weights[: pos_s.size] = pos_w
            out["pro"] = pro_from_weights(scores, labels, weights, self.n_regions, self.pro_max_fpr)
            return out
        # histogram mode: one weighted sample per (bin, class)
        b = np.arange(self.bins, dtype=np.float64)
        scores = np.r_[b, b]
        labels = np.r_[np.ones(self.bins, np.uint8), np.zeros(self.bins, np.uint8)]
        counts = np.r_[self._hist_pos_n, self._hist_neg].astype(np.float64)
        keep = counts > 0
        out = curve_metrics(scores[keep], labels[keep], counts[keep])
        pro_w = np.r_[self._hist_pos_w, self._hist_neg.astype(np.float64)]
        out["pro"] = pro_from_weights(scores[keep], labels[keep], pro_w[keep], self.n_regions, self.pro_max_fpr)
        return out

    def compute(self) -> dict:
        """Every metric in percent (NaN where undefined) plus n_images, n_anomalous, n_regions, n_pixels, pixel_mode."""
        if self._done:
            raise RuntimeError("ProductMetrics.compute() called twice")
        if not self.image_score:
            raise DataError("no test image was accumulated for this product")
        if self.n_label_mask_mismatch:
            log.warning("%d image(s) whose label disagrees with its mask (label 1 with an empty mask or 0 with "
                        "a non-empty one): image metrics use the label, pixel metrics the mask",
                        self.n_label_mask_mismatch)
        c = self._pixel_curves()
        denom = self.tp + self.fp + self.fn
        img = curve_metrics(np.array(self.image_score), np.array(self.image_label))
        frac = {
            "pixel_auroc": c["auroc"], "pixel_ap": c["ap"], "pixel_f1max": c["f1max"],
            "pixel_iou_fixed": self.tp / denom if denom else math.nan,
            "pixel_iou_best": float(np.mean(self.best_ious)) if self.best_ious else math.nan,
            "pixel_iou_pooled": iou_from_f1(c["f1max"]),
            "pixel_pro": c["pro"],
            "image_auroc": img["auroc"], "image_ap": img["ap"], "image_f1max": img["f1max"],
        }
        row = {k: SCALE * frac[k] for k in METRIC_COLUMNS}
        row.update(n_images=len(self.image_score), n_anomalous=int(np.sum(self.image_label)),
                   n_regions=self.n_regions, n_pixels=self.n_pixels, pixel_mode=self.mode)
        self._hist_pos_w = self._hist_pos_n = self._hist_neg = None
        self._done = True
        return row

"""downstream.metrics: hand-computed cases, independent brute-force references, the accumulator, histogram mode."""
from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from downstream import metrics as M
from seas.run.errors import DataError


# ----------------------------------------------------------------------------- hand-computed cases
# scores / labels of scikit-learn's doc example: AUROC 3/4, AP = .5*1 + .5*2/3, F1 max at t=.35 (P=2/3, R=1)
S4 = np.array([0.1, 0.4, 0.35, 0.8])
Y4 = np.array([0, 0, 1, 1])


def test_curve_metrics_hand_case():
    assert M.pixel_auroc(S4, Y4) == pytest.approx(0.75)
    assert M.pixel_ap(S4, Y4) == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert M.f1_max(S4, Y4) == pytest.approx(0.8)
    # 2-D inputs are flattened (a map and its mask)
    assert M.pixel_auroc(S4.reshape(2, 2), Y4.reshape(2, 2)) == pytest.approx(0.75)


def test_undefined_metrics_are_nan():
    assert math.isnan(M.pixel_auroc([0.1, 0.2], [0, 0]))
    assert math.isnan(M.pixel_ap([0.1, 0.2], [0, 0]))
    assert math.isnan(M.f1_max([0.1, 0.2], [0, 0]))
    assert math.isnan(M.iou_at_threshold([0.1, 0.2], [0, 0], 0.5))  # no positive label, no positive prediction
    with pytest.raises(ValueError):
        M.pixel_auroc([0.1, np.nan], [0, 1])


def test_iou_at_threshold_hand_case():
    s = np.array([0.9, 0.6, 0.4, 0.2, 0.7])
    y = np.array([1, 1, 1, 0, 0])
    # predicted [1,1,0,0,1]: TP 2, FP 1, FN 1
    assert M.iou_at_threshold(s, y, 0.5) == pytest.approx(2 / 4)
    # everything predicted: TP 3, FP 2
    assert M.iou_at_threshold(s, y, 0.0) == pytest.approx(3 / 5)
    # a score equal to the threshold is predicted anomalous
    assert M.iou_at_threshold([0.5, 0.2], [1, 0], 0.5) == 1.0


def test_best_iou_hand_case():
    amap = np.array([[0.9, 0.8, 0.3, 0.7]])
    mask = np.array([[1, 1, 1, 0]])
    # t=.9: 1/3; t=.8: 2/3; t=.7: TP2 FP1 -> 2/4; t=.3: TP3 FP1 -> 3/4
    assert M.best_iou(amap, mask) == pytest.approx(0.75)
    # only thresholds with FPR <= .5: t=.7 and t=.3 have FPR 1
    assert M.best_iou(amap, mask, max_fpr=0.5) == pytest.approx(2 / 3)
    second = (np.array([[0.2, 0.1]]), np.array([[1, 0]]))  # perfect at t=.2
    normal = (np.array([[0.95, 0.1]]), np.array([[0, 0]]))  # ignored: no anomalous pixel
    maps, masks = [amap, second[0], normal[0]], [mask, second[1], normal[1]]
    assert M.best_iou_per_image(maps, masks) == pytest.approx((0.75 + 1.0) / 2)
    assert M.best_iou(np.array([[0.3, 0.1]]), np.array([[1, 1]])) == 1.0  # all-anomalous image
    assert math.isnan(M.best_iou_per_image([normal[0]], [normal[1]]))


def test_region_weights_eight_connected():
    mask = np.array([[1, 0, 0, 0],
                     [0, 1, 0, 1]])
    w, n = M.region_weights(mask)
    assert n == 2  # the diagonal pair is one region (8-connectivity), the right pixel another
    np.testing.assert_allclose(w, [[0.5, 0, 0, 0], [0, 0.5, 0, 1.0]])


def test_pro_hand_case():
    # regions: R1 = {(0,0), (0,1)} (area 2), R2 = {(1,3)} (area 1); five normal pixels
    mask = np.array([[1, 1, 0, 0, 0],
                     [0, 0, 0, 1, 0]])
    amap = np.array([[0.9, 0.5, 0.8, 0.6, 0.4],
                     [0.3, 0.2, 0.0, 0.7, 0.0]])
    # seven normal pixels, scores (desc) .8 .6 .4 .3 .2 0 0
    # curve (FPR, PRO): t=.9 (0, .25); t=.8 (1/7, .25); t=.7 (1/7, .75); t=.6 (2/7, .75); t=.5 (2/7, 1)
    # area up to FPR .3: .25*(1/7) + .75*(1/7) + 1*(.3 - 2/7)
    expected = (0.25 / 7 + 0.75 / 7 + 1.0 * (0.3 - 2 / 7)) / 0.3
    assert M.pro([amap], [mask], max_fpr=0.3) == pytest.approx(expected)
    # up to FPR 2/7 exactly: the vertical jump at 2/7 does not add area
    assert M.pro([amap], [mask], max_fpr=2 / 7) == pytest.approx((0.25 / 7 + 0.75 / 7) / (2 / 7))


def test_pro_interpolates_a_tied_segment():
    # one region pixel tied with one of two normal pixels: the curve goes straight from (0,0) to (.5, 1)
    amap, mask = np.array([[0.5, 0.5, 0.1]]), np.array([[1, 0, 0]])
    assert M.pro([amap], [mask], max_fpr=0.25) == pytest.approx(0.25)  # area .25*.5/2 over .25
    # a normal image adds normal pixels (FPR denominator) but no region
    normal = (np.array([[0.0, 0.0]]), np.array([[0, 0]]))
    # now 4 normal pixels: the curve goes from (0,0) to (.25, 1): area .125 over .25
    assert M.pro([amap, normal[0]], [mask, normal[1]], max_fpr=0.25) == pytest.approx(0.5)


def test_image_metrics_hand_case():
    maps = [np.array([[0.1, 0.9]]), np.array([[0.3, 0.0]]), np.array([[0.6, 0.2]]), np.array([[0.7, 0.7]])]
    labels = [1, 0, 1, 0]
    np.testing.assert_allclose(M.image_scores(maps), [0.9, 0.3, 0.6, 0.7])
    out = M.image_metrics(maps, labels)
    assert out["image_auroc"] == pytest.approx(0.75)  # 3 of 4 (pos, neg) pairs ordered
    assert out["image_ap"] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert out["image_f1max"] == pytest.approx(0.8)


# ----------------------------------------------------------------------------- independent references
def _brute_f1(s, y):
    best = 0.0
    for t in np.unique(s):
        p = s >= t
        tp = np.sum(p & y)
        if tp:
            best = max(best, 2 * tp / (p.sum() + y.sum()))
    return best


def _brute_best_iou(m, k, max_fpr=1.0):
    m, k = m.ravel(), k.ravel().astype(bool)
    best = 0.0
    for t in np.unique(m):
        p = m >= t
        if np.sum(p & ~k) / max(np.sum(~k), 1) <= max_fpr:
            best = max(best, np.sum(p & k) / np.sum(p | k))
    return best


def _brute_pro(maps, masks, max_fpr):
    from scipy import ndimage

    regions = []
    for m, k in zip(maps, masks):
        lab, n = ndimage.label(k, structure=np.ones((3, 3)))
        regions += [m[lab == i] for i in range(1, n + 1)]
    neg = np.concatenate([m[k == 0] for m, k in zip(maps, masks)])
    pts = [(0.0, 0.0)]
    for t in np.unique(np.concatenate([m.ravel() for m in maps]))[::-1]:
        pts.append((np.mean(neg >= t), np.mean([np.mean(r >= t) for r in regions])))
    x, v = np.array(pts).T
    # area under the step-and-slope curve up to max_fpr
    area = 0.0
    for i in range(1, len(x)):
        x0, x1, v0, v1 = x[i - 1], x[i], v[i - 1], v[i]
        if x0 >= max_fpr:
            break
        if x1 > max_fpr:
            v1 = v0 + (v1 - v0) * (max_fpr - x0) / (x1 - x0)
            x1 = max_fpr
        area += (x1 - x0) * (v0 + v1) / 2
    return area / max_fpr


def _random_product(rng, n=6, size=16):
    maps, masks, labels = [], [], []
    for i in range(n):
        mask = np.zeros((size, size), np.uint8)
        if i % 3:  # two of three images anomalous, with one or two blobs
            for _ in range(1 + i % 2):
                r, c = rng.integers(0, size - 4, 2)
                mask[r:r + rng.integers(2, 5), c:c + rng.integers(2, 5)] = 1
        amap = np.clip(0.5 * mask + rng.normal(0.3, 0.15, mask.shape), 0, 1).astype(np.float32)
        amap = np.round(amap, 2)  # ties, on purpose
        maps.append(amap), masks.append(mask), labels.append(int(mask.any()))
    return maps, masks, labels


def test_against_references_on_random_data():
    rng = np.random.default_rng(0)
    maps, masks, labels = _random_product(rng)
    s = np.concatenate([m.ravel() for m in maps])
    y = np.concatenate([k.ravel() for k in masks]).astype(bool)
    assert M.pixel_auroc(s, y) == pytest.approx(roc_auc_score(y, s))
    assert M.pixel_ap(s, y) == pytest.approx(average_precision_score(y, s))
    assert M.f1_max(s, y) == pytest.approx(_brute_f1(s, y))
    for m, k in zip(maps, masks):
        if k.any():
            assert M.best_iou(m, k) == pytest.approx(_brute_best_iou(m, k))
            assert M.best_iou(m, k, 0.1) == pytest.approx(_brute_best_iou(m, k, 0.1))
    for max_fpr in (0.3, 0.05, 1.0):
        assert M.pro(maps, masks, max_fpr) == pytest.approx(_brute_pro(maps, masks, max_fpr), abs=1e-9)


# ----------------------------------------------------------------------------- accumulator
def _accumulate(maps, masks, labels, **kw):
    acc = M.ProductMetrics(**kw)
    for m, k, lab in zip(maps, masks, labels):
        acc.update(m, k, lab)
    return acc.compute()


def test_product_metrics_equals_direct_computation():
    rng = np.random.default_rng(1)
    maps, masks, labels = _random_product(rng, n=7)
    row = _accumulate(maps, masks, labels, iou_threshold=0.55, best_iou_max_fpr=0.5)
    s = np.concatenate([m.ravel() for m in maps])
    y = np.concatenate([k.ravel() for k in masks])
    direct = {
        "pixel_auroc": M.pixel_auroc(s, y), "pixel_ap": M.pixel_ap(s, y), "pixel_f1max": M.f1_max(s, y),
        "pixel_iou_fixed": M.iou_at_threshold(s, y, 0.55),
        "pixel_iou_best": M.best_iou_per_image(maps, masks, max_fpr=0.5),
        "pixel_iou_pooled": M.pooled_best_iou(s, y),
        "pixel_pro": M.pro(maps, masks, 0.3), **M.image_metrics(maps, labels),
    }
    for k in M.METRIC_COLUMNS:
        assert row[k] == pytest.approx(100 * direct[k], rel=1e-9), k
    assert row["pixel_mode"] == "exact" and row["n_images"] == 7
    assert row["n_anomalous"] == sum(labels) and row["n_pixels"] == 7 * 256


def test_perfect_maps_score_100():
    rng = np.random.default_rng(2)
    _, masks, labels = _random_product(rng)
    row = _accumulate([k.astype(np.float32) for k in masks], masks, labels)
    for k in M.METRIC_COLUMNS:
        assert row[k] == pytest.approx(100.0), k


def test_histogram_mode_is_exact_on_quantised_scores():
    rng = np.random.default_rng(3)
    maps, masks, labels = _random_product(rng, n=9)
    bins = 64
    q = [((np.floor(m * bins).clip(0, bins - 1) + 0.5) / bins).astype(np.float32) for m in maps]
    exact = _accumulate(q, masks, labels, bins=bins)
    hist = _accumulate(q, masks, labels, bins=bins, max_exact_pixels=3 * 256)  # switches after 3 images
    assert exact["pixel_mode"] == "exact" and hist["pixel_mode"] == "histogram"
    for k in M.METRIC_COLUMNS:
        assert hist[k] == pytest.approx(exact[k], abs=1e-9), k


def test_histogram_mode_close_on_continuous_scores():
    rng = np.random.default_rng(4)
    maps, masks, labels = _random_product(rng, n=9)
    maps = [np.clip(m + rng.normal(0, 0.01, m.shape), 0, 1).astype(np.float32) for m in maps]  # no ties
    exact = _accumulate(maps, masks, labels)
    hist = _accumulate(maps, masks, labels, bins=4096, max_exact_pixels=1)
    # documented accuracy: bin width 1/4096; here within 0.1 percentage points
    for k in ("pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_iou_pooled", "pixel_pro"):
        assert hist[k] == pytest.approx(exact[k], abs=0.1), k
    for k in ("pixel_iou_fixed", "pixel_iou_best", "image_auroc", "image_ap", "image_f1max"):
        assert hist[k] == exact[k], k  # always exact


def test_product_metrics_errors():
    acc = M.ProductMetrics(max_exact_pixels=1)
    with pytest.raises(DataError):
        acc.update(np.zeros((4, 4)), np.zeros((4, 5), np.uint8), 0)
    with pytest.raises(DataError):
        acc.update(np.zeros((2, 2)), np.full((2, 2), 2, np.uint8), 1)
    with pytest.raises(DataError):  # histogram mode needs scores in [0, 1]
        acc.update(np.full((2, 2), 1.5), np.zeros((2, 2), np.uint8), 0)
    with pytest.raises(DataError):
        M.ProductMetrics().compute()  # nothing accumulated
    acc = M.ProductMetrics()
    acc.update(np.array([[0.2, 0.9]]), np.array([[0, 1]], np.uint8), 1)
    acc.update(np.array([[0.1, 0.3]]), np.array([[0, 0]], np.uint8), 0)
    row = acc.compute()
    assert row["pixel_auroc"] == 100.0 and row["image_auroc"] == 100.0
    with pytest.raises(RuntimeError):
        acc.update(np.zeros((1, 2)), np.zeros((1, 2), np.uint8), 0)


# ----------------------------------------------------------------------------- the three IoUs, re-derived
def _iou_brute(s, y, t) -> float:
    """TP / (TP + FP + FN) of ``s >= t`` by counting (independent of scikit-learn's curves)."""
    pred = s >= t
    tp, fp, fn = np.sum(pred & y), np.sum(pred & ~y), np.sum(~pred & y)
    return tp / (tp + fp + fn) if tp + fp + fn else math.nan


def _authors_iou_curve_max(gt, pred) -> float:
    """The authors' per-image IoU (HUST-SLOW/LFD utils.iou_curve, then .max()), re-derived from its steps: scores
    sorted in decreasing order, cumulative TP / FP at each distinct score, the collinear points dropped
    (drop_intermediate=True), a (0, 0) point prepended, IoU = tps / (tps + fps + fns), fns = P - tps."""
    order = np.argsort(-pred, kind="mergesort")
    p, g = pred[order], gt[order].astype(np.float64)
    last = np.r_[np.flatnonzero(np.diff(p)), p.size - 1]  # the last index of each distinct score
    tps = np.cumsum(g)[last]
    fps = (last + 1) - tps
    if len(fps) > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        tps, fps = tps[keep], fps[keep]
    if fps[0] != 0:
        tps, fps = np.r_[0, tps], np.r_[0, fps]
    fns = tps[-1] - tps
    return float(np.max(tps / (tps + fps + fns)))


def test_three_ious_equal_independent_rederivations_on_random_maps():
    rng = np.random.default_rng(20)
    maps, masks, labels = _random_product(rng, n=9)
    maps = [np.round(m, 2).astype(np.float32) for m in maps]  # ties, as probabilities written with 2 decimals have
    row = _accumulate(maps, masks, labels, iou_threshold=0.5)
    s = np.concatenate([m.ravel() for m in maps]).astype(np.float64)
    y = np.concatenate([k.ravel() for k in masks]).astype(bool)
    # the paper's (authors'): per anomalous image the best threshold, then the mean over anomalous images
    per_image = [_authors_iou_curve_max(k.ravel().astype(np.uint8), m.ravel().astype(np.float64))
                 for m, k in zip(maps, masks) if k.any()]
    brute_per_image = [max(_iou_brute(m.ravel(), k.ravel().astype(bool), t) for t in np.unique(m))
                       for m, k in zip(maps, masks) if k.any()]
    assert per_image == pytest.approx(brute_per_image, abs=1e-12)
    assert row["pixel_iou_best"] == pytest.approx(100 * np.mean(per_image), rel=1e-9)
    # pooled: one threshold for the product, the one maximising the pooled IoU
    pooled = max(_iou_brute(s, y, t) for t in np.unique(s))
    assert row["pixel_iou_pooled"] == pytest.approx(100 * pooled, rel=1e-9)
    # IoU at 0.5, pooled
    assert row["pixel_iou_fixed"] == pytest.approx(100 * _iou_brute(s, y, 0.5), rel=1e-9)
    # three different numbers on these maps (the columns are not aliases of each other)
    assert len({round(row[k], 6) for k in ("pixel_iou_best", "pixel_iou_pooled", "pixel_iou_fixed")}) == 3
    assert row["pixel_iou_best"] >= row["pixel_iou_pooled"] >= row["pixel_iou_fixed"]


def test_pooled_iou_is_exact_in_histogram_mode_on_quantised_scores():
    rng = np.random.default_rng(21)
    maps, masks, labels = _random_product(rng, n=6)
    q = [((np.floor(m * 32).clip(0, 31) + 0.5) / 32).astype(np.float32) for m in maps]
    hist = _accumulate(q, masks, labels, bins=32, max_exact_pixels=256)
    s = np.concatenate([m.ravel() for m in q]).astype(np.float64)
    y = np.concatenate([k.ravel() for k in masks]).astype(bool)
    assert hist["pixel_mode"] == "histogram"
    assert hist["pixel_iou_pooled"] == pytest.approx(100 * max(_iou_brute(s, y, t) for t in np.unique(s)), rel=1e-9)

"""Generation metrics of one product: Inception Score and KID (torch-fidelity) and IC-LPIPS (lpips, VGG).

    python -m downstream.gen_metrics --config C --split split/P.json --pairs methods/M/P --method M --out gen_metrics/M/P.json

Per anomaly type folder ``<pairs>/<type>/images/`` (``good`` is skipped), images resized to
``gen_metrics.image_size`` (256 in the paper):

* IS: ``torch_fidelity.calculate_metrics(isc=True)`` with the Inception weights file ``gen_metrics.inception_weights``
  (pt_inception-2015-12-05); when that key is null a Kaiming-initialised Inception of the same architecture is used
  and the output says ``"inception": "random"`` (plumbing only: never a number to report).
* KID (``gen_metrics.kid``; reported by MAGIC, O2MAG and SeaS's README): ``torch_fidelity.calculate_metrics(kid=True)``
  of the generated images of a type against the real anomalies of that type, in the same Inception pass as IS
  (same weights file, same "random" caveat). The real set (``gen_metrics.kid_reference``): ``all`` (default) = the
  type's few-shot training anomalies + its held-out test anomalies, i.e. every real anomaly of the type the dataset
  has, as the paper compares with the product's real anomalies and a 1/3 split alone leaves 1-3 images, too few for
  a kernel estimate; ``held_out`` = the test anomalies only (no image the generator saw); ``train`` = the training
  anomalies only. torch-fidelity draws ``kid_subsets`` subsets of ``kid_subset_size`` images from EACH set without
  replacement, so the subset size is :func:`kid_subset_size`: ``min(gen_metrics.kid_subset_size, n_generated,
  n_real)`` (MVTec AD types have 5-30 real anomalies); fewer than 2 real or generated images is an error.
* IC-LPIPS (docs/METHOD.md, "Metrics"): every generated image joins the cluster of its nearest training anomaly image
  of that type (by LPIPS); inside each cluster the mean LPIPS over all pairs of its first ``gen_metrics.cluster_cap``
  members (140, the authors' cap); a cluster with fewer than 2 members (singleton or empty) scores 0; the score is
  the mean over the clusters (= over the training anomaly images). Images enter LPIPS in [-1, 1].
  Weights: ``gen_metrics.lpips_weights_dir`` holding ``vgg.pth`` (LPIPS linear layers) and
  ``vgg16-397923af.pth`` (torchvision's ImageNet VGG-16); null = randomly initialised network (``"lpips": "random"``).

* Mask-defect agreement (``gen_metrics.agreement``, where a type folder has ``references/``: the normal-prompt twins of
  ``generation.reference_images``): does the generated mask cover where the image departs from the product's normal
  appearance? For each pair, the difference map D = mean over RGB of |image - twin| / 255 (the twin: prompt
  ``a <ob>``, the same initial latent, seed, scheduler and guidance), at the generated resolution. ``ap``: average
  precision of D ranking the pixels of all the type's pairs against their generated masks (pooled);
  ``iou``: per pair whose mask is neither empty nor the whole image, IoU of the top-k pixels of D (k = the mask's
  area: the threshold is the k-th largest difference) with the mask, averaged over those pairs (NaN without any). ``random_ap`` / ``random_iou``: the same
  against each mask moved to a random position (a cyclic shift, seeded: same shape and area, unrelated place) --
  the chance level the real values must clear. All in percent (:func:`mask_defect_agreement`).

* Test copies (downstream.leakage): ``test_copies`` = how many of the product's pair images (every type folder,
  ``good`` included) are near-copies of one of its held-out test images (``test_copy_files``: each with its test
  image and signature distance; ``test_copy_threshold``), shown in generation.csv.

The product's ``is`` / ``ic_lpips`` / ``kid`` (and ``agreement``) are the means over its anomaly types;
``per_type`` holds each type's values.
The clustering maths is in pure functions (:func:`assign_clusters`, :func:`cluster_members`,
:func:`ic_lpips_from_clusters`, :func:`ic_lpips_from_matrices`).
"""
from __future__ import annotations

import argparse
import json
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
from PIL import Image

from seas.run.config import add_config_arguments, config_from_args
from seas.run.errors import CheckpointError, DataError
from seas.data.integrity import check_image, check_pairs, check_split_files
from seas.data.pairs import IMAGES, MASKS, iter_pairs, list_types
from seas.data.images import list_images
from seas.run.runtime import atomic_write_text, cli, derive_seed, get_device, setup_logging
from seas.data.images import load_image
from seas.data.split import Split
from seas.run.stages import STAGES
# Lazy imports: torch / lpips / torch-fidelity are imported inside the functions that use them (heavy; the clustering maths is pure numpy).

log = logging.getLogger("downstream.gen_metrics")

#: the config keys this stage reads: declared once, in the stage registry (seas.run.stages)
CONFIG_KEYS = STAGES["gen_metrics"].config_keys

__all__ = ["assign_clusters", "cluster_members", "ic_lpips_from_clusters", "ic_lpips_from_matrices",
           "build_lpips", "lpips_distances", "distances_to_references", "mean_pairwise_distance", "ic_lpips",
           "build_inception_weights", "inception_score", "inception_metrics", "isc_splits", "kid_subset_size",
           "kid_reference_images", "KID_REFERENCES", "product_metrics", "main",
           "LPIPS_LINEAR_FILE", "VGG16_FILE"]

LPIPS_LINEAR_FILE = "vgg.pth"
VGG16_FILE = "vgg16-397923af.pth"


# ----------------------------------------------------------------------------- IC-LPIPS maths (pure)
def assign_clusters(d_to_refs: np.ndarray) -> np.ndarray:
    """[G, T] distances of generated images to training images -> cluster label per generated image (argmin;
    ties go to the lower reference index)."""
    d = np.asarray(d_to_refs, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] == 0:
        raise ValueError(f"assign_clusters: need a [G, T>0] matrix, got shape {d.shape}")
    return d.argmin(axis=1)


def cluster_members(labels: Sequence[int], num_clusters: int, cap: int | None = 140) -> list[list[int]]:
    """Members of each cluster in generated-index order, each truncated to its first ``cap``."""
    members: list[list[int]] = [[] for _ in range(num_clusters)]
    for i, c in enumerate(labels):
        if cap is None or len(members[int(c)]) < cap:
            members[int(c)].append(i)
    return members


def ic_lpips_from_clusters(members: Sequence[Sequence[int]],
                           mean_pairwise: Callable[[Sequence[int]], float]) -> tuple[float, list[float]]:
    """Mean over clusters of the within-cluster mean pairwise distance; clusters with < 2 members count 0.

    ``mean_pairwise(indices)`` returns the mean distance over all unordered pairs of those generated images.
    """
    if not members:
        raise ValueError("ic_lpips_from_clusters: no clusters")
    per = [float(mean_pairwise(list(m))) if len(m) >= 2 else 0.0 for m in members]
    return float(np.mean(per)), per


def ic_lpips_from_matrices(d_to_refs: np.ndarray, d_pairs: np.ndarray, cap: int | None = 140) -> tuple[float, list[float]]:
    """IC-LPIPS from a full [G, T] generated-to-reference matrix and a [G, G] generated-pairs matrix."""
    d_pairs = np.asarray(d_pairs, dtype=np.float64)
    labels = assign_clusters(d_to_refs)
    members = cluster_members(labels, np.asarray(d_to_refs).shape[1], cap)

    def mp(idx):
        sub = d_pairs[np.ix_(idx, idx)]
        iu = np.triu_indices(len(idx), k=1)
        return float(sub[iu].mean())

    return ic_lpips_from_clusters(members, mp)


# ----------------------------------------------------------------------------- LPIPS
def build_lpips(weights_dir: str | None, device, seed: int = 0):
    """LPIPS-VGG. ``weights_dir`` None -> random network (``pretrained=False, pnet_rand=True``; linear weights made
    non-negative), label "random". Otherwise ``weights_dir`` must hold vgg.pth and vgg16-397923af.pth."""
    import lpips
    import torch

    if weights_dir is None:
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")  # lpips' `pretrained=`
            torch.manual_seed(seed)
            model = lpips.LPIPS(net="vgg", pretrained=False, pnet_rand=True, verbose=False)
        # LPIPS's linear weights are non-negative by construction (its training clamps them at 0); a random init
        # gets the same constraint, so the random metric stays a non-negative distance
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name.startswith("lin"):
                    p.abs_()
        return model.to(device).eval(), "random"
    wdir = Path(weights_dir)
    for name in (LPIPS_LINEAR_FILE, VGG16_FILE):
        if not (wdir / name).is_file():
            raise CheckpointError(f"gen_metrics.lpips_weights_dir: {wdir / name} not found (LPIPS-VGG needs "
                                  f"{LPIPS_LINEAR_FILE} from the lpips package and torchvision's {VGG16_FILE})")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, model_path=str(wdir / LPIPS_LINEAR_FILE),
                            verbose=False)
    vgg = torch.load(wdir / VGG16_FILE, map_location="cpu", weights_only=True)
    own = {}
    for name, _ in model.net.named_parameters():  # slice{k}.{i}.{weight|bias} <- features.{i}.{weight|bias}
        key = "features." + name.split(".", 1)[1]
        if key not in vgg:
            raise CheckpointError(f"{wdir / VGG16_FILE}: no {key}; not a torchvision VGG-16 state dict")
        own[name] = vgg[key]
    model.net.load_state_dict(own, strict=True)
    return model.to(device).eval(), str(wdir)


def lpips_distances(model, a, b, batch_size: int = 32):
    """Per-pair LPIPS of image tensors a[i], b[i] ([N,3,H,W] in [-1,1]) -> float64 numpy [N]."""
    import torch

    out = []
    dev = next(model.parameters()).device
    with torch.no_grad():
        for s in range(0, a.shape[0], batch_size):
            d = model(a[s:s + batch_size].to(dev), b[s:s + batch_size].to(dev), normalize=False)
            out.append(d.flatten().double().cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def distances_to_references(model, gen, refs, batch_size: int = 32) -> np.ndarray:
    """[G, T] LPIPS between every generated image and every training anomaly image."""
    g, t = gen.shape[0], refs.shape[0]
    ii = np.repeat(np.arange(g), t)
    jj = np.tile(np.arange(t), g)
    return lpips_distances(model, gen[ii], refs[jj], batch_size).reshape(g, t)


def mean_pairwise_distance(model, images, batch_size: int = 32) -> float:
    """Mean LPIPS over all unordered pairs of ``images`` (>= 2)."""
    n = images.shape[0]
    iu, ju = np.triu_indices(n, k=1)
    return float(lpips_distances(model, images[iu], images[ju], batch_size).mean())


def ic_lpips(model, gen, refs, cap: int | None = 140, batch_size: int = 32) -> tuple[float, list[float], list[int]]:
    """IC-LPIPS of generated images against the training anomaly images of their type.

    Returns (score, per-cluster scores, cluster sizes before the cap)."""
    d = distances_to_references(model, gen, refs, batch_size)
    labels = assign_clusters(d)
    members = cluster_members(labels, refs.shape[0], cap)
    score, per = ic_lpips_from_clusters(members, lambda idx: mean_pairwise_distance(model, gen[list(idx)], batch_size))
    sizes = np.bincount(labels, minlength=refs.shape[0]).tolist()
    return score, per, sizes


# ----------------------------------------------------------------------------- IS
def build_inception_weights(path: str | Path, seed: int = 0) -> Path:
    """Write a Kaiming-initialised state dict of torch-fidelity's Inception-v3 to ``path`` (random IS, plumbing)."""
    import torch
    from torch import nn
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class _Random(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # called by the parent with a placeholder
            g = torch.Generator().manual_seed(seed)
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    with torch.no_grad():
                        fan_in = m.weight[0].numel()
                        m.weight.copy_(torch.randn(m.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5)
                        if m.bias is not None:
                            m.bias.zero_()
            return None

    path = Path(path)
    placeholder = path.with_name(path.name + ".placeholder")
    torch.save({}, placeholder)
    try:
        net = _Random("inception-v3-compat", ["logits_unbiased"], feature_extractor_weights_path=str(placeholder))
    finally:
        placeholder.unlink(missing_ok=True)
    torch.save(nn.Module.state_dict(net), path)
    return path


def _uint8_dataset(images):
    """torch Dataset over a uint8 [N,3,H,W] tensor (what torch-fidelity's Inception expects)."""
    from torch.utils.data import Dataset

    class _UInt8Images(Dataset):
        def __len__(self):
            return images.shape[0]

        def __getitem__(self, i):
            return images[i]

    return _UInt8Images()


def isc_splits(n: int, splits: int = 10) -> int:
    """IS splits for n images: ``splits`` (10, the usual) unless that leaves fewer than 2 images per split
    (a 1-image split has IS exactly 1)."""
    return max(1, min(splits, n // 2))


def kid_subset_size(n_generated: int, n_real: int, cap: int = 1000) -> int:
    """KID subset size: torch-fidelity samples each subset WITHOUT replacement from both sets, so it must not exceed
    the smaller one; ``cap`` is gen_metrics.kid_subset_size (1000, torch-fidelity's default). The unbiased MMD
    estimate needs >= 2 samples per subset."""
    k = min(int(cap), int(n_generated), int(n_real))
    if k < 2:
        raise DataError(f"KID needs at least 2 generated and 2 real images, got {n_generated} generated and "
                        f"{n_real} real (see gen_metrics.kid_reference)")
    return k


def inception_metrics(images_uint8, weights_path: str | Path, device, splits: int = 10, real_uint8=None,
                      kid_cap: int = 1000, kid_subsets: int = 100, seed: int = 0) -> dict:
    """IS of uint8 images [N,3,H,W] and, with ``real_uint8``, their KID against those real images, in one
    torch-fidelity pass with the given Inception weights file -> {is, is_std[, kid, kid_std, kid_subset_size]}."""
    import torch_fidelity

    n = images_uint8.shape[0]
    if n < 2:
        raise DataError(f"inception score needs at least 2 images, got {n}")
    kid = real_uint8 is not None
    extra = {}
    if kid:
        extra = {"input2": _uint8_dataset(real_uint8), "kid_subsets": int(kid_subsets), "rng_seed": int(seed) % 2**31,
                 "kid_subset_size": kid_subset_size(n, real_uint8.shape[0], kid_cap)}
    m = torch_fidelity.calculate_metrics(
        input1=_uint8_dataset(images_uint8), isc=True, fid=False, kid=kid, prc=False, verbose=False, cache=False,
        cuda=getattr(device, "type", str(device)) == "cuda", batch_size=min(64, n), isc_splits=isc_splits(n, splits),
        save_cpu_ram=True,  # in-memory tensors: no DataLoader worker processes
        feature_extractor_weights_path=str(weights_path), **extra)
    out = {"is": float(m["inception_score_mean"]), "is_std": float(m["inception_score_std"])}
    if kid:
        out.update(kid=float(m["kernel_inception_distance_mean"]), kid_std=float(m["kernel_inception_distance_std"]),
                   kid_subset_size=extra["kid_subset_size"])
    return out


def inception_score(images_uint8, weights_path: str | Path, device, splits: int = 10) -> tuple[float, float]:
    """(IS mean, IS std) of uint8 images [N,3,H,W] through torch-fidelity with the given Inception weights file."""
    m = inception_metrics(images_uint8, weights_path, device, splits)
    return m["is"], m["is_std"]


KID_REFERENCES = ("all", "held_out", "train")


def kid_reference_images(split, anomaly_type: str, which: str = "all") -> list[str]:
    """The real anomaly images of one type KID compares with (gen_metrics.kid_reference): ``train`` = the few-shot
    training anomalies, ``held_out`` = the test anomalies, ``all`` = both (every real anomaly of the type)."""
    if which not in KID_REFERENCES:
        raise DataError(f"gen_metrics.kid_reference: expected one of {', '.join(KID_REFERENCES)}, got {which!r}")
    train = [d["image"] for d in split.train_anomalies.get(anomaly_type, [])]
    held = [d["image"] for d in split.test if d["type"] == anomaly_type and int(d["label"]) == 1]
    return {"all": train + held, "held_out": held, "train": train}[which]


# ----------------------------------------------------------------------------- mask-defect agreement
AGREEMENT_KEYS = ("ap", "iou", "random_ap", "random_iou")
TWINS = "references"  # seas.method.generate.REFERENCES (not imported: gen_metrics does not load torch models)


def difference_map(image, twin) -> np.ndarray:
    """Mean over channels of |image - twin| / 255, float64 [H,W], of two uint8 [H,W,3] images."""
    a, b = np.asarray(image, np.float64), np.asarray(twin, np.float64)
    if a.shape != b.shape:
        raise DataError(f"difference_map: image {a.shape} and twin {b.shape} differ in size")
    return np.abs(a - b).mean(axis=-1) / 255.0


def topk_iou(score, mask) -> float:
    """IoU of the k highest-scoring pixels (k = mask area; ties broken by position) with the boolean ``mask``."""
    m = np.asarray(mask, bool).ravel()
    k = int(m.sum())
    if k == 0:
        raise DataError("topk_iou: empty mask")
    pred = np.zeros_like(m)
    pred[np.argsort(-np.asarray(score, np.float64).ravel(), kind="stable")[:k]] = True
    inter = int((pred & m).sum())
    return inter / (2 * k - inter)


def random_shift(mask, rng: np.random.Generator) -> np.ndarray:
    """``mask`` cyclically shifted by a random (dy, dx): same shape and area, a random place."""
    h, w = mask.shape
    return np.roll(mask, (int(rng.integers(h)), int(rng.integers(w))), axis=(0, 1))


def mask_defect_agreement(diffs: Sequence, masks: Sequence, seed: int = 0) -> dict:
    """Agreement of difference maps with generated masks (boolean [H,W] each) -> {ap, iou, random_ap, random_iou,
    n_images, n_masked} in percent; ``random_*`` against the masks moved by :func:`random_shift` (seeded)."""
    from sklearn.metrics import average_precision_score

    if len(diffs) != len(masks) or not diffs:
        raise DataError(f"mask_defect_agreement: {len(diffs)} difference maps for {len(masks)} masks")
    rng = np.random.default_rng(seed)
    shifted = [random_shift(np.asarray(m, bool), rng) for m in masks]
    s = np.concatenate([np.asarray(d, np.float64).ravel() for d in diffs])

    def ap(ms):
        y = np.concatenate([np.asarray(m, bool).ravel() for m in ms])
        return float(average_precision_score(y, s)) * 100 if y.any() and not y.all() else float("nan")

    def partial(m):  # an empty or an all-pixel mask says nothing about where the defect is (IoU 100 by chance)
        m = np.asarray(m, bool)
        return m.any() and not m.all()

    keep = [partial(m) for m in masks]

    def iou(ms):
        vals = [topk_iou(d, m) for d, m, k in zip(diffs, ms, keep) if k]
        return float(np.mean(vals)) * 100 if vals else float("nan")

    return {"ap": ap(masks), "iou": iou(masks), "random_ap": ap(shifted), "random_iou": iou(shifted),
            "n_images": len(diffs), "n_masked": int(sum(bool(np.asarray(m).any()) for m in masks)),
            "n_full": int(sum(bool(np.asarray(m).all()) for m in masks)),
            "threshold": "top-k, k = mask area (masks neither empty nor full)"}


def type_agreement(type_dir: Path, seed: int) -> dict | None:
    """Mask-defect agreement of one type folder with ``references/`` twins, or None without twins."""
    twins = Path(type_dir) / TWINS
    if not twins.is_dir():
        return None
    diffs, masks = [], []
    for img in list_images(Path(type_dir) / IMAGES, missing_ok=True):
        twin, mask = twins / img.name, Path(type_dir) / MASKS / img.name
        for f in (twin, mask):
            if not f.is_file():
                raise DataError(f"{f}: missing (the twin / mask of {img})")
        diffs.append(difference_map(np.asarray(Image.open(img).convert("RGB")), np.asarray(Image.open(twin).convert("RGB"))))
        masks.append(np.asarray(Image.open(mask).convert("L")) > 127)
    return mask_defect_agreement(diffs, masks, seed)


# ----------------------------------------------------------------------------- images


def _load(paths: Sequence, size: int, policy: str = "resize"):
    """uint8 [N,3,size,size] tensor."""
    import torch

    arrs = [np.asarray(load_image(p, size, policy), dtype=np.uint8) for p in paths]
    return torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).contiguous()


def _to_pm1(x_uint8):
    return x_uint8.float() / 127.5 - 1.0


def type_folders(pairs_dir: Path) -> list[str]:
    return list_types(pairs_dir, anomalous_only=True)


def product_metrics(cfg: Mapping, split, pairs_dir, method: str, device=None) -> dict:
    """Compute the metrics of one product's generated pairs -> the JSON-able result dict."""
    import torch

    split = split if isinstance(split, Split) else Split.load(split)
    gm = cfg["gen_metrics"]
    pairs_dir = Path(pairs_dir)
    if not pairs_dir.is_dir():
        raise DataError(f"--pairs {pairs_dir}: folder not found")
    do_kid = bool(gm["kid"])
    kid_ref = gm["kid_reference"]
    result = {"product": split.product, "method": method, "is": None, "ic_lpips": None, "kid": None, "per_type": {},
              "n_images": 0, "inception": None, "lpips": None, "image_size": gm["image_size"],
              "cluster_cap": gm["cluster_cap"], "enabled": gm["enabled"],
              "kid_reference": kid_ref if do_kid else None, "agreement": None}
    from downstream.leakage import product_copies  # the test-copy check (downstream.leakage.threshold)

    leak = product_copies(pairs_dir, split, float(cfg["downstream"]["leakage"]["threshold"]))
    result.update(test_copies=leak["test_copies"], test_copy_threshold=leak["threshold"], test_copy_files=leak["copies"])
    if leak["test_copies"]:
        log.warning("%s %s: %d of %d images are copies of held-out test images, e.g. %s ~ %s", method, split.product,
                    leak["test_copies"], leak["n_images"], leak["copies"][0]["image"], leak["copies"][0]["test_image"])
    if not gm["enabled"]:
        return result
    device = device or get_device(cfg)
    types = [t for t in type_folders(pairs_dir) if t in split.anomaly_types]
    unknown = [t for t in type_folders(pairs_dir) if t not in split.anomaly_types]
    if unknown:
        log.warning("%s: folders %s are not anomaly types of %s; skipped", pairs_dir, unknown, split.product)
    if not types:
        raise DataError(f"{pairs_dir}: no <type>/images/ folders of {split.product}'s anomaly types "
                        f"({', '.join(split.anomaly_types)})")
    # before anything is computed: the pairs (complete, binary masks of their image's size) and the real images
    # (a generation-only method's images-only import has no masks/: its images are checked alone)
    masked = [t for t in types if (pairs_dir / t / MASKS).is_dir()]
    if masked:
        check_pairs(p for p in iter_pairs(pairs_dir.parent, [pairs_dir.name]) if p.type in masked)
    for t in types:
        if t not in masked:
            for path in list_images(pairs_dir / t / IMAGES, missing_ok=True):
                check_image(path)
    check_split_files(split)
    size = gm["image_size"]
    seed = derive_seed(cfg["seed"], "gen_metrics")
    lp, lp_label = build_lpips(gm["lpips_weights_dir"], device, seed)
    with tempfile.TemporaryDirectory() as tmp:
        if gm["inception_weights"] is None:
            inc_path, inc_label = build_inception_weights(Path(tmp) / "inception_random.pt", seed), "random"
        else:
            inc_path = Path(gm["inception_weights"])
            if not inc_path.is_file():
                raise CheckpointError(f"gen_metrics.inception_weights: {inc_path} not found "
                                      "(torch-fidelity's pt_inception-2015-12-05 weights file)")
            inc_label = str(inc_path)
        for t in types:
            paths = list_images(pairs_dir / t / IMAGES, missing_ok=True)
            if len(paths) < 2:
                raise DataError(f"{pairs_dir / t / 'images'}: {len(paths)} images; the metrics need at least 2")
            gen = _load(paths, size)
            refs = _load([d["image"] for d in split.train_anomalies[t]], size,
                         cfg["dataset"]["image_policy"])
            real = None
            if do_kid:
                real = _load(kid_reference_images(split, t, kid_ref), size,
                             cfg["dataset"]["image_policy"])
            inc = inception_metrics(gen, inc_path, device, real_uint8=real, kid_cap=gm["kid_subset_size"],
                                    kid_subsets=gm["kid_subsets"], seed=derive_seed(seed, "kid", t))
            score, per, sizes = ic_lpips(lp, _to_pm1(gen), _to_pm1(refs), gm["cluster_cap"])
            result["per_type"][t] = {"is": inc["is"], "is_std": inc["is_std"], "ic_lpips": score,
                                     "n_images": len(paths), "cluster_sizes": sizes, "cluster_ic_lpips": per}
            agree = type_agreement(pairs_dir / t, derive_seed(seed, "agreement", t)) if gm["agreement"] else None
            if agree is not None:
                result["per_type"][t]["agreement"] = agree
                log.info("%s/%s: mask-defect agreement AP %.2f (random mask %.2f), IoU %.2f (random %.2f)",
                         split.product, t, agree["ap"], agree["random_ap"], agree["iou"], agree["random_iou"])
            if do_kid:
                result["per_type"][t].update(kid=inc["kid"], kid_std=inc["kid_std"],
                                             kid_subset_size=inc["kid_subset_size"], n_real=int(real.shape[0]))
            result["n_images"] += len(paths)
            log.info("%s/%s: IS %.4f  IC-LPIPS %.4f%s  (%d images)", split.product, t, inc["is"], score,
                     f"  KID {inc['kid']:.5f}" if do_kid else "", len(paths))
            del gen, refs, real
            if device.type == "cuda":
                torch.cuda.empty_cache()
    result["is"] = float(np.mean([v["is"] for v in result["per_type"].values()]))
    result["ic_lpips"] = float(np.mean([v["ic_lpips"] for v in result["per_type"].values()]))
    if do_kid:
        result["kid"] = float(np.mean([v["kid"] for v in result["per_type"].values()]))
    agreements = [v["agreement"] for v in result["per_type"].values() if "agreement" in v]
    result["agreement"] = ({k: float(np.nanmean([a[k] for a in agreements])) for k in AGREEMENT_KEYS}
                           if agreements and len(agreements) == len(result["per_type"]) else None)
    result["inception"], result["lpips"] = inc_label, lp_label
    return result


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m downstream.gen_metrics",
        description="IS and KID (torch-fidelity; KID against the real anomalies of each type) and IC-LPIPS "
                    "(lpips VGG) of one product's generated images, per anomaly type and averaged. Weights from "
                    "gen_metrics.inception_weights / lpips_weights_dir; null = "
                    "random networks, labelled 'random' in the output.",
    )
    add_config_arguments(p)
    p.add_argument("--split", required=True, help="split manifest split/<product>.json (training anomalies)")
    p.add_argument("--pairs", required=True, help="generated pairs of the product: methods/<method>/<product>")
    p.add_argument("--method", required=True, help="method name recorded in the output")
    p.add_argument("--out", required=True, help="output JSON gen_metrics/<method>/<product>.json")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


@cli
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    cfg = config_from_args(args)
    res = product_metrics(cfg, args.split, args.pairs, args.method)
    atomic_write_text(args.out, json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The test-copy (leakage) check: generated or imported images that are (near-)copies of a held-out test image.

    python -m downstream.leakage --config C --split split/P.json --pairs methods/M/P [--method M] [--out copies.json]

Two published peers evaluate on test images their generator trained on; a generator may also just memorise. An
image's signature is a small perceptual thumbnail (:func:`signature`): greyscale, box-filtered to 16 x 16, its mean
subtracted (a brightness shift is not a new picture), values in grey levels / 255. Two images are the same picture
when the mean absolute difference of their signatures is at most ``downstream.leakage.threshold`` (0.01).
Measured on the demo data (docs/METHOD.md, tests/downstream/test_leakage.py): an exact copy 0; a copy resized
(bicubic, bilinear), JPEG-recompressed (quality 50-75) or both <= 0.0038; two distinct demo images >= 0.0187; the
baselines' clean pairs (real, crop_paste, cutpaste, draem) against the test images >= 0.0178. Each test image counts with two signatures, its shorter-side centre crop and its full frame squashed to a
square, so a copy made by either of the pipeline's image policies (or a peer resizing a non-square image) is found.
Rotated or flipped copies are not looked for.

Every image under ``<pairs>/<type>/images/`` (``good`` included: a test/good image among the pairs leaks too) is
compared with every held-out test image of the product (the split manifest's ``test`` list). ``gen_metrics`` writes
the count into the generation table (``test_copies``); ``train_seg`` refuses a method with copies
(:func:`check_no_test_copies`) unless ``downstream.leakage.allow`` names it, and the tables' ``protocol`` column
then says so. This CLI prints the copies (and writes them as JSON with ``--out``); it exits 0 either way.
Pure numpy + PIL.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np
from PIL import Image

from seas.data.images import list_images, load_image
from seas.data.pairs import IMAGES, list_types
from seas.data.split import Split
from seas.run.config import add_config_arguments, config_from_args
from seas.run.errors import DataError
from seas.run.runtime import atomic_write_text, cli, setup_logging

__all__ = ["SIGNATURE_SIZE", "DEFAULT_THRESHOLD", "ALLOW_KEY", "Copy", "signature", "test_signatures",
           "signature_distances", "find_copies", "pair_images", "product_copies", "check_no_test_copies", "main"]

log = logging.getLogger(__name__)

#: the config keys this module reads (it is a tool, not a stage: gen_metrics and train_seg declare the key too)
CONFIG_KEYS = ("downstream.leakage.threshold",)

SIGNATURE_SIZE = 16
DEFAULT_THRESHOLD = 0.01
ALLOW_KEY = "downstream.leakage.allow"


class Copy(NamedTuple):
    """A generated / imported ``image`` within the threshold of held-out ``test_image`` (signature ``distance``)."""

    image: str
    test_image: str
    distance: float


def _grey(img: Image.Image) -> Image.Image:
    return img.convert("L") if img.mode != "L" else img


def signature(img: Image.Image, size: int = SIGNATURE_SIZE) -> np.ndarray:
    """float32 [size, size]: the greyscale image box-filtered (area-averaged) to ``size`` x ``size``, in grey levels
    / 255, minus its mean."""
    t = np.asarray(_grey(img).resize((size, size), Image.BOX), dtype=np.float32) / 255.0
    return t - t.mean()


def _center_square(img: Image.Image) -> Image.Image:
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s))


def test_signatures(paths: Sequence[str | Path], size: int = SIGNATURE_SIZE) -> tuple[np.ndarray, list[str]]:
    """Signatures of the test images: two per image (centre crop, full frame squashed; one when square) ->
    (float32 [K, size, size], the image path of each row)."""
    sigs, owners = [], []
    for p in paths:
        img = load_image(p)
        variants = [img] if img.size[0] == img.size[1] else [_center_square(img), img]
        for v in variants:
            sigs.append(signature(v, size))
            owners.append(str(p))
    return (np.stack(sigs) if sigs else np.zeros((0, size, size), np.float32)), owners


def signature_distances(a: np.ndarray, b: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Mean absolute difference between every signature of ``a`` [N,s,s] and of ``b`` [M,s,s] -> [N, M]."""
    a2, b2 = a.reshape(len(a), -1), b.reshape(len(b), -1)
    out = np.empty((len(a2), len(b2)), np.float32)
    for i in range(0, len(a2), chunk):
        out[i:i + chunk] = np.abs(a2[i:i + chunk, None, :] - b2[None, :, :]).mean(-1)
    return out


def find_copies(images: Iterable[str | Path], test_images: Sequence[str | Path],
                threshold: float = DEFAULT_THRESHOLD, size: int = SIGNATURE_SIZE) -> list[Copy]:
    """The ``images`` within ``threshold`` of some test image, each with its nearest test image (in input order)."""
    tsig, owners = test_signatures(test_images, size)
    images = [str(p) for p in images]
    if not images or not len(tsig):
        return []
    out: list[Copy] = []
    for i in range(0, len(images), 256):
        batch = images[i:i + 256]
        sig = np.stack([signature(load_image(p), size) for p in batch])
        d = signature_distances(sig, tsig)
        j = d.argmin(1)
        for k, p in enumerate(batch):
            if d[k, j[k]] <= threshold:
                out.append(Copy(p, owners[j[k]], round(float(d[k, j[k]]), 5)))
    return out


def pair_images(pairs_dir: str | Path) -> list[Path]:
    """Every image of a method's product folder: ``<pairs_dir>/<type>/images/*`` (``good`` included)."""
    pairs_dir = Path(pairs_dir)
    if not pairs_dir.is_dir():
        raise DataError(f"{pairs_dir}: no such pairs folder")
    return [p for t in list_types(pairs_dir) for p in list_images(pairs_dir / t / IMAGES)]


def product_copies(pairs_dir: str | Path, split: Split, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """``{"test_copies": n, "threshold", "n_images", "n_test", "copies": [{image, test_image, distance}, ...]}`` of one
    product's pairs against its split's held-out test images."""
    images = pair_images(pairs_dir)
    tests = [d["image"] for d in split.test]
    copies = find_copies(images, tests, threshold)
    return {"test_copies": len(copies), "threshold": float(threshold), "n_images": len(images), "n_test": len(tests),
            "copies": [c._asdict() for c in copies]}


def check_no_test_copies(method: str, images_by_product: Mapping[str, Sequence[str | Path]],
                         splits: Sequence[Split], threshold: float, allowed: bool) -> int:
    """The number of test copies among a method's training images (``{product: image paths}``, compared with that
    product's test images). Raises DataError naming the method, a copy and its test image, and
    ``downstream.leakage.allow``, when there are copies and ``allowed`` is off."""
    by_product = {s.product: s for s in splits}
    total, first = 0, None
    for product, images in images_by_product.items():
        s = by_product.get(product)
        if s is None:
            continue
        copies = find_copies(images, [d["image"] for d in s.test], threshold)
        total += len(copies)
        first = first or (copies[0] if copies else None)
    if total and not allowed:
        raise DataError(
            f"method {method!r}: {total} of its images are copies of held-out test images (thumbnail distance <= "
            f"{threshold}), e.g. {first.image} ~ {first.test_image} (distance {first.distance}); scoring it would "
            f"test on its training data. Remove them, or score it anyway by naming it in {ALLOW_KEY} (the tables' "
            "protocol column then says so)")
    if total:
        log.warning("method %r: %d test copies among its training images (allowed by %s)", method, total, ALLOW_KEY)
    return total


@cli
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m downstream.leakage", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(ap)
    ap.add_argument("--split", required=True, help="split manifest of the product (its held-out test images)")
    ap.add_argument("--pairs", required=True, help="the method's product folder (<pairs>/<type>/images/)")
    ap.add_argument("--method", default=None, help="method name for the messages (default: the folder's parent)")
    ap.add_argument("--out", default=None, help="also write the copies as JSON here")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    cfg = config_from_args(args)
    split = Split.load(args.split)
    res = product_copies(args.pairs, split, float(cfg["downstream"]["leakage"]["threshold"]))
    method = args.method or Path(args.pairs).resolve().parent.name
    print(f"{method} {split.product}: {res['test_copies']} test copies among {res['n_images']} images "
          f"(threshold {res['threshold']})")
    for c in res["copies"]:
        print(f"  {c['image']} ~ {c['test_image']} ({c['distance']})")
    if args.out:
        atomic_write_text(args.out, json.dumps({"method": method, "product": split.product, **res}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

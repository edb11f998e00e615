"""The generated-pairs layout shared by every method (SeaS, the built-in baselines, external folders): the one
module its producers (seas.method.generate, downstream.baselines) and its readers (downstream.segmentation.data, downstream.gen_metrics,
downstream.report.sample_grid, the Snakefile through wflib) import.

    <method_root>/<product>/<type>/images/000000.png
    <method_root>/<product>/<type>/masks/000000.png     (same stem; 0/255 single channel, same size)
    <method_root>/<product>/<type>/manifest.csv          index,image,mask,seed,reference,type,...

``manifest.csv`` is written last, so its presence marks a complete folder written by this project. External
folders (``external:<path>``: AnomalyDiffusion / DFMGAN outputs, the authors' released pairs) may omit it;
``images/`` + ``masks/`` suffice there. A type folder named ``good`` holds normal images (all-zero masks).

Readers: :func:`iter_pairs` (a validated list of :class:`Pair`), :func:`read_manifest`, :func:`list_types`,
:func:`seas.data.images.list_images`. Writers: :func:`pair_paths`, :func:`save_pair`, :func:`write_manifest`.
Method names and labels: seas.run.labels.
"""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Iterable, Mapping, NamedTuple, Sequence

import numpy as np
from PIL import Image

from seas.run.errors import DataError
from seas.data.images import list_images, image_size
from seas.run.runtime import atomic_save_image, atomic_write_text



__all__ = [
    "Pair", "MANIFEST", "MANIFEST_COLUMNS", "SIZE_COLUMNS", "GOOD", "IMAGES", "MASKS", "pair_name", "pair_paths", "save_pair", "write_manifest", "read_manifest", "list_types", "iter_pairs",
    "count_pairs",
]

log = logging.getLogger(__name__)

MANIFEST = "manifest.csv"
#: the leading columns of every manifest; methods append their own parameters after these
MANIFEST_COLUMNS = ("index", "image", "mask", "seed", "reference", "type")
#: the byte size of each file when it was written (write_manifest adds them; seas.data.integrity compares them)
SIZE_COLUMNS = ("image_bytes", "mask_bytes")
#: the type folder of normal images (all-zero masks)
GOOD = "good"
IMAGES, MASKS = "images", "masks"

def pair_name(index: int) -> str:
    """File name of pair ``index`` in ``images/`` and ``masks/``."""
    return f"{int(index):06d}.png"


class Pair(NamedTuple):
    """One training pair: absolute image and mask paths, the product and the anomaly type (``good`` = normal)."""

    image: str
    mask: str
    product: str
    type: str
    #: the byte sizes recorded in the manifest when the files were written (None: external folders, older manifests)
    image_bytes: int | None = None
    mask_bytes: int | None = None


# ----------------------------------------------------------------------------- writing
def pair_paths(type_dir: str | Path, index: int) -> tuple[Path, Path]:
    """``(images/NNNNNN.png, masks/NNNNNN.png)`` inside ``type_dir``."""
    type_dir = Path(type_dir)
    name = pair_name(index)
    return type_dir / IMAGES / name, type_dir / MASKS / name


def save_pair(type_dir: str | Path, index: int, image, mask) -> tuple[Path, Path]:
    """Write one pair atomically. ``image``: PIL image; ``mask``: array HxW in {0,1} (or bool / 0-255) or PIL.

    The mask is stored as a single-channel 0/255 PNG; its size must equal the image's.
    """
    img_path, mask_path = pair_paths(type_dir, index)
    if not isinstance(mask, Image.Image):
        m = np.asarray(mask)
        if m.ndim != 2:
            raise DataError(f"{mask_path}: mask must be 2-D (H, W), got shape {m.shape}")
        m = np.where(m > (127 if m.max(initial=0) > 1 else 0), 255, 0).astype(np.uint8)
        mask = Image.fromarray(m, mode="L")
    else:
        mask = mask.convert("L")
    if mask.size != image.size:
        raise DataError(f"{mask_path}: mask size {mask.size} differs from image size {image.size}")
    atomic_save_image(image.convert("RGB"), img_path)
    atomic_save_image(mask, mask_path)
    return img_path, mask_path


def write_manifest(type_dir: str | Path, rows: Sequence[Mapping], extra_columns: Iterable[str] = ()) -> Path:
    """Write ``manifest.csv`` (atomically, last). ``image``/``mask`` values are stored relative to ``type_dir``,
    and each file's byte size as written (``image_bytes`` / ``mask_bytes``): a file truncated or replaced later
    is found by a stat (seas.data.integrity)."""
    type_dir = Path(type_dir)
    columns = list(MANIFEST_COLUMNS)
    sized = []
    for row in rows:
        row = dict(row)
        for key, size_key in zip(("image", "mask"), SIZE_COLUMNS):
            p = Path(str(row.get(key, "")))
            p = p if p.is_absolute() else type_dir / p
            row[size_key] = p.stat().st_size if p.is_file() else ""
        sized.append(row)
    rows = sized
    for row in rows:
        for k in list(extra_columns) + list(row):
            if k not in columns:
                columns.append(k)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="raise", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        row = dict(row)
        for key in ("image", "mask"):
            p = Path(str(row.get(key, "")))
            for base in (type_dir, type_dir.absolute(), type_dir.resolve()):
                if p.is_relative_to(base):
                    row[key] = p.relative_to(base).as_posix()
                    break
        writer.writerow({c: ("" if row.get(c) is None else row.get(c, "")) for c in columns})
    return atomic_write_text(type_dir / MANIFEST, buf.getvalue())


# ----------------------------------------------------------------------------- reading
def read_manifest(type_dir: str | Path) -> list[dict]:
    """Rows of ``<type_dir>/manifest.csv`` with ``image``/``mask`` made absolute. DataError if malformed."""
    type_dir = Path(type_dir)
    path = type_dir / MANIFEST
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            missing = {"image", "mask"} - set(reader.fieldnames or [])
            if missing:
                raise DataError(f"{path}: manifest lacks column(s) {sorted(missing)}")
            rows = list(reader)
    except FileNotFoundError as e:
        raise DataError(f"{path}: manifest not found") from e
    for r in rows:
        for key in ("image", "mask"):
            p = Path(r[key])
            r[key] = str(p if p.is_absolute() else (type_dir / p).resolve())
    return rows


def list_types(product_dir: str | Path, *, anomalous_only: bool = False) -> list[str]:
    """Sorted type folders of a product folder (any sub-folder that has ``images/``; not ``good`` with
    ``anomalous_only``)."""
    product_dir = Path(product_dir)
    return sorted(d.name for d in product_dir.iterdir()
                  if d.is_dir() and not d.name.startswith(".") and (d / IMAGES).is_dir()
                  and not (anomalous_only and d.name == GOOD))


def _images_in(folder: Path) -> dict[str, Path]:
    """Image files by stem; hidden files (``.DS_Store``, macOS ``._*`` resource forks, temporary files) skipped."""
    return {p.stem: p for p in list_images(folder, missing_ok=True)}


def _type_pairs(type_dir: Path, product: str, type_name: str) -> list[Pair]:
    if (type_dir / MANIFEST).is_file():
        rows = read_manifest(type_dir)
        out = []
        for r in rows:
            if not Path(r["image"]).is_file():
                raise DataError(f"{type_dir / MANIFEST}: image {r['image']} listed but missing")
            if not Path(r["mask"]).is_file():
                raise DataError(f"{type_dir / MANIFEST}: image {r['image']} has no mask (missing {r['mask']})")
            sizes = [int(r[k]) if str(r.get(k) or "").isdigit() else None for k in SIZE_COLUMNS]
            out.append(Pair(r["image"], r["mask"], product, type_name, *sizes))
        return out
    images = _images_in(type_dir / "images")
    masks = _images_in(type_dir / "masks")
    out = []
    for stem, img in images.items():
        if stem not in masks:
            raise DataError(f"{img}: image without mask (expected {type_dir / 'masks' / (stem + '.png')})")
        out.append(Pair(str(img.resolve()), str(masks[stem].resolve()), product, type_name))
    orphans = sorted(set(masks) - set(images))
    if orphans:
        more = f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""
        raise DataError(f"{masks[orphans[0]]}: mask without image{more} "
                        f"(expected {type_dir / 'images' / (orphans[0] + '.png')})")
    return out


def _check_size(pair: Pair) -> None:
    isz, msz = image_size(pair.image), image_size(pair.mask)
    if isz != msz:
        raise DataError(f"{pair.mask}: mask size {msz} differs from image size {isz} ({pair.image})")


def iter_pairs(method_root: str | Path, products: Sequence[str], check_sizes: bool = True) -> list[Pair]:
    """All pairs of ``products`` under ``method_root`` (sorted by product, type, name), validated.

    Raises :class:`DataError` for: a missing or empty method folder, a missing product folder, a product folder
    with no pairs, an image without a mask, a manifest row pointing at a missing file, and (``check_sizes``)
    a mask whose size differs from its image's (read from the file headers only).
    """
    root = Path(method_root)
    if not root.is_dir():
        raise DataError(f"{root}: method folder not found")
    if not any(root.iterdir()):
        raise DataError(f"{root}: method folder is empty (no <product>/<type>/images + masks)")
    if not products:
        raise DataError(f"{root}: no products asked for")
    pairs: list[Pair] = []
    for product in products:
        pdir = root / product
        if not pdir.is_dir():
            present = sorted(d.name for d in root.iterdir() if d.is_dir())
            raise DataError(f"{pdir}: product {product!r} missing in method folder {root} (present: {present})")
        found: list[Pair] = []
        for type_name in list_types(pdir):
            found.extend(_type_pairs(pdir / type_name, product, type_name))
        if not found:
            raise DataError(f"{pdir}: no image/mask pairs (expected {pdir}/<type>/images/*.png + masks/)")
        pairs.extend(found)
    if check_sizes:
        for p in pairs:
            _check_size(p)
    log.info("%s: %d pairs over %d product(s)", root, len(pairs), len(products))
    return pairs


def count_pairs(pairs: Iterable[Pair]) -> dict[tuple[str, str], int]:
    """{(product, type): number of pairs}."""
    counts: dict[tuple[str, str], int] = {}
    for p in pairs:
        counts[(p.product, p.type)] = counts.get((p.product, p.type), 0) + 1
    return counts

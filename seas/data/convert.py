"""Converters from VisA and MVTec 3D AD into the MVTec AD layout the pipeline reads.

    python -m seas.data.convert visa    --src VISA_ROOT --dst OUT [--split-csv PATH] [--single-type NAME]
    python -m seas.data.convert mvtec3d --src M3D_ROOT  --dst OUT [--include-validation]

Output (per product)::

    <dst>/<product>/train/good/000.png …          normal training images
    <dst>/<product>/test/good/000.png …           normal test images
    <dst>/<product>/test/<type>/000.png …         anomalous images
    <dst>/<product>/ground_truth/<type>/000_mask.png …   single channel, 0/255
    <dst>/convert_map.csv                          new,original  (every written file -> its source)

Files are renumbered 000.png, 001.png … in natural sort order of their source paths (stable across runs).
PNG sources are copied byte for byte; other formats (VisA's JPG) are re-encoded to PNG. Masks are binarised
to 0/255: with values below 128 only (0/1 or label masks) every non-zero pixel is foreground, otherwise
pixels >= 128 are. The whole tree is built in a temporary directory beside ``dst`` and renamed onto it at
the end; an existing non-empty ``dst`` is only replaced with ``--overwrite``.

VisA, per defect type as the authors do (HUST-SLOW/SeaS README "VisA": "we divided the dataset according to defect
categories", their layout ``test/chunk_of_wax_missing``, ``test/combined``; their type list
``configs/product-anomaly-visa.txt``; a maintainer in their issue #29: the types come from VisA's official CSV, and
an image with several anomaly types goes to ``combined``):

- ``<src>/split_csv/1cls.csv`` (columns object,split,label,image,mask; label normal/anomaly; paths relative to
  ``<src>``) says which images are normal and which normals train: normal rows go to train/good or test/good by their
  split, anomalies of any split to test/<type> with their masks (the pipeline draws its few training shots there).
- ``<src>/<object>/image_anno.csv`` (columns image,label[,mask]; image paths relative to ``<src>`` as VisA ships
  them) gives each anomaly its defect names: ``label`` is ``normal`` or one or more names separated by commas
  (``"melt, scratch"``). The folder name of a defect is its name lower-cased with every run of characters other than
  ``a-z 0-9 . -`` (spaces first) replaced by ``_`` ("Chunk Of Wax Missing" -> ``chunk_of_wax_missing``, as in the
  authors' folders); an image with two or more different names goes to ``combined`` (its mask, the union of its
  defects, is kept whole). The split CSV and the annotation CSV must agree (normal is normal), every anomaly needs an
  annotation row, and every annotated image must exist. Products whose types differ from the authors' list are
  logged (a warning, not an error).
- ``--single-type NAME`` writes every anomaly to test/NAME instead (the 1-class layout of VisA's own
  ``utils/prepare_data.py``, NAME ``bad`` there; not the paper's protocol: one type per product changes the split,
  the tokens, the step count and IC-LPIPS); image_anno.csv is then not read.

MVTec 3D AD: ``<class>/{train,validation,test}/<type>/{rgb,gt,xyz}/NNN.png``; only rgb/ and gt/ are used.
train/good/rgb -> train/good (validation/good/rgb appended with --include-validation),
test/<type>/rgb -> test/<type>, test/<type>/gt -> ground_truth/<type>/NNN_mask.png (not for good).
"""
from __future__ import annotations

import argparse
import csv
import io
import logging
import re
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from seas.run.cli_types import positive_int
from seas.data.images import eight_bit_image, image_size, open_image
from seas.run.errors import DataError
from seas.data.images import list_images
from seas.run.runtime import atomic_dir, cli, setup_logging

log = logging.getLogger(__name__)

__all__ = [
    "Entry",
    "plan_visa",
    "defect_folder",
    "plan_mvtec3d",
    "write_plan",
    "convert_visa",
    "convert_mvtec3d",
    "binarize_mask",
    "main",
]

MAP_NAME = "convert_map.csv"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class Entry:
    """One file to write: ``new`` (path relative to dst, posix), ``original`` (source file), ``kind``
    ("image" or "mask"), and for a mask the source ``image`` whose size it must match."""

    new: str
    original: Path
    kind: str
    image: Path | None = None


def natural_key(text: str) -> list:
    """Sort key treating digit runs as numbers: a2 < a10."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", text)]


def _check_name(name: str, what: str) -> str:
    if not _SAFE_NAME.match(name) or name in {".", ".."}:
        raise DataError(f"{what} {name!r}: not usable as a folder name (letters, digits, _ . - only)")
    return name


# ----------------------------------------------------------------------------- planning
def _numbered(product: str, bucket: str, items: list[tuple[Path, Path | None]], sort_root: Path) -> list[Entry]:
    """Entries for (image, mask|None) pairs of one folder, renumbered in natural order of the image paths."""
    items = sorted(items, key=lambda it: natural_key(it[0].relative_to(sort_root).as_posix()
                                                     if it[0].is_relative_to(sort_root) else it[0].as_posix()))
    split, typ = bucket.split("/")
    out = []
    for i, (img, mask) in enumerate(items):
        out.append(Entry(f"{product}/{split}/{typ}/{i:03d}.png", img, "image"))
        if mask is not None:
            out.append(Entry(f"{product}/ground_truth/{typ}/{i:03d}_mask.png", mask, "mask", image=img))
    return out


COMBINED = "combined"
ANNO_NAME = "image_anno.csv"
_UNSAFE_RUN = re.compile(r"[^a-z0-9.-]+")

#: The authors' VisA types per product (HUST-SLOW/SeaS ``configs/product-anomaly-visa.txt``, one ``product+type``
#: a line): only used to log where a converted tree differs from theirs.
AUTHORS_VISA_TYPES: dict[str, tuple[str, ...]] = {
    "candle": ("chunk_of_wax_missing", "combined", "damaged_corner_of_packaging", "different_colour_spot",
               "extra_wax_in_candle", "foreign_particals_on_candle", "wax_melded_out_of_the_candle",
               "weird_candle_wick"),
    "capsules": ("bubble", "combined"),
    "cashew": ("burnt", "combined", "corner_or_edge_breakage", "different_colour_spot", "middle_breakage",
               "same_colour_spot", "small_holes", "small_scratches", "stuck_together"),
    "chewinggum": ("chunk_of_gum_missing", "combined", "corner_missing", "scratches", "similar_colour_spot"),
    "fryum": ("burnt", "combined", "corner_or_edge_breakage", "different_colour_spot", "fryum_stuck_together",
              "middle_breakage", "similar_colour_spot", "small_scratches"),
    "macaroni1": ("chip_around_edge_and_corner", "combined", "different_colour_spot", "similar_colour_spot",
                  "small_cracks", "small_scratches"),
    "macaroni2": ("breakage_down_the_middle", "color_spot_similar_to_the_object", "combined", "different_color_spot",
                  "small_chip_around_edge", "small_cracks", "small_scratches"),
    "pcb1": ("bent", "combined", "melt", "missing", "scratch"),
    "pcb2": ("bent", "combined", "melt", "missing", "scratch"),
    "pcb3": ("bent", "combined", "melt", "missing", "scratch"),
    "pcb4": ("burnt", "combined", "damage", "extra", "missing", "scratch", "wrong_place"),
    "pipe_fryum": ("burnt", "combined", "corner_and_edge_breakage", "different_colour_spot", "similar_colour_spot",
                   "small_scratches", "stuck_together"),
}


def defect_folder(name: str) -> str:
    """Folder name of one VisA defect name: lower case, each run of characters other than a-z 0-9 . - (spaces
    first) -> ``_``, no leading/trailing ``_`` or ``.``: "Chunk Of Wax Missing" -> ``chunk_of_wax_missing``.
    Returns "" when nothing is left."""
    return _UNSAFE_RUN.sub("_", name.strip().lower()).strip("_.")


def _read_csv(path: Path, required: set[str], what: str) -> list[tuple[dict[str, str], int]]:
    """Rows of a CSV (stripped keys and values) with their line numbers; DataError naming the file."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [(h or "").strip() for h in (reader.fieldnames or [])]
            missing = required - set(header)
            if missing:
                raise DataError(f"{what} {path}: missing column(s) {sorted(missing)} (header: {header})")
            return [({(k or "").strip(): (v or "").strip() for k, v in row.items() if isinstance(v, str) or v is None},
                     reader.line_num) for row in reader]
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{what} {path}: not a readable CSV ({e})") from None


def _rel_key(src: Path, rel: str) -> str:
    """Comparable form of a path relative to the VisA root (separators, ./ and case of the root kept)."""
    return (src / rel.replace("\\", "/")).as_posix()


def _visa_types(src: Path, obj: str, anomalies: dict[str, str], normals: dict[str, str]) -> dict[str, str]:
    """Defect folder of each anomaly of ``obj`` from ``<src>/<obj>/image_anno.csv``.

    ``anomalies`` / ``normals``: path key -> "<split csv>:<line>" of the object's split rows."""
    anno = src / obj / ANNO_NAME
    if not anno.is_file():
        raise DataError(f"VisA annotation CSV {anno}: not found (VisA ships one per object, with the defect names of "
                        "its anomalies; pass --single-type NAME to write all anomalies of a product as one type)")
    seen: dict[str, str] = {}
    types: dict[str, str] = {}
    for row, line in _read_csv(anno, {"image", "label"}, "VisA annotation CSV"):
        where = f"{anno}:{line}"
        if not row["image"]:
            raise DataError(f"{where}: empty image column")
        key = _rel_key(src, row["image"])
        img = src / row["image"]
        if not img.is_file():
            raise DataError(f"{where}: image {img} not found (unknown image; paths are relative to the VisA root "
                            f"{src})")
        if key in seen:
            raise DataError(f"{where}: image {row['image']} is annotated twice (first at line {seen[key]})")
        seen[key] = str(line)
        label = row["label"]
        if label.lower() == "normal":
            if key in anomalies:
                raise DataError(f"{where}: {row['image']} is labelled normal but {anomalies[key]} lists it as an "
                                "anomaly")
            continue
        names = [n for n in (part.strip() for part in label.split(",")) if n]
        if not names:
            raise DataError(f"{where}: empty label for {row['image']} (expected normal or defect names)")
        if key in normals:
            raise DataError(f"{where}: {row['image']} is labelled {label!r} but {normals[key]} lists it as normal")
        if key not in anomalies:
            continue  # an image this split CSV leaves out (or another product's)
        folders = []
        for n in names:
            f = defect_folder(n)
            if not f:
                raise DataError(f"{where}: defect name {n!r} gives no usable folder name")
            if f == "good":
                raise DataError(f"{where}: defect name {n!r}: 'good' is reserved for normal images")
            if f not in folders:
                folders.append(f)
        types[key] = folders[0] if len(folders) == 1 else COMBINED
    missing = [k for k in anomalies if k not in types]
    if missing:
        raise DataError(f"{anomalies[missing[0]]}: anomaly image {missing[0]} has no row in {anno} "
                        f"({len(missing)} anomalies of {obj} unannotated)")
    return types


def plan_visa(src: str | Path, split_csv: str | Path | None = None, single_type: str | None = None,
              products: Sequence[str] | None = None) -> list[Entry]:
    """Read VisA's split CSV (and, per defect type, each object's image_anno.csv) and list the files to write
    (checks every named file exists). ``single_type``: every anomaly to test/<single_type> instead."""
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"VisA root {src}: not a directory")
    csv_path = Path(split_csv) if split_csv is not None else src / "split_csv" / "1cls.csv"
    if not csv_path.is_file():
        raise DataError(f"VisA split CSV {csv_path}: not found (expected <src>/split_csv/1cls.csv; "
                        "pass --split-csv to use another one)")
    if single_type is not None:
        _check_name(single_type, "--single-type")
        if single_type == "good":
            raise DataError("--single-type 'good': that name is reserved for normal images")

    rows = _read_csv(csv_path, {"object", "split", "label", "image", "mask"}, "VisA split CSV")
    if not rows:
        raise DataError(f"VisA split CSV {csv_path}: no rows")

    normals: dict[tuple[str, str], list[Path]] = {}
    anomalies: dict[str, dict[str, tuple[Path, Path, str]]] = {}  # obj -> key -> (image, mask, where)
    normal_where: dict[str, dict[str, str]] = {}
    train_anomalies = 0
    for row, line in rows:
        where = f"{csv_path}:{line}"
        obj = _check_name(row["object"], f"{where}: object")
        if products is not None and obj not in products:
            continue
        split, label = row["split"].lower(), row["label"].lower()
        if split not in ("train", "test"):
            raise DataError(f"{where}: split {row['split']!r}, expected train or test")
        if label not in ("normal", "anomaly"):
            raise DataError(f"{where}: label {row['label']!r}, expected normal or anomaly")
        if not row["image"]:
            raise DataError(f"{where}: empty image column")
        img = src / row["image"]
        if not img.is_file():
            raise DataError(f"{where}: image {img} not found")
        key = _rel_key(src, row["image"])
        if label == "normal":
            normals.setdefault((obj, split), []).append(img)
            normal_where.setdefault(obj, {})[key] = where
            continue
        if not row["mask"]:
            raise DataError(f"{where}: anomaly image {img} has no mask in the mask column")
        mask = src / row["mask"]
        if not mask.is_file():
            raise DataError(f"{where}: mask {mask} not found")
        train_anomalies += split == "train"
        anomalies.setdefault(obj, {})[key] = (img, mask, where)
    objects = sorted({o for o, _ in normals} | set(anomalies))
    if products is not None:
        unknown = sorted(set(products) - set(objects))
        if unknown:
            raise DataError(f"VisA split CSV {csv_path}: no rows for product(s) {unknown}")
    if not objects:
        raise DataError(f"VisA split CSV {csv_path}: no usable rows")

    buckets: dict[tuple[str, str], list[tuple[Path, Path | None]]] = {
        (obj, f"{split}/good"): [(p, None) for p in imgs] for (obj, split), imgs in normals.items()}
    for obj in objects:
        found = anomalies.get(obj, {})
        if single_type is not None or not found:
            types = {k: single_type for k in found}
        else:
            types = _visa_types(src, obj, {k: w for k, (_, _, w) in found.items()}, normal_where.get(obj, {}))
        for k, (img, mask, _) in found.items():
            buckets.setdefault((obj, f"test/{types[k]}"), []).append((img, mask))
        if single_type is None and found:
            counts = {t: list(types.values()).count(t) for t in sorted(set(types.values()))}
            log.info("VisA %s: %d anomalies in %d types %s", obj, len(types), len(counts), counts)
            theirs = AUTHORS_VISA_TYPES.get(obj)
            if theirs is not None and set(counts) != set(theirs):
                log.warning("VisA %s: types differ from the authors' (HUST-SLOW/SeaS configs/product-anomaly-visa.txt):"
                            " only here %s, only theirs %s", obj, sorted(set(counts) - set(theirs)),
                            sorted(set(theirs) - set(counts)))
    if train_anomalies:
        log.warning("%s: %d anomalies are in the train split; they go to test/<type> with the others",
                    csv_path, train_anomalies)
    entries: list[Entry] = []
    for (obj, bucket) in sorted(buckets):
        entries += _numbered(obj, bucket, buckets[(obj, bucket)], src)
    return entries


def plan_mvtec3d(src: str | Path, include_validation: bool = False,
                 products: Sequence[str] | None = None) -> list[Entry]:
    """List the rgb/ and gt/ files of an MVTec 3D AD tree to write in MVTec layout."""
    src = Path(src)
    if not src.is_dir():
        raise DataError(f"MVTec 3D AD root {src}: not a directory")
    classes = sorted((p.name for p in src.iterdir()
                      if p.is_dir() and ((p / "train").is_dir() or (p / "test").is_dir())), key=natural_key)
    if products is not None:
        unknown = sorted(set(products) - set(classes))
        if unknown:
            raise DataError(f"MVTec 3D AD root {src}: no class folder(s) {unknown} (found {classes})")
        classes = [c for c in classes if c in products]
    if not classes:
        raise DataError(f"MVTec 3D AD root {src}: no class folders (<class>/train, <class>/test) found")

    entries: list[Entry] = []
    for cls in classes:
        base = src / cls
        train_dirs = [base / "train" / "good" / "rgb"]
        if include_validation:
            train_dirs.append(base / "validation" / "good" / "rgb")
        normals: list[tuple[Path, None]] = []
        for d in train_dirs:
            if not d.is_dir():
                raise DataError(f"MVTec 3D AD class {cls}: folder {d} not found")
            # keep train before validation: sort within each folder, then concatenate
            normals += [(p, None) for p in sorted(list_images(d), key=lambda p: natural_key(p.name))]
        if not normals:
            raise DataError(f"MVTec 3D AD class {cls}: no images in {train_dirs[0]}")
        entries += [Entry(f"{cls}/train/good/{i:03d}.png", p, "image") for i, (p, _) in enumerate(normals)]

        test = base / "test"
        if not test.is_dir():
            raise DataError(f"MVTec 3D AD class {cls}: folder {test} not found")
        for tdir in sorted((p for p in test.iterdir() if p.is_dir()), key=lambda p: natural_key(p.name)):
            typ = _check_name(tdir.name, f"MVTec 3D AD class {cls}: test type")
            rgb = tdir / "rgb"
            if not rgb.is_dir():
                raise DataError(f"MVTec 3D AD class {cls}: folder {rgb} not found")
            items: list[tuple[Path, Path | None]] = []
            for img in list_images(rgb):
                if typ == "good":
                    items.append((img, None))
                    continue
                gt = tdir / "gt" / f"{img.stem}.png"
                if not gt.is_file():
                    raise DataError(f"MVTec 3D AD: ground-truth mask {gt} for {img} not found")
                items.append((img, gt))
            if not items:
                raise DataError(f"MVTec 3D AD class {cls}: no images in {rgb}")
            entries += _numbered(cls, f"test/{typ}", items, rgb)
    return entries


# ----------------------------------------------------------------------------- writing
def binarize_mask(arr: np.ndarray) -> np.ndarray:
    """HxW (or HxWxC: max over channels) mask -> uint8 in {0, 255}.

    Values all below 128 (0/1 masks, label masks): non-zero is foreground; otherwise >= 128 is.
    """
    arr = np.asarray(arr)
    if arr.ndim == 3:
        arr = arr.max(axis=2)
    fg = arr > 0 if arr.max(initial=0) < 128 else arr >= 128
    return fg.astype(np.uint8) * 255


# unreadable, truncated, too large (decompression bomb): DataError naming the file
_open, _image_size = open_image, image_size


def _write_entry(job: tuple[Entry, Path]) -> str | None:
    """Write one entry under ``root``; return a warning text or None. (Top level: runs in worker processes.)"""
    entry, root = job
    out = root / entry.new
    out.parent.mkdir(parents=True, exist_ok=True)
    if entry.kind == "image":
        if entry.original.suffix.lower() == ".png":
            _image_size(entry.original)  # readable?
            shutil.copyfile(entry.original, out)
        else:
            img = eight_bit_image(_open(entry.original), entry.original)
            if img.mode not in ("RGB", "L"):
                img = img.convert("RGB")
            img.save(out, format="PNG")
        return None
    img_size = _image_size(entry.image)
    m = _open(entry.original)
    if m.size != img_size:
        raise DataError(f"mask {entry.original} is {m.size[0]}x{m.size[1]} but its image {entry.image} is "
                        f"{img_size[0]}x{img_size[1]}")
    if m.mode in ("P", "1"):
        m = m.convert("L")
    elif m.mode in ("LA", "RGBA"):  # an alpha channel is not mask content
        m = m.convert(m.mode[:-1])
    arr = binarize_mask(np.asarray(m))
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG")
    out.write_bytes(buf.getvalue())
    if not arr.any():
        return f"mask {entry.original} is empty (anomalous image {entry.image})"
    return None


def write_plan(entries: Iterable[Entry], dst: str | Path, workers: int = 1, overwrite: bool = False) -> Path:
    """Write ``entries`` into ``dst`` atomically (temp dir + rename), with ``convert_map.csv``."""
    entries = list(entries)
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise DataError(f"--dst {dst}: exists and is not a directory")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise DataError(f"--dst {dst}: exists and is not empty; pass --overwrite to replace it")
    news = [e.new for e in entries]
    if len(set(news)) != len(news):  # pragma: no cover - planning guarantees it
        raise DataError("internal: two sources map to the same output file")
    with atomic_dir(dst) as tmp:
        jobs = [(e, tmp) for e in entries]
        if workers > 1:
            with ProcessPoolExecutor(max_workers=workers) as pool:
                warnings = list(tqdm(pool.map(_write_entry, jobs, chunksize=16), total=len(jobs), desc="convert",
                                     unit="file"))
        else:
            warnings = [_write_entry(j) for j in tqdm(jobs, desc="convert", unit="file")]
        for w in warnings:
            if w:
                log.warning("%s", w)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["new", "original"])
        for e in entries:
            writer.writerow([e.new, str(e.original.resolve())])
        (tmp / MAP_NAME).write_text(buf.getvalue())
    n_img = sum(e.kind == "image" for e in entries)
    log.info("wrote %s: %d images, %d masks", dst, n_img, len(entries) - n_img)
    return dst


def convert_visa(src: str | Path, dst: str | Path, split_csv: str | Path | None = None, single_type: str | None = None,
                 products: Sequence[str] | None = None, workers: int = 1, overwrite: bool = False) -> Path:
    """VisA -> MVTec layout, one test/<type> per defect type (see the module docstring)."""
    return write_plan(plan_visa(src, split_csv, single_type, products), dst, workers, overwrite)


def convert_mvtec3d(src: str | Path, dst: str | Path, include_validation: bool = False,
                    products: Sequence[str] | None = None, workers: int = 1, overwrite: bool = False) -> Path:
    """MVTec 3D AD (rgb + gt) -> MVTec layout (see the module docstring)."""
    return write_plan(plan_mvtec3d(src, include_validation, products), dst, workers, overwrite)


# ----------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m seas.data.convert",
        description="Convert VisA or MVTec 3D AD into the MVTec AD layout (<dst>/<product>/train/good, test/<type>, "
        "ground_truth/<type>/NNN_mask.png) read by the pipeline. Files are renumbered 000.png… in natural "
        "order of their sources; <dst>/convert_map.csv maps each new file to its source. Masks become 0/255.",
    )
    sub = p.add_subparsers(dest="dataset", required=True, metavar="{visa,mvtec3d}")

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--src", required=True, type=Path, help="root of the downloaded dataset")
        sp.add_argument("--dst", required=True, type=Path, help="output root (MVTec layout)")
        sp.add_argument("--products", nargs="+", metavar="NAME", help="only these objects/classes (default all)")
        sp.add_argument("--workers", type=positive_int, default=1, help="processes for image re-encoding (default 1)")
        sp.add_argument("--overwrite", action="store_true", help="replace a non-empty --dst")
        sp.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    v = sub.add_parser("visa", help="VisA (split_csv/1cls.csv + <object>/image_anno.csv), one folder per defect type",
                       description="VisA -> MVTec layout, split per defect type as the SeaS authors do. Normal rows of "
                       "the split CSV go to train/good or test/good by their split; each anomaly (any split) goes to "
                       "test/<type> with its mask, <type> from the label column of <src>/<object>/image_anno.csv: "
                       "the defect name lower-cased, spaces and other characters outside a-z 0-9 . - as _ ('chunk of "
                       "wax missing' -> chunk_of_wax_missing). An image labelled with two or more different defects "
                       "(e.g. 'melt, scratch') goes to test/combined, its whole mask kept, as the authors do. Split "
                       "CSV and annotations must agree; products whose types differ from the authors' list "
                       "(HUST-SLOW/SeaS configs/product-anomaly-visa.txt) are logged.")
    common(v)
    v.add_argument("--split-csv", type=Path, help="split CSV (default <src>/split_csv/1cls.csv)")
    v.add_argument("--single-type", metavar="NAME",
                   help="write every anomaly to test/NAME instead (VisA's own 1-class layout uses 'bad'); not the "
                   "paper's protocol, image_anno.csv is not read")

    m = sub.add_parser("mvtec3d", help="MVTec 3D AD (rgb/ and gt/ only)",
                       description="MVTec 3D AD -> MVTec layout, using rgb/ and gt/ only (xyz/ is ignored).")
    common(m)
    m.add_argument("--include-validation", action="store_true",
                   help="append validation/good/rgb to train/good (after train's own images)")
    return p


@cli
def main(argv: list[str] | None = None) -> int:
    """CLI entry point (see ``--help``)."""
    args = _parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.workers < 1:
        raise DataError(f"--workers {args.workers}: must be at least 1")
    if args.dataset == "visa":
        convert_visa(args.src, args.dst, args.split_csv, args.single_type, args.products, args.workers,
                     args.overwrite)
    else:
        convert_mvtec3d(args.src, args.dst, args.include_validation, args.products, args.workers, args.overwrite)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

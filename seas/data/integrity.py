"""Integrity checks of the files a stage consumes, run before it starts (issue 25, item 6): damage is found at the
stage boundary, naming the first bad file and what is wrong, not when training first draws the file.

Pure checks (each raises :class:`seas.run.errors.DataError`, or :class:`CheckpointError` for weights):

* :func:`check_image` -- the header opens, the file holds the bytes a complete file of that header holds (PNG: every
  chunk's length and CRC up to ``IEND``, PIL's ``verify()``, no decoding; JPEG: the end-of-image marker, else a full
  decode; other formats: a full decode), and its size equals the size recorded when it was written (``expected``).
* :func:`check_mask` -- decoded: single channel, binary values (seas.data.images.read_mask_array, the readers'
  contract: 0 plus one of 1 / 255 / 65535), the same size as its image (from the image's header).
* :func:`check_pairs` / :func:`check_files` -- the above over many files; the first bad one is named;
  :func:`check_split_files` -- the dataset files a split manifest selected (train / normals / test parts).
* :func:`check_safetensors` -- the 8-byte header length, the JSON header, every tensor's byte range inside the file
  and the file exactly as long as the last range (a truncated or padded file is refused).
* :func:`check_json`, :func:`check_csv` -- parse, expected keys / columns, every CSV row complete.
* :func:`check_checkpoint_dir` -- every ``*.safetensors`` and ``*.json`` file of a model folder.
* :func:`output_damage` -- for the workflow (rules/common.smk): what is wrong with one of the run's own outputs,
  cheaply (sizes against the pairs manifests' records, headers of weights, parses of JSON/CSV), or None.

The pairs manifests record every file's byte size (``image_bytes`` / ``mask_bytes``, seas.data.pairs.write_manifest),
so a truncated file whose header still opens is found by a stat. Cost: benchmarks/integrity_cost.py.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import struct
import time
from pathlib import Path
from typing import Iterable, Mapping

from seas.data.pairs import MANIFEST, SIZE_COLUMNS as _PAIR_SIZE_COLUMNS
from seas.run.errors import CheckpointError, DataError

__all__ = ["check_image", "check_mask", "check_files", "check_pairs", "check_safetensors", "check_json",
           "check_csv", "check_checkpoint_dir", "check_pairs_manifest", "output_damage", "split_pairs", "check_split_files", "SIZE_COLUMNS"]

#: the pairs manifest's columns holding each file's byte size when it was written (seas.data.pairs.write_manifest)
SIZE_COLUMNS = dict(zip(("image", "mask"), _PAIR_SIZE_COLUMNS))
_JPEG_EOI = b"\xff\xd9"
log = logging.getLogger(__name__)


def _size_of(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        raise DataError(f"{path}: file does not exist") from None


def _check_expected(path: Path, size: int, expected) -> None:
    if expected not in (None, "") and int(expected) != size:
        raise DataError(f"{path}: {size} bytes, but {int(expected)} were written (truncated or replaced after the "
                        "fact); rerun the stage that made it")


def check_image(path: str | Path, expected: int | None = None) -> None:
    """An image file that opens and is complete (see the module doc); DataError naming the file and the damage."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    size = _size_of(path)
    _check_expected(path, size, expected)
    fmt = None
    try:
        with Image.open(path) as img:
            fmt = img.format
            if fmt == "PNG":
                img.verify()  # every chunk's length and CRC up to IEND: a truncated file fails here
                return
            if fmt == "JPEG":
                with open(path, "rb") as f:
                    f.seek(max(0, size - 1024))
                    if f.read().rstrip(b"\x00").endswith(_JPEG_EOI):
                        return
            img.load()  # other formats, or a JPEG without its end marker: decode it
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: too large to decode safely ({e})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, struct.error) as e:
        what = f"truncated or damaged {fmt}" if fmt else "unreadable image"
        raise DataError(f"{path}: {what} ({size} bytes: {e})") from None


def check_mask(path: str | Path, image: str | Path | None = None, expected: int | None = None) -> None:
    """A mask that decodes, is binary and (``image``) has its image's size; DataError naming the mask."""
    from seas.data.images import image_size, read_mask_array

    path = Path(path)
    _check_expected(path, _size_of(path), expected)
    arr = read_mask_array(path)  # decode errors and non-binary values are DataErrors naming the file
    if image is not None:
        iw, ih = image_size(image)
        if arr.shape != (ih, iw):
            raise DataError(f"{path}: mask size {arr.shape[1]}x{arr.shape[0]} differs from its image {image} "
                            f"({iw}x{ih})")


def check_files(paths: Iterable[str | Path | None], kind: str = "image") -> int:
    """Check every file of ``paths`` (``kind``: ``image`` or ``mask``; None entries skipped); returns the count."""
    if kind not in ("image", "mask"):
        raise ValueError(f"kind must be 'image' or 'mask', got {kind!r}")
    check = check_image if kind == "image" else check_mask
    n = 0
    for p in paths:
        if p is not None:
            check(p)
            n += 1
    return n


def check_pairs(pairs: Iterable) -> int:
    """Check image-mask pairs: objects with ``image`` / ``mask`` attributes (seas.data.pairs.Pair, whose
    ``image_bytes`` / ``mask_bytes`` are the recorded sizes, or any such item) or ``(image, mask)`` tuples; a mask
    None is an all-zero mask (nothing to read). The first bad file raises. Returns the number of pairs."""
    n = 0
    for pair in pairs:
        if hasattr(pair, "image"):
            image, mask = pair.image, pair.mask
            image_bytes, mask_bytes = getattr(pair, "image_bytes", None), getattr(pair, "mask_bytes", None)
        else:
            (image, mask), image_bytes, mask_bytes = pair, None, None
        check_image(image, image_bytes)
        if mask is not None:
            check_mask(mask, image, mask_bytes)
        n += 1
    return n


def check_safetensors(path: str | Path) -> dict:
    """The header of a safetensors file, checked against the file's length; CheckpointError naming the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes, no header)")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise CheckpointError(f"{path}: truncated safetensors file (header of {n} bytes, file {size} bytes)")
            header = json.loads(f.read(n))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: damaged safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: damaged safetensors header (not a mapping)")
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, stop = (int(v) for v in entry["data_offsets"])
        except (TypeError, KeyError, ValueError):
            raise CheckpointError(f"{path}: damaged safetensors header (tensor {name!r} has no data_offsets)") from None
        if not 0 <= begin <= stop:
            raise CheckpointError(f"{path}: damaged safetensors header (tensor {name!r}: offsets {begin}..{stop})")
        end = max(end, stop)
    if 8 + n + end != size:
        raise CheckpointError(f"{path}: {'truncated' if 8 + n + end > size else 'damaged'} safetensors file: the header "
                              f"describes {8 + n + end} bytes, the file has {size}")
    return header


def check_json(path: str | Path, required: Iterable[str] = ()) -> dict:
    """A JSON object holding the ``required`` keys; DataError naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: file does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(data).__name__}")
    missing = [k for k in required if k not in data]
    if missing:
        raise DataError(f"{path}: lacks key(s) {', '.join(missing)}")
    return data


def check_csv(path: str | Path, columns: Iterable[str] = (), numeric: Iterable[str] = (), min_rows: int = 1,
              last_row: Mapping[str, str] | None = None) -> list[dict]:
    """A CSV file with a header holding ``columns``, at least ``min_rows`` rows, every row as long as the header
    (a file cut mid-row is refused), ``numeric`` columns parsing as floats (``nan`` allowed), and (``last_row``) a
    last row with those values. Returns the rows; DataError naming the file, row and column."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = list(reader)
    except FileNotFoundError:
        raise DataError(f"{path}: file does not exist") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: not a readable CSV file ({e})") from None
    if not header:
        raise DataError(f"{path}: empty CSV file (no header)")
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path}: lacks column(s) {', '.join(missing)}")
    if len(rows) < min_rows:
        raise DataError(f"{path}: {len(rows)} row(s), expected at least {min_rows}")
    out = []
    for i, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise DataError(f"{path}, line {i}: {len(row)} field(s), the header has {len(header)} (a truncated file?)")
        d = dict(zip(header, row))
        for c in numeric:
            try:
                float(d[c])
            except ValueError:
                raise DataError(f"{path}, line {i}: column {c} is not a number: {d[c]!r}") from None
        out.append(d)
    if last_row and (not out or any(out[-1].get(k) != v for k, v in last_row.items())):
        raise DataError(f"{path}: the last row is not the expected {dict(last_row)} row (a truncated file?)")
    return out


def check_checkpoint_dir(folder: str | Path, required: Iterable[str] = ()) -> int:
    """Every ``*.safetensors`` (header vs length) and ``*.json`` (parse) file below ``folder``, and the
    ``required`` files present; CheckpointError naming the first bad file. Returns the number of files checked."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder does not exist")
    for name in required:
        if not (folder / name).is_file():
            raise CheckpointError(f"{folder / name}: missing (an incomplete checkpoint folder)")
    n = 0
    for p in sorted(folder.rglob("*")):
        if p.name.startswith(".") or not p.is_file():
            continue
        if p.suffix == ".safetensors":
            check_safetensors(p)
        elif p.suffix == ".json":
            try:
                json.loads(p.read_text())
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise CheckpointError(f"{p}: not valid JSON ({e})") from None
        else:
            continue
        n += 1
    return n


def check_pairs_manifest(type_dir: str | Path) -> int:
    """One type folder of generated pairs against its ``manifest.csv``: every listed file present with the byte
    size recorded when it was written (a stat per file; manifests without size columns: the files' headers).
    DataError naming the first bad file. Returns the number of rows."""
    type_dir = Path(type_dir)
    manifest = type_dir / MANIFEST
    rows = check_csv(manifest, columns=("image", "mask"), min_rows=0)
    for row in rows:
        for key, size_key in SIZE_COLUMNS.items():
            if key == "mask" and not row[key]:
                continue  # an image without a mask: a generation-only method's images-only import
            p = Path(row[key])
            p = p if p.is_absolute() else type_dir / p
            expected = row.get(size_key)
            if expected not in (None, ""):
                try:
                    size = os.stat(p).st_size
                except FileNotFoundError:
                    raise DataError(f"{p}: listed in {manifest} but missing") from None
                _check_expected(p, size, expected)
            elif key == "image":
                check_image(p)
            else:
                check_mask(p)
    return len(rows)


def output_damage(path: str | Path, kind: str | None = None, **kw) -> str | None:
    """What is wrong with an existing output of the run (the workflow's check before a consumer is planned), or
    None when it is intact or absent (Snakemake plans a missing output itself). ``kind``: ``split`` (a split
    manifest: seas.data.split.Split.load), ``csv`` (``kw``: :func:`check_csv`'s arguments), or None: by what
    the path is -- a folder (its pairs manifests, weights and JSON files), ``manifest.csv`` (pairs), ``*.safetensors``,
    ``*.json``, ``*.csv``."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        if kind == "split":
            from seas.data.split import Split

            Split.load(path)
        elif path.is_dir():
            for m in sorted(path.rglob(MANIFEST)):
                check_pairs_manifest(m.parent)
            check_checkpoint_dir(path)
        elif path.name == MANIFEST:
            check_pairs_manifest(path.parent)
        elif path.suffix == ".safetensors":
            check_safetensors(path)
            for sibling in path.parent.glob("*.json"):  # its metadata (train.json, rmp.json)
                check_json(sibling)
        elif path.suffix == ".json":
            check_json(path)
        elif path.suffix == ".csv" or kind == "csv":
            check_csv(path, **kw)
    except (DataError, CheckpointError) as e:
        return str(e)
    return None


def split_pairs(split, parts: Iterable[str] = ("train", "test")) -> list[tuple[str, str | None]]:
    """The (image, mask) files a :class:`seas.data.split.Split` selected (mask None: a normal image): ``train``
    = the generator's normal images and the training anomalies, ``normals`` = every train/good image the
    segmenters may read, ``test`` = the held-out images."""
    parts = set(parts)
    unknown = parts - {"train", "normals", "test"}
    if unknown:
        raise ValueError(f"unknown split parts {sorted(unknown)}")
    out: list[tuple[str, str | None]] = []
    if "train" in parts:
        out += [(p, None) for p in split.train_normals]
        out += [(d["image"], d["mask"]) for t in split.anomaly_types for d in split.train_anomalies[t]]
    if "normals" in parts:
        out += [(p, None) for p in (split.all_train_normals or split.train_normals)]
    if "test" in parts:
        out += [(d["image"], d.get("mask")) for d in split.test]
    return list(dict.fromkeys(out))


def check_split_files(split, parts: Iterable[str] = ("train", "test")) -> int:
    """:func:`check_pairs` over the files of ``split`` in ``parts`` (:func:`split_pairs`); logs the count and time."""
    t0 = time.perf_counter()
    n = check_pairs(split_pairs(split, parts))
    log.info("%s: %d dataset files intact (%s; %.2f s)", split.product, n, "+".join(sorted(parts)),
             time.perf_counter() - t0)
    return n

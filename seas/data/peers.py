"""Readers of the layouts peers write their image-mask pairs in (``external:<path>`` folders), one per layout, each
written from the peer's own generating code (read, not copied; the file is named at each layout):

``seas``              the SeaS authors' released pairs (HUST-SLOW/SeaS ``models/seas_infer.py``, its
                      ``--output_dir`` = ``.../<product>/<type>``)::

                          <root>/<product>/<type>/image/000.png   mask/000.png     (masks L, 0/255; ``{num:03}``)

``anomalydiffusion``  AnomalyDiffusion (sjtuplayer/anomalydiffusion ``generate_with_mask.py``: ``generated_dataset/
                      <sample_name>/<anomaly_name>``)::

                          <root>/<product>/<type>/image/<i>.jpg   mask/<i>.jpg     (unpadded ``%d``)
                                                  ori/<i>.jpg  recon/<i>.jpg  image-mask/<i>.jpg

                      masks are JPEG (torchvision ``save_image``: 3 channels, compression artefacts); ``ori/`` is
                      the normal image the anomaly was inpainted into (imported as the pair's reference).
``magic``             MAGIC (yukichou/diffusion_anomaly ``inference.py``: ``<output_name>/<setting>/<category>/
                      <defect>``)::

                          <root>/<product>/<defect>/image/<i>.jpg  masks/<i>.jpg  normal/<i>.jpg  (debug_mask/)

                      masks JPEG (RGB); ``normal/`` the source normal image. ``<root>`` may also be
                      ``<output_name>`` holding exactly one ``<setting>`` folder.
``dfmgan``            DFMGAN (Ldhlwh/DFMGAN ``generate.py``: one ``--output`` folder per generator = per (product,
                      type), its README names it ``<product>_<type>``)::

                          <root>/<product>_<type>/<N>_img.png  <N>_mask.png  (<N>_good.png with --gen-good)

                      (``<root>/<product>/<type>/<N>_img.png`` too); masks RGB 0/255; ``_good`` = the defect-free
                      image of the same latent (imported as the reference).
``ours``              this project's pairs layout (seas.data.pairs): ``<root>/<product>/<type>/images/``, ``masks/``
                      (``references/`` when present).
``images``            images only, for ``downstream.generation_only`` methods (generators that make no masks):
                      ``<root>/<product>/<type>/`` holding the images, or their ``images/`` / ``image/`` folder.

Images are matched to masks by the layout's name rule (the same number, ``<N>_img`` <-> ``<N>_mask``), never by
position; an image without its mask, a mask without its image and a mask whose size differs from its image's are
errors naming the file. Masks that are not binary (JPEG) are binarised at a threshold (pixel / 255 >
threshold; ``downstream.external_mask_threshold``, 0.5 by default: pixel >= 128) and counted: the import records how many were.
:func:`detect_format` tells the layout from the tree; ``external:<path>?format=F`` declares it.
Pure Python + PIL (no torch): the Snakefile imports it (the folder's content digest, :func:`source_digest`).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from seas.data.dataset_manifest import resolved, scan, selection_digest
from seas.data.images import eight_bit_image, is_image_file, list_images, open_image
from seas.run.errors import DataError
from seas.run.labels import EXTERNAL_FORMATS

__all__ = ["FORMATS", "DEFAULT_MASK_THRESHOLD", "SourcePair", "SourceType", "detect_format", "read_product",
           "read_mask", "source_files", "source_digest"]

log = logging.getLogger(__name__)

FORMATS = EXTERNAL_FORMATS
#: the schema default of downstream.external_mask_threshold (a pixel / 255 above it is anomalous)
DEFAULT_MASK_THRESHOLD = 0.5


@dataclass(frozen=True)
class _Rule:
    """Where a layout keeps a type's files and how their names pair up."""

    images: str                  # sub-folder of the type folder ("" = the type folder itself)
    masks: str | None            # sub-folder of the masks (None: no masks)
    normals: str | None = None   # sub-folder of the source normals (None: none shipped)
    image_re: str = r"(?P<n>.+)"  # a file stem in ``images`` -> the pair's name n
    mask_stem: str = "{n}"
    normal_stem: str = "{n}"


RULES: dict[str, _Rule] = {
    "seas": _Rule("image", "mask"),
    "anomalydiffusion": _Rule("image", "mask", "ori"),
    "magic": _Rule("image", "masks", "normal"),
    "dfmgan": _Rule("", "", "", r"(?P<n>\d+)_img", "{n}_mask", "{n}_good"),
    "ours": _Rule("images", "masks", "references"),
    "images": _Rule("images", None),
}
#: AnomalyDiffusion's folders beside image/ and mask/ (generate_with_mask.py)
_AD_EXTRAS = ("ori", "recon", "image-mask")
_DFMGAN_IMG = re.compile(r"\d+_img")


class SourcePair:
    """One pair of an external folder: its name under the layout's rule, image, mask (None for images-only) and
    the source normal image where the layout ships one."""

    __slots__ = ("name", "image", "mask", "normal")

    def __init__(self, name: str, image: Path, mask: Path | None, normal: Path | None = None):
        self.name, self.image, self.mask, self.normal = name, image, mask, normal

    def files(self) -> list[Path]:
        return [p for p in (self.image, self.mask, self.normal) if p is not None]

    def __repr__(self) -> str:
        return f"SourcePair({self.name!r}, {self.image}, {self.mask}, {self.normal})"


@dataclass(frozen=True)
class SourceType:
    """One anomaly type of one product of an external folder."""

    product: str
    type: str
    folder: Path
    format: str
    pairs: tuple[SourcePair, ...]


# ----------------------------------------------------------------------------- detection
def _subdirs(folder: Path) -> list[Path]:
    return sorted(d for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))


def _has_images(folder: Path) -> bool:
    return folder.is_dir() and any(is_image_file(p) for p in folder.iterdir())


def type_format(folder: Path) -> str | None:
    """The layout a type folder is in, from its children (None: not a type folder of any layout)."""
    if (folder / "images").is_dir() and (folder / "masks").is_dir():
        return "ours"
    if (folder / "image").is_dir() and (folder / "masks").is_dir():
        return "magic"
    if (folder / "image").is_dir() and (folder / "mask").is_dir():
        if any((folder / x).is_dir() for x in _AD_EXTRAS):
            return "anomalydiffusion"
        masks = [p for p in (folder / "mask").iterdir() if is_image_file(p)]
        return "anomalydiffusion" if masks and all(p.suffix.lower() in (".jpg", ".jpeg") for p in masks) else "seas"
    if folder.is_dir() and any(_DFMGAN_IMG.fullmatch(p.stem) for p in folder.iterdir() if is_image_file(p)):
        return "dfmgan"
    if _has_images(folder / "images") or _has_images(folder / "image") or _has_images(folder):
        return "images"
    return None


def _type_folders_below(root: Path, depth: int = 4) -> Iterable[Path]:
    """Folders below ``root`` (breadth first, down to ``depth``) that are type folders of some layout."""
    level = [root]
    for _ in range(depth):
        nxt = []
        for d in level:
            for c in _subdirs(d):
                fmt = type_format(c)
                if fmt is not None and fmt != "images":
                    yield c
                else:
                    nxt.append(c)
        level = nxt


def detect_format(root: str | Path) -> str:
    """The layout of an external folder, from its type folders (the first found, breadth first; every other one
    found must agree). ``images`` when no type folder has masks. DataError naming the folder when nothing is
    recognised or two layouts are mixed."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"external folder {root} does not exist or is not a directory")
    found: dict[str, Path] = {}
    for folder in _type_folders_below(root):
        found.setdefault(type_format(folder), folder)
        if len(found) > 1:
            (a, fa), (b, fb) = list(found.items())[:2]
            raise DataError(f"external folder {root} mixes layouts: {fa} is {a!r}, {fb} is {b!r}; give one layout "
                            f"per folder, or declare it: external:{root}?format=<{'|'.join(FORMATS)}>")
    if found:
        return next(iter(found))
    for d in _subdirs(root):  # <product>/<type>/ with images only
        if any(type_format(t) == "images" for t in _subdirs(d)):
            return "images"
    raise DataError(f"external folder {root}: no layout recognised (looked for <product>/<type>/ with "
                    "image/+mask/ (seas, anomalydiffusion), image/+masks/ (magic), images/+masks/ (ours), "
                    "<N>_img.png + <N>_mask.png (dfmgan) or images only)")


# ----------------------------------------------------------------------------- where a product's types are
def _product_base(root: Path, product: str, fmt: str) -> Path:
    """The folder holding ``<product>/`` (``root``, or its one sub-folder that does: MAGIC's ``<setting>``,
    the SeaS release's ``<dataset>``)."""
    if (root / product).is_dir() or (fmt == "dfmgan" and any(d.name.startswith(product + "_") for d in _subdirs(root))):
        return root
    holders = [d for d in _subdirs(root) if (d / product).is_dir()]
    if len(holders) == 1:
        return holders[0]
    if len(holders) > 1:
        raise DataError(f"external folder {root}: several folders hold product {product!r} "
                        f"({', '.join(str(h) for h in holders)}); point external: at one of them")
    present = ", ".join(d.name for d in _subdirs(root)) or "nothing"
    raise DataError(f"external folder {root}: product {product!r} not found (present: {present})")


def type_folders(root: str | Path, product: str, fmt: str) -> dict[str, Path]:
    """``{type: folder}`` of one product in layout ``fmt``."""
    root = Path(root)
    base = _product_base(root, product, fmt)
    out: dict[str, Path] = {}
    if fmt == "dfmgan":
        for d in _subdirs(base):
            if d.name.startswith(product + "_") and len(d.name) > len(product) + 1:
                out[d.name[len(product) + 1:]] = d
    pdir = base / product
    if pdir.is_dir():
        for d in _subdirs(pdir):
            if type_format(d) == fmt or (fmt == "images" and type_format(d) is not None):
                if d.name in out:
                    raise DataError(f"external folder {root}: type {d.name!r} of {product!r} is both {out[d.name]} "
                                    f"and {d}")
                out[d.name] = d
    if not out:
        raise DataError(f"external folder {base / product}: no type folders in the {fmt!r} layout "
                        f"({_describe(fmt)})")
    return dict(sorted(out.items()))


def _describe(fmt: str) -> str:
    r = RULES[fmt]
    if fmt == "dfmgan":
        return "<product>_<type>/<N>_img.png + <N>_mask.png"
    if r.masks is None:
        return "<product>/<type>/ holding images (or their images/ or image/ folder)"
    return f"<product>/<type>/{r.images}/ + {r.masks}/"


# ----------------------------------------------------------------------------- pairing by name
def _by_stem(folder: Path, what: str) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for p in list_images(folder, missing_ok=True):
        if p.stem in out:
            raise DataError(f"{p}: two {what} files named {p.stem!r} ({out[p.stem].name}, {p.name})")
        out[p.stem] = p
    return out


def _image_folder(folder: Path, fmt: str) -> Path:
    if fmt != "images":
        return folder / RULES[fmt].images if RULES[fmt].images else folder
    for sub in ("images", "image"):
        if _has_images(folder / sub):
            return folder / sub
    return folder


def read_type(folder: str | Path, fmt: str, product: str, type_name: str, images_only: bool = False) -> SourceType:
    """The pairs of one type folder, matched by the layout's name rule. DataError naming the file for an image
    without its mask, a mask without its image, two files of one name, or a folder without images."""
    folder = Path(folder)
    rule = RULES[fmt]
    img_dir = _image_folder(folder, fmt)
    files = _by_stem(img_dir, "image")
    if fmt == "dfmgan":
        pat = re.compile(rule.image_re)
        images = {m["n"]: p for s, p in files.items() if (m := pat.fullmatch(s))}
        masks = {s: p for s, p in files.items() if re.fullmatch(r"\d+_mask", s)}
        normals = {s: p for s, p in files.items() if re.fullmatch(r"\d+_good", s)}
    else:
        images = files
        masks = _by_stem(folder / rule.masks, "mask") if rule.masks else {}
        normals = _by_stem(folder / rule.normals, "normal") if rule.normals is not None else {}
    if not images:
        raise DataError(f"{img_dir}: no images ({_describe(fmt)})")
    mask_dir = folder / (rule.masks or "")
    pairs = []
    for n, img in images.items():
        mask = None
        if not images_only and rule.masks is not None:
            mask = masks.get(rule.mask_stem.format(n=n))
            if mask is None:
                raise DataError(f"{img}: image without mask (expected {mask_dir / rule.mask_stem.format(n=n)}"
                                f"{img.suffix} in the {fmt!r} layout)")
        # the source normal serves the masks' agreement check only: not read without masks
        normal = normals.get(rule.normal_stem.format(n=n)) if rule.normals is not None and not images_only else None
        pairs.append(SourcePair(n, img, mask, normal))
    if not images_only and rule.masks is not None:
        wanted = {rule.mask_stem.format(n=n) for n in images}
        orphans = sorted(set(masks) - wanted)
        if orphans:
            more = f" (and {len(orphans) - 1} more)" if len(orphans) > 1 else ""
            raise DataError(f"{masks[orphans[0]]}: mask without image{more} in the {fmt!r} layout")
    return SourceType(product, type_name, folder, fmt, tuple(pairs))


def read_product(root: str | Path, product: str, fmt: str | None = None, types: Sequence[str] | None = None,
                 images_only: bool = False) -> list[SourceType]:
    """Every type of ``product`` in the external folder ``root`` (layout ``fmt``, or detected), its pairs
    matched by name. ``types``: the product's anomaly types in the dataset (a type folder outside them, ``good``
    aside, is an error naming it). ``images_only``: masks are not read (generation-only methods)."""
    root = Path(root)
    fmt = fmt or detect_format(root)
    if fmt not in RULES:
        raise DataError(f"external folder {root}: unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    if fmt == "images" and not images_only:
        raise DataError(f"external folder {root}: images without masks; a generator that makes no masks is scored "
                        "by the generation metrics only: list it under downstream.generation_only")
    out = []
    for t, folder in type_folders(root, product, fmt).items():
        if types is not None and t not in types and t != "good":
            raise DataError(f"{folder}: {t!r} is not an anomaly type of {product!r} in the dataset "
                            f"({', '.join(types)})")
        out.append(read_type(folder, fmt, product, t, images_only=images_only))
    missing = [t for t in (types or []) if t not in {st.type for st in out}]
    if missing:  # a peer that released some types only (AnomalyDiffusion filtered its poor ones): said, not fatal
        log.warning("external folder %s: %s has no pairs of type(s) %s", root, product, ", ".join(missing))
    return out


def source_files(types: Iterable[SourceType]) -> list[Path]:
    """Every file the import of ``types`` reads (images, masks, normals)."""
    return [f for st in types for p in st.pairs for f in p.files()]


# ----------------------------------------------------------------------------- masks
def read_mask(path: str | Path, threshold: float = DEFAULT_MASK_THRESHOLD) -> tuple[np.ndarray, bool]:
    """``(HxW uint8 {0,1} mask, binary)``: a peer's mask file, any channels (an alpha channel dropped; colour
    masks read as their luma, as the peers' own readers do), 16-bit scaled to 8. A binary mask (0 plus one other
    value) is taken as it is; any other is binarised as pixel / 255 > ``threshold`` and ``binary`` is False."""
    path = Path(path)
    img = eight_bit_image(open_image(path), path)
    if img.mode in ("LA", "RGBA", "PA"):
        img = img.convert("L" if img.mode == "LA" else "RGB")
    arr = np.asarray(img.convert("L"))
    values = np.unique(arr)
    if len(values) == 1 or (len(values) == 2 and values[0] == 0):
        return (arr > 0).astype(np.uint8), True
    return (arr > float(threshold) * 255).astype(np.uint8), False


# ----------------------------------------------------------------------------- content digest (DAG input)
def source_digest(root: str | Path, types: Sequence[SourceType], previous: Mapping | None = None) -> tuple[str, dict]:
    """``(digest, manifest)`` of the files the import of ``types`` reads: sha256 over ``{name relative to root:
    sha256}``. The hashes come from seas.data.dataset_manifest.scan of the types' folders (stat only for a file
    whose size and mtime are those of ``previous``, the manifest returned last time): the import rule's param,
    so a changed, added or removed file reruns the import and what reads it, and nothing else does."""
    root = Path(root).resolve()
    files: dict[str, dict] = {}
    for st in types:
        files.update(scan(st.folder, st.product, previous)["files"])
    hashes, dirs = {}, {}
    for f in source_files(types):
        key = resolved(f, dirs)
        entry = files.get(key)
        if entry is None:
            raise DataError(f"{f}: listed but not found when hashing the external folder (copied while reading?)")
        rel = Path(key).relative_to(root).as_posix() if Path(key).is_relative_to(root) else key
        hashes[rel] = entry["sha256"]
    manifest = {"version": 1, "product": types[0].product if types else "", "dir": str(root), "files": files}
    return selection_digest(hashes), manifest

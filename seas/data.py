"""Data protocol: MVTec-AD-layout discovery, the few-shot split manifest, image/mask loading.

Layout (VisA and MVTec 3D AD are converted to it by ``python -m seas.convert``)::

    <root>/<product>/train/good/*.png
    <root>/<product>/test/good/*.png
    <root>/<product>/test/<type>/*.png
    <root>/<product>/ground_truth/<type>/<stem>_mask.png     (or <stem>.png)

Split (docs/METHOD.md, "Split"): per anomaly type, the first max(floor(n/3), 1) images in file-number order
(``split.rule: floor``, SeaS; ``ceil``: ceil(n/3), DualAnoDiff's code; or H for the H-shot ablations)
with their masks train the generator; the rest plus every
``test/good`` image form the downstream test set; the first ``num_normal_images`` of the sorted
``train/good`` images are the normal training images. The split is written once as a JSON manifest
(:meth:`Split.save`) that every later stage reads.

CLI::

    python -m seas.data products --config config.yaml           # list products and anomaly types
    python -m seas.data split --config config.yaml --product P --out results/<run>/split/P.json
"""
from __future__ import annotations

import argparse
import json
import logging
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DataError
from .pairs import IMAGE_SUFFIXES
from .config import add_config_arguments, config_from_args
from .runtime import atomic_write_text, cli, setup_logging
# Lazy imports: torch is imported inside the functions that use it: the workflow imports this module at parse time.

log = logging.getLogger(__name__)

#: the config keys this stage reads (dotted keys or whole sections): the rule's ``params: cfg``, Snakemake's
#: params rerun trigger (seas.config.stage_keys; tests/seas/test_config_keys.py fails on a read outside them)
CONFIG_KEYS = ("dataset.root", "split")

IMAGE_POLICIES = ("shorter_side_center_crop", "resize")
SPLIT_VERSION = 1


# ----------------------------------------------------------------------------- discovery
def _natural_key(path: Path):
    """File-number order: 2.png < 10.png; non-numeric parts compare as text."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.stem)] + [path.suffix]


def list_images(folder: Path) -> list[Path]:
    """Image files of ``folder`` in file-number order (hidden files and non-images skipped)."""
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES),
        key=_natural_key,
    )


def _check_root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset root {root} does not exist or is not a directory")
    return root


def discover_products(root: str | Path) -> list[str]:
    """Sorted product folders of an MVTec-layout root (those with a ``test/`` or ``train/good`` folder)."""
    root = _check_root(root)
    products = sorted(
        p.name for p in root.iterdir() if p.is_dir() and ((p / "test").is_dir() or (p / "train" / "good").is_dir())
    )
    if not products:
        raise DataError(f"dataset root {root}: no product folders (<product>/train/good, <product>/test) found")
    return products


def _product_dir(root: str | Path, product: str) -> Path:
    root = _check_root(root)
    pdir = root / product
    if not pdir.is_dir():
        avail = ", ".join(discover_products(root))
        raise DataError(f"unknown product {product!r}: {pdir} does not exist (products under {root}: {avail})")
    return pdir


def discover_types(root: str | Path, product: str) -> list[str]:
    """Sorted anomaly types of a product: the folders of ``test/`` except ``good``."""
    pdir = _product_dir(root, product)
    test = pdir / "test"
    if not test.is_dir():
        raise DataError(f"product {product!r}: missing folder {test}")
    types = _type_folders(test)
    if not types:
        others = [p for p in discover_products(root) if p != product and _type_folders(Path(root) / p / "test")]
        way_out = (f"leave it out with dataset.products: [{', '.join(others)}]" if others
                   else "no other product under the root has anomaly types either")
        raise DataError(f"product {product!r}: {test} has no anomaly-type folders besides good/ "
                        f"(SeaS learns from a product's anomalies); {way_out}")
    return types


def _type_folders(test: Path) -> list[str]:
    if not test.is_dir():
        return []
    return sorted(p.name for p in test.iterdir() if p.is_dir() and p.name != "good" and not p.name.startswith("."))


def selected_products(cfg: Mapping) -> list[str]:
    """The products a config asks for (``dataset.products``), checked against the tree."""
    root = cfg["dataset"]["root"]
    found = discover_products(root)
    want = cfg["dataset"]["products"]
    if want == "all":
        return found
    missing = [p for p in want if p not in found]
    if missing:
        raise DataError(
            f"dataset.products: {', '.join(map(repr, missing))} not found under {root} (available: {', '.join(found)})"
        )
    return list(want)


def mask_path_for(image: Path, gt_dir: Path) -> Path:
    """The mask of ``test/<type>/<stem>.*``: ``ground_truth/<type>/<stem>_mask.png`` (MVTec) or ``<stem>.png``."""
    for cand in (gt_dir / f"{image.stem}_mask.png", gt_dir / f"{image.stem}.png"):
        if cand.is_file():
            return cand
    raise DataError(f"anomaly image {image} has no mask: expected {gt_dir / (image.stem + '_mask.png')}")


# ----------------------------------------------------------------------------- image / mask IO
def open_image(path: Path, decode: bool = True) -> Image.Image:
    """Open an image file; ``decode=False`` reads only its header (size, mode). Every failure is a DataError
    naming the file, including files too large to decode safely (PIL's decompression-bomb guard, which PIL
    applies to the header's size before decoding anything)."""
    try:
        img = Image.open(path)
        if decode:
            img.load()
        return img
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist") from None
    except Image.DecompressionBombError as e:
        raise DataError(f"image {path} is too large to decode safely ({e}); downscale it first "
                        "(every stage works at a few hundred pixels)") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None


_open = open_image


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file from its header only (no decoding); DataError naming the file."""
    img = open_image(Path(path), decode=False)
    try:
        return img.size
    finally:
        img.close()


#: modes of integer images deeper than 8 bits (PIL opens 16-bit greyscale PNG/TIFF as I;16*, others as I)
_WIDE_INT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def eight_bit_image(img: Image.Image, path: Path) -> Image.Image:
    """A 16-bit (or 32-bit integer holding 16-bit data) greyscale image scaled to 8 bits by its real depth
    (v / 257: 65535 -> 255); PIL's own convert() would clip every value above 255 to white. Float images and
    integer values outside 0..65535 are refused naming the file."""
    if img.mode == "F":
        raise DataError(f"image {path} is a 32-bit float image; convert it to an 8- or 16-bit PNG first")
    if img.mode not in _WIDE_INT_MODES:
        return img
    arr = np.asarray(img).astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise DataError(f"image {path} is a {img.mode} image with values {arr.min()}..{arr.max()}, outside the "
                        "16-bit range 0..65535; convert it to an 8- or 16-bit PNG first")
    return Image.fromarray(np.rint(arr / 257.0).astype(np.uint8), mode="L")


def read_mask_array(path: str | Path) -> np.ndarray:
    """A mask file as a HxW uint8 array in {0, 1}; non-binary masks are an error naming the file.

    Binary means only 0 and one "on" value: 1, 255 or (16-bit masks) 65535. An alpha channel (LA / RGBA masks,
    as some editors export them) is not mask content and is dropped.
    """
    path = Path(path)
    img = _open(path)
    if img.mode == "F":
        raise DataError(f"mask {path} is a 32-bit float image; expected an 8- or 16-bit single-channel binary mask")
    arr = np.asarray(img)
    if arr.ndim == 3:
        if arr.shape[2] in (2, 4):
            arr = arr[..., :-1]
        if not (arr == arr[..., :1]).all():
            raise DataError(f"mask {path} is a colour image; expected a single-channel binary mask")
        arr = arr[..., 0]
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    values = np.unique(arr)
    present = set(values.tolist())
    if not any(present <= {0, on} for on in (1, 255, 65535)):
        shown = ", ".join(str(v) for v in values[:8]) + (" …" if len(values) > 8 else "")
        raise DataError(
            f"mask {path} is not binary: values {{{shown}}}; expected only 0/255 (or 0/1, or 0/65535 in a 16-bit "
            "mask). Binarise it first (the converters in `python -m seas.convert` do)."
        )
    return (arr > 0).astype(np.uint8)


def _geometry(img: Image.Image, size: int, policy: str, resample) -> Image.Image:
    if policy == "resize":
        return img.resize((size, size), resample)
    if policy != "shorter_side_center_crop":
        raise DataError(f"dataset.image_policy: unknown policy {policy!r} (choose from {', '.join(IMAGE_POLICIES)})")
    w, h = img.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    img = img.resize((nw, nh), resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def load_image(path: str | Path, size: int | None = None, policy: str = "shorter_side_center_crop") -> Image.Image:
    """An RGB image, brought to ``size``×``size`` by ``policy`` (None keeps its size)."""
    path = Path(path)
    img = eight_bit_image(_open(path), path).convert("RGB")
    return img if size is None else _geometry(img, size, policy, Image.BICUBIC)


def load_mask(path: str | Path | None, size: int | None = None, policy: str = "shorter_side_center_crop",
              like: Image.Image | None = None) -> np.ndarray:
    """A binary HxW uint8 mask in {0,1} with the same geometry as :func:`load_image` (nearest resampling).

    ``path=None`` gives an all-zero mask of ``size`` (or of ``like``'s size).
    """
    if path is None:
        if size is None and like is None:
            raise ValueError("load_mask(None) needs size or like")
        w, h = like.size if like is not None and size is None else (size, size)
        return np.zeros((h, w), np.uint8)
    arr = read_mask_array(path)
    if size is None:
        return arr
    return (np.asarray(_geometry(Image.fromarray(arr * 255), size, policy, Image.NEAREST)) > 127).astype(np.uint8)


def image_to_tensor(img: Image.Image):
    """PIL RGB -> float32 tensor CHW in [-1, 1] (Stable Diffusion's input range)."""
    import torch

    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def mask_to_tensor(mask: np.ndarray):
    """HxW {0,1} array -> float32 tensor 1xHxW."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]


def draw_augmentation(generator=None, rotate90: bool = True, flip: bool = True) -> tuple[int, bool]:
    """The random part of :func:`augment_pair`: (k quarter turns, horizontal flip), drawn from ``generator``."""
    import torch

    k = int(torch.randint(0, 4, (1,), generator=generator)) if rotate90 else 0
    flipped = bool(torch.rand(1, generator=generator) < 0.5) if flip else False
    return k, flipped


def apply_augmentation(x, k: int, flipped: bool):
    """Rotate (C,H,W) ``x`` by k·90° and flip it horizontally if ``flipped``."""
    import torch

    if k:
        x = torch.rot90(x, k, dims=(-2, -1))
    if flipped:
        x = torch.flip(x, dims=(-1,))
    return x


def augment_pair(image, mask, generator=None, rotate90: bool = True, flip: bool = True):
    """Rotate by k·90° and optionally flip horizontally, identically for image (C,H,W) and mask (C',H,W)."""
    k, flipped = draw_augmentation(generator, rotate90, flip)
    return apply_augmentation(image, k, flipped), apply_augmentation(mask, k, flipped)


def augmentation_for(cfg: Mapping, product: str) -> tuple[bool, bool]:
    """(rotate90, flip) for a product: ``augmentation`` defaults with ``augmentation.per_product`` overrides.

    Logged, so that augmenting a product whose orientation *is* the defect (metal_nut flip,
    transistor misplaced) is visible, not silent.
    """
    aug = cfg["augmentation"]
    over = aug["per_product"].get(product, {})
    rot, flip = bool(over.get("rotate90", aug["rotate90"])), bool(over.get("flip", aug["flip"]))
    log.info("augmentation for %s: rotate90=%s flip=%s%s", product, rot, flip, " (per-product override)" if over else "")
    return rot, flip


# ----------------------------------------------------------------------------- split
@dataclass
class Split:
    """The few-shot split of one product. Paths are absolute strings."""

    product: str
    root: str
    shots: str | int
    anomaly_types: list[str]
    train_normals: list[str]
    train_anomalies: dict[str, list[dict]]
    test: list[dict]
    version: int = SPLIT_VERSION
    num_normal_images: int = 0
    notes: list[str] = field(default_factory=list)
    rule: str = "floor"  # how "1/3" is rounded (SPLIT_RULES); manifests written before the key existed: floor

    # -- persistence
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "Split":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"split manifest {path} does not exist (run `python -m seas.data split` first)") from None
        except json.JSONDecodeError as e:
            raise DataError(f"split manifest {path} is not valid JSON: {e}") from None
        required = {"product", "root", "shots", "anomaly_types", "train_normals", "train_anomalies", "test"}
        missing = required - set(data)
        if missing:
            raise DataError(f"split manifest {path} lacks keys: {', '.join(sorted(missing))}")
        if data.get("version", SPLIT_VERSION) != SPLIT_VERSION:
            raise DataError(f"split manifest {path} has version {data['version']}, expected {SPLIT_VERSION}")
        return cls(**data)

    # -- views
    def restricted(self, anomaly_types: Sequence[str]) -> "Split":
        """The same split with the generator's training anomalies limited to ``anomaly_types`` (a per-type
        generator, ``generator.scope: type``); the test set is unchanged."""
        unknown = [t for t in anomaly_types if t not in self.anomaly_types]
        if unknown:
            raise DataError(f"split of {self.product}: no anomaly type {', '.join(map(repr, unknown))} "
                            f"(known: {', '.join(self.anomaly_types)})")
        keep = [t for t in self.anomaly_types if t in set(anomaly_types)]
        return replace(self, anomaly_types=keep, train_anomalies={t: self.train_anomalies[t] for t in keep})

    # -- views
    def train_pairs(self, anomaly_type: str | None = None) -> list[tuple[str, str, str]]:
        """(image, mask, type) of the generator's training anomalies (one type or all)."""
        types = [anomaly_type] if anomaly_type else self.anomaly_types
        return [(d["image"], d["mask"], t) for t in types for d in self.train_anomalies[t]]


SPLIT_RULES = ("floor", "ceil")


def shots_for(n: int, shots: str | int, rule: str = "floor") -> int:
    """Training anomalies out of ``n`` for a type. "1/3": max(floor(n/3), 1) with ``rule`` floor (SeaS), ceil(n/3)
    with ``rule`` ceil (DualAnoDiff's code); an integer H: H (the rule does not apply)."""
    if rule not in SPLIT_RULES:
        raise DataError(f"split.rule: expected one of {', '.join(SPLIT_RULES)}, got {rule!r}")
    if shots == "1/3":
        return max(n // 3, 1) if rule == "floor" else max(-(-n // 3), 1)
    if isinstance(shots, int) and shots >= 1:
        return shots
    raise DataError(f"split.shots: expected \"1/3\" or a positive integer, got {shots!r}")


def _check_pair(image: Path, mask: Path) -> np.ndarray:
    """Both files readable, the mask binary and of its image's size (compared from the headers, before decoding
    either file); returns the mask."""
    (iw, ih), (mw, mh) = image_size(image), image_size(mask)
    if (mw, mh) != (iw, ih):
        raise DataError(f"mask {mask} is {mw}x{mh} but its image {image} is {iw}x{ih}")
    eight_bit_image(_open(image), image)
    return read_mask_array(mask)


def build_split(root: str | Path, product: str, shots: str | int = "1/3", num_normal: int = 60,
                validate: bool = True, rule: str = "floor") -> Split:
    """The few-shot split of ``product``; every image is opened and every mask checked when ``validate``."""
    pdir = _product_dir(root, product)
    types = discover_types(root, product)
    notes: list[str] = []

    good_dir = pdir / "train" / "good"
    if not good_dir.is_dir():
        raise DataError(f"product {product!r}: missing folder {good_dir}")
    normals = list_images(good_dir)
    if not normals:
        raise DataError(f"product {product!r}: {good_dir} has no images")
    if len(normals) < num_normal:
        notes.append(f"only {len(normals)} normal training images (< num_normal_images={num_normal}); using all")
        log.warning("%s: %s", product, notes[-1])
    normals = normals[:num_normal]

    train_anoms: dict[str, list[dict]] = {}
    test: list[dict] = []
    for t in types:
        imgs = list_images(pdir / "test" / t)
        if not imgs:
            raise DataError(f"product {product!r}: anomaly-type folder {pdir / 'test' / t} is empty")
        gt_dir = pdir / "ground_truth" / t
        pairs = [(p, mask_path_for(p, gt_dir)) for p in imgs]
        k = shots_for(len(pairs), shots, rule)
        if k >= len(pairs):
            raise DataError(
                f"product {product!r}, type {t!r}: {len(pairs)} images leave no test image with shots={shots!r}"
                + (f" (rule {rule})" if shots == "1/3" else "")
            )
        train_anoms[t] = [{"image": str(i.resolve()), "mask": str(m.resolve())} for i, m in pairs[:k]]
        test += [{"image": str(i.resolve()), "mask": str(m.resolve()), "type": t, "label": 1} for i, m in pairs[k:]]

    good_test = pdir / "test" / "good"
    if good_test.is_dir():
        test += [{"image": str(p.resolve()), "mask": None, "type": "good", "label": 0} for p in list_images(good_test)]
    else:
        notes.append(f"no {good_test}: the test set has anomalous images only")
        log.warning("%s: %s", product, notes[-1])

    if validate:
        for p in normals:
            eight_bit_image(_open(p), p)
        for t in types:
            for d in train_anoms[t]:
                if not _check_pair(Path(d["image"]), Path(d["mask"])).any():
                    raise DataError(
                        f"product {product!r}, type {t!r}: training anomaly {d['image']} has an empty mask "
                        f"({d['mask']} is all background), so the generator could not learn where its defect is; "
                        "annotate the defect, or remove the image (the first images of a type in file-number order "
                        "train the generator, see split.shots)")
        for d in test:
            if d["mask"] is None:
                eight_bit_image(_open(Path(d["image"])), Path(d["image"]))
            else:
                _check_pair(Path(d["image"]), Path(d["mask"]))

    return Split(
        product=product,
        root=str(Path(root).resolve()),
        shots=shots,
        anomaly_types=types,
        train_normals=[str(p.resolve()) for p in normals],
        train_anomalies=train_anoms,
        test=test,
        num_normal_images=num_normal,
        notes=notes,
        rule=rule,
    )


def split_from_config(cfg: Mapping, product: str) -> Split:
    # not checked against dataset.products: the split of a product does not depend on which others are selected
    found = discover_products(cfg["dataset"]["root"])
    if product not in found:
        raise DataError(f"product {product!r} not found under {cfg['dataset']['root']} (available: {', '.join(found)})")
    return build_split(cfg["dataset"]["root"], product, cfg["split"]["shots"], cfg["split"]["num_normal_images"],
                       rule=cfg["split"]["rule"])


# ----------------------------------------------------------------------------- CLI
@cli
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m seas.data", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name, hlp in (("products", "list the configured products and their anomaly types"),
                      ("split", "write the few-shot split manifest of one product")):
        p = sub.add_parser(name, help=hlp)
        add_config_arguments(p)
        if name == "split":
            p.add_argument("--product", required=True)
            p.add_argument("--out", required=True, help="manifest path (JSON), written atomically")
        p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    cfg = config_from_args(args)
    if args.cmd == "products":
        for prod in selected_products(cfg):
            print(f"{prod}: {' '.join(discover_types(cfg['dataset']['root'], prod))}")
        return 0
    split = split_from_config(cfg, args.product)
    split.save(args.out)
    n_train = sum(len(v) for v in split.train_anomalies.values())
    log.info("%s: %d types, %d training anomalies, %d normals, %d test images -> %s", split.product,
             len(split.anomaly_types), n_train, len(split.train_normals), len(split.test), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

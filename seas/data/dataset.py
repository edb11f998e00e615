"""MVTec-AD-layout discovery: products, anomaly types, ground-truth masks (VisA and MVTec 3D AD are converted to
this layout by ``python -m seas.data.convert``)::

    <root>/<product>/train/good/*.png
    <root>/<product>/test/good/*.png
    <root>/<product>/test/<type>/*.png
    <root>/<product>/ground_truth/<type>/<stem>_mask.png     (or <stem>.png)

Pure Python (no torch): the Snakefile imports it at parse time.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from seas.run.errors import DataError


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

"""A PNG per product comparing the real training defects with each method's generated pairs (report figure).

    python -m downstream.report.compare_grid --split results/demo/split/<k>/weave.json \\
        --pairs seas=results/demo/methods/seas/<k>/weave --pairs cutpaste=... --out compare/weave.png [--per-type 3]

Per anomaly type of the split (its order) one block of rows: first ``real (train)`` -- the few-shot training
anomalies the methods learnt from (the split manifest's ``train_anomalies``) --, then one row per method with its
first ``--per-type`` pairs of that type (file order). Every pair is two cells: the image and the image with the mask
tinted red and outlined (downstream.report.sample_grid.overlay), so a reader sees at once whether a method's defects
look like the real ones and whether its masks sit on them. A method without a folder for that type gets an empty
row saying so. Reads no run config: the rule passes the split and the pairs folders.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from seas.data.images import list_images, load_image, load_mask
from seas.data.pairs import IMAGES, MASKS
from seas.data.split import Split
from seas.run.cli_types import positive_int
from seas.run.errors import DataError
from seas.run.runtime import atomic_save_image, cli, setup_logging

from downstream.report.sample_grid import overlay

__all__ = ["REAL", "compare_rows", "make_compare_grid", "main"]

REAL = "real (train)"


def compare_rows(split: Split, pairs: Sequence[tuple[str, str | Path]], per_type: int) -> list[tuple[str, str, list]]:
    """``[(anomaly type, source, [(image, mask or None), ...])]``: per type the real training defects, then each
    method's first ``per_type`` pairs of that type."""
    rows = []
    for t in split.anomaly_types:
        real = [(Path(d["image"]), Path(d["mask"])) for d in split.train_anomalies.get(t, [])][:per_type]
        rows.append((t, REAL, real))
        for name, folder in pairs:
            imgs = list_images(Path(folder) / t / IMAGES, missing_ok=True)[:per_type]
            masks = {p.stem: p for p in list_images(Path(folder) / t / MASKS, missing_ok=True)}
            rows.append((t, name, [(p, masks.get(p.stem)) for p in imgs]))
    if not rows:
        raise DataError(f"split of {split.product!r} has no anomaly type")
    return rows


def make_compare_grid(rows: list[tuple[str, str, list]], cell: int = 96, title: str = "") -> Image.Image:
    """Rows as :func:`compare_rows` gives them; a label column names type and source; a gap between types."""
    label_w, title_h, gap, type_gap = 130, (18 if title else 0), 2, 8
    n_cols = max([len(items) for _, _, items in rows] + [1]) * 2
    n_types = len(dict.fromkeys(t for t, _, _ in rows))
    width = label_w + n_cols * (cell + gap)
    height = title_h + len(rows) * (cell + gap) + (n_types - 1) * type_gap
    grid = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((4, 2), title, fill=(0, 0, 0))
    y, previous = title_h, None
    for atype, source, items in rows:
        if previous is not None and atype != previous:
            y += type_gap
            draw.line([(0, y - type_gap // 2), (width, y - type_gap // 2)], fill=(160, 160, 160))
        previous = atype
        draw.text((4, y + cell // 2 - 14), atype[:20], fill=(0, 0, 0))
        draw.text((4, y + cell // 2 + 2), source[:20], fill=(0, 0, 160) if source == REAL else (0, 0, 0))
        if not items:
            draw.text((label_w + 4, y + cell // 2 - 6), "no pairs of this type", fill=(120, 120, 120))
        for c, (img_p, mask_p) in enumerate(items):
            img = load_image(img_p, cell, policy="resize")
            mask = (load_mask(mask_p, cell, policy="resize").astype(bool) if mask_p is not None
                    else np.zeros((cell, cell), dtype=bool))
            x = label_w + 2 * c * (cell + gap)
            grid.paste(img, (x, y))
            grid.paste(overlay(img, mask), (x + cell + gap, y))
        y += cell + gap
    return grid


def _pair_arg(text: str) -> tuple[str, str]:
    name, sep, folder = text.partition("=")
    if not sep or not name or not folder:
        raise argparse.ArgumentTypeError(f"expected METHOD=FOLDER, got {text!r}")
    return name, folder


@cli
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m downstream.report.compare_grid", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", required=True, help="the product's split manifest (its training anomalies)")
    ap.add_argument("--pairs", action="append", type=_pair_arg, default=[], metavar="METHOD=FOLDER",
                    help="a method's pairs folder of this product (<folder>/<type>/{images,masks}); repeated")
    ap.add_argument("--out", required=True, help="PNG to write (atomically)")
    ap.add_argument("--per-type", type=positive_int, default=3, help="pairs shown per type and source (default 3)")
    ap.add_argument("--cell", type=positive_int, default=96, help="cell size in pixels (default 96)")
    ap.add_argument("--title", default="", help="text above the grid (default: the product)")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    split = Split.load(args.split)
    grid = make_compare_grid(compare_rows(split, args.pairs, args.per_type), cell=args.cell,
                             title=args.title or f"{split.product}: real training defects vs generated pairs")
    out = atomic_save_image(grid, args.out)
    print(f"wrote {out} ({grid.width}x{grid.height})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

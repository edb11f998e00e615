"""A PNG grid of image-mask pairs from one product folder of the generated-pairs layout (report figure).

    python -m downstream.report.sample_grid --pairs results/demo/methods/seas/weave --out grid.png [--per-type 4]

Layout: one row per anomaly type (sorted; a ``good`` folder too when present); per type the first
``--per-type`` pairs in file order, each shown as the image and, beside it, the image with the mask
outlined in red plus the mask in the red channel (50 %). Images and masks are read by seas.data.split (16-bit files
scaled by their depth, unreadable or oversized files named), the grid written by seas.run.runtime (atomic; a full or
read-only disk is one error line). Reads no run config: the rule passes the folder and the layout options.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from seas.run.cli_types import positive_int
from seas.data.images import load_image, load_mask
from seas.run.errors import DataError
from seas.data.pairs import IMAGES, MASKS, list_types
from seas.data.images import list_images
from seas.run.runtime import atomic_save_image, cli, setup_logging


class GridError(DataError):
    pass


def collect_pairs(product_dir: str | Path, per_type: int) -> dict[str, list[tuple[Path, Path | None]]]:
    """``{type: [(image, mask or None), ...]}`` with at most ``per_type`` pairs per type (file order)."""
    product_dir = Path(product_dir)
    if not product_dir.is_dir():
        raise GridError(f"{product_dir}: no such pairs folder")
    out: dict[str, list[tuple[Path, Path | None]]] = {}
    for t in list_types(product_dir):
        imgs = list_images(product_dir / t / IMAGES, missing_ok=True)
        if not imgs:
            continue
        masks = {p.stem: p for p in list_images(product_dir / t / MASKS, missing_ok=True)}
        out[t] = [(p, masks.get(p.stem)) for p in imgs[:per_type]]
    if not out:
        raise GridError(f"{product_dir}: no <type>/images/* found")
    return out


def overlay(image: Image.Image, mask: np.ndarray) -> Image.Image:
    """The image with the mask (bool HxW) tinted red at 50 % and its boundary drawn in pure red."""
    arr = np.asarray(image.convert("RGB"), dtype=np.float32)
    m = mask.astype(bool)
    arr[m] = 0.5 * arr[m] + 0.5 * np.array([255.0, 0.0, 0.0])
    pad = np.pad(m, 1, mode="edge")
    inner = pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    arr[m & ~inner] = (255.0, 0.0, 0.0)
    return Image.fromarray(arr.round().astype(np.uint8))


def make_grid(pairs: dict[str, list[tuple[Path, Path | None]]], cell: int = 128, title: str = "") -> Image.Image:
    """Rows = types; per pair two cells (image, overlay). A label column on the left names the type."""
    label_w, title_h, gap = 96, (18 if title else 0), 2
    n_cols = max(len(v) for v in pairs.values()) * 2
    width = label_w + n_cols * (cell + gap)
    height = title_h + len(pairs) * (cell + gap)
    grid = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(grid)
    if title:
        draw.text((4, 2), title, fill=(0, 0, 0))
    for r, (atype, items) in enumerate(pairs.items()):
        y = title_h + r * (cell + gap)
        draw.text((4, y + cell // 2 - 6), atype[:14], fill=(0, 0, 0))
        for c, (img_p, mask_p) in enumerate(items):
            img = load_image(img_p, cell, policy="resize")
            if mask_p is not None:
                mask = load_mask(mask_p, cell, policy="resize").astype(bool)
            else:
                mask = np.zeros((cell, cell), dtype=bool)
            x = label_w + 2 * c * (cell + gap)
            grid.paste(img, (x, y))
            grid.paste(overlay(img, mask), (x + cell + gap, y))
    return grid


@cli
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m downstream.report.sample_grid", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", required=True, help="product folder: <pairs>/<type>/{images,masks}/")
    ap.add_argument("--out", required=True, help="PNG to write (atomically)")
    ap.add_argument("--per-type", type=positive_int, default=4, help="pairs shown per anomaly type (default 4)")
    ap.add_argument("--cell", type=positive_int, default=128, help="cell size in pixels (default 128)")
    ap.add_argument("--title", default="", help="text above the grid (default none)")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    grid = make_grid(collect_pairs(args.pairs, args.per_type), cell=args.cell, title=args.title)
    out = atomic_save_image(grid, args.out)
    print(f"wrote {out} ({grid.width}x{grid.height}, {len(grid.getbands())} channels)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Cost of the stage-boundary integrity checks (seas.data.integrity), per 1000 files, on this machine's CPU.

    python benchmarks/integrity_cost.py [--n 1000] [--size 256]

Writes N random RGB PNGs and N binary mask PNGs of SIZE x SIZE into a temporary folder, then times, per 1000 files:
check_image (header + PNG chunk walk), check_mask (decode + binary values + size against its image's header), a
stat against the manifest's recorded size (what the workflow does at DAG time), and a full decode of the images
for comparison (what training pays anyway). Not a GPU benchmark: the checks run on the CPU before a stage starts.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from seas.data.integrity import check_image, check_mask
from seas.data.images import load_image


def _timed(fn, paths) -> float:
    t0 = time.perf_counter()
    for p in paths:
        fn(p)
    return (time.perf_counter() - t0) / len(paths) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        images, masks = [], []
        for i in range(args.n):
            ip, mp = Path(tmp) / f"{i}.png", Path(tmp) / f"{i}_mask.png"
            Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)).save(ip)
            m = np.zeros((args.size, args.size), np.uint8)
            m[rng.integers(0, args.size // 2):, : rng.integers(1, args.size)] = 255
            Image.fromarray(m).save(mp)
            images.append(ip)
            masks.append(mp)
        sizes = {p: p.stat().st_size for p in images}
        rows = {
            "check_image (header + PNG chunks/CRC)": _timed(check_image, images),
            "check_mask (decode, binary, size vs image)": _timed(lambda m: check_mask(m, str(m).replace("_mask", "")), masks),
            "stat vs recorded size (workflow, DAG time)": _timed(lambda p: p.stat().st_size == sizes[p], images),
            "full image decode (for comparison)": _timed(load_image, images),
        }
    mb = sum(sizes.values()) / len(sizes) / 1e6
    print(f"{args.n} PNGs of {args.size}x{args.size} (images {mb:.2f} MB each):")
    for name, s in rows.items():
        print(f"  {name:46s} {s:8.3f} s per 1000 files")


if __name__ == "__main__":
    main()

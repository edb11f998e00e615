"""What the stage train_prior costs on a CPU, per product (issue 24, item 4), measured on a procedurally drawn
dataset of products unlike the demo's and projected to the full recipe.

    python benchmarks/prior_cost.py --products 1 --fraction 0.1      # 10 % of the recipe's steps, one product

Draws ``--products`` greyscale products (checker tiles, dials, stripes, ...) of ``--images`` train/good images each at
``--resolution`` px, splits them as the workflow does, runs seas.models.train_prior with every step count of
``model.prior`` (the committed recipe by default) times ``--fraction`` on one thread, and prints CPU seconds per VAE
and per U-Net step and the projection to the whole recipe. The steps' cost does not depend on how many images or
products there are (a fixed batch per step); loading the images does, and is reported apart.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

KINDS = ("tile", "dial", "stripes", "rings")


def draw(kind: str, i: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(sum(map(ord, kind)) * 1000 + i)
    yy, xx = np.mgrid[:size, :size]
    if kind == "tile":
        s = int(rng.integers(size // 16, size // 8))
        img = np.where(((yy // s) + (xx // s)) % 2 == 0, 200, 60)
    elif kind == "dial":
        img = np.where(np.hypot(yy - size / 2, xx - size / 2) < size * 0.4, 170, 30)
    elif kind == "stripes":
        img = (xx + int(rng.integers(8))) // (size // 16) % 2 * 180 + 40
    else:
        img = np.hypot(yy - size / 2, xx - size / 2) // (size // 24) % 2 * 200
    noise = rng.normal(0, 8, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def make_tree(root: Path, n_products: int, n_images: int, size: int) -> Path:
    from PIL import Image

    for kind in KINDS[:n_products]:
        p = root / kind
        for sub in ("train/good", "test/good", "test/dent", "ground_truth/dent"):
            (p / sub).mkdir(parents=True)
        for i in range(n_images):
            Image.fromarray(draw(kind, i, size)).convert("RGB").save(p / "train/good" / f"{i:03d}.png")
        mask = np.zeros((size, size), np.uint8)
        mask[size // 3:size // 3 + 4, size // 4:3 * size // 4] = 255
        for i in range(3):
            bad = draw(kind, 100 + i, size)
            bad[mask > 0] = 255
            Image.fromarray(bad).convert("RGB").save(p / "test/dent" / f"{i:03d}.png")
            Image.fromarray(mask).save(p / "ground_truth/dent" / f"{i:03d}_mask.png")
        Image.fromarray(draw(kind, 200, size)).convert("RGB").save(p / "test/good" / "000.png")
    return root


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--products", type=int, default=1, choices=range(1, len(KINDS) + 1))
    ap.add_argument("--images", type=int, default=24, help="train/good images per product")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--fraction", type=float, default=0.1, help="share of the recipe's steps to run")
    args = ap.parse_args(argv)
    import torch

    from seas.data.split import build_split
    from seas.models import train_prior as stage
    from seas.models.tiny_prior import DEFAULT_RECIPE
    from seas.run.config import validate_config

    torch.set_num_threads(1)
    full = dict(DEFAULT_RECIPE)
    short = {k: max(1, round(full[k] * args.fraction)) for k in ("vae_steps", "unet_steps", "warmup")}
    short["unet_crop_steps"] = round(full["unet_crop_steps"] * args.fraction)
    with tempfile.TemporaryDirectory() as tmp:
        root = make_tree(Path(tmp) / "data", args.products, args.images, args.resolution)
        cfg = validate_config({"dataset": {"name": "custom", "root": str(root)}, "device": "cpu",
                               "model": {"pretrained": "unused", "tiny": True, "resolution": args.resolution,
                                         "tiny_prior": "auto", "prior": short}})
        splits = []
        for kind in KINDS[:args.products]:
            out = Path(tmp) / "split" / f"{kind}.json"
            build_split(root, kind).save(out)
            splits.append(str(out))
        t0, w0 = time.process_time(), time.perf_counter()
        weights = stage.train_prior(cfg, splits, Path(tmp) / "prior" / "tiny_prior.safetensors")
        total_cpu, wall = time.process_time() - t0, time.perf_counter() - w0
        m = json.loads(weights.with_suffix(".json").read_text())
    vae_cpu = m["cpu_seconds"]["vae"]
    unet_cpu = m["cpu_seconds"]["total"] - vae_cpu
    per_vae, per_unet = vae_cpu / short["vae_steps"], unet_cpu / short["unet_steps"]
    # the U-Net's crop steps (twice the batch of 16x16 latent crops) and whole-latent steps cost differently: the
    # projection keeps the recipe's mix, which the fraction preserves
    projected = per_vae * full["vae_steps"] + per_unet * full["unet_steps"]
    figs = {"products": args.products, "images": len(m["data"]["images"]), "resolution": args.resolution,
            "steps_run": {"vae": short["vae_steps"], "unet": short["unet_steps"]},
            "cpu_s": {"vae": round(vae_cpu, 1), "unet": round(unet_cpu, 1), "stage_total": round(total_cpu, 1),
                      "load_and_write": round(total_cpu - m["cpu_seconds"]["total"], 1)},
            "wall_s": round(wall, 1), "cpu_s_per_step": {"vae": round(per_vae, 3), "unet": round(per_unet, 3)},
            "projected_full_recipe_cpu_s": round(projected), "full_recipe": {k: full[k] for k in ("vae_steps",
                                                                                                "unet_steps")}}
    print(json.dumps(figs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What limits the demo's images: the tiny prior's VAE on the demo's defects (issue 24, item 3). CPU, a minute.

    python benchmarks/prior_limits.py                              # the committed prior
    python benchmarks/prior_limits.py --prior other.safetensors    # another prior file
    python benchmarks/prior_limits.py --train-vae --vae-steps 300 [--vae-strokes 0.5]   # a VAE variant, VAE only

Per anomaly type of the demo's test set (never seen by the prior), at the model resolution:

* ``contrast kept``: the defect's contrast after encode -> decode over its contrast in the image, contrast =
  mean over RGB of |mean inside the mask - mean of a 3-px ring around it| (1 = the VAE keeps the defect, 0 = it
  paints the normal texture over it). SeaS can only generate what the VAE can decode.
* ``recon L1`` inside the mask and on the normal test images (images in [-1, 1]).
* ``defect px / latent px``: the masks' area in latent pixels (x4 VAE: 4x4 image pixels each) and the defects'
  median thickness in image pixels (a 2-3 px scratch is under one latent pixel wide).

Prints one line per type and the figures as one JSON line.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _ring(mask: np.ndarray, width: int = 3) -> np.ndarray:
    from scipy.ndimage import binary_dilation

    return binary_dilation(mask, iterations=width) & ~mask


def contrast(img: np.ndarray, mask: np.ndarray) -> float:
    """Mean over channels of |mean in mask - mean in the ring around it| (img HxWx3 float)."""
    ring = _ring(mask)
    if not mask.any() or not ring.any():
        return float("nan")
    return float(np.abs(img[mask].mean(0) - img[ring].mean(0)).mean())


def thickness(mask: np.ndarray) -> float:
    """Twice the largest distance of a mask pixel to the background (the defect's width, px)."""
    from scipy.ndimage import distance_transform_edt

    return float(2 * distance_transform_edt(mask).max())


def load_vae(prior: Path):
    from diffusers import AutoencoderKL

    from seas.models.prior_file import load_prior_state, read_prior_manifest

    m = read_prior_manifest(prior)
    vae = AutoencoderKL(**m["configs"]["vae"])
    vae.load_state_dict({k: v.float() for k, v in load_prior_state(prior, "vae").items()})
    return vae.eval().requires_grad_(False), m


def measure(vae, demo: dict, res: int) -> dict:
    import torch

    from seas.data.dataset import discover_types
    from seas.data.demo_data import generate_demo_dataset
    from seas.data.images import image_to_tensor, load_image, load_mask

    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_demo_dataset(Path(tmp) / "demo", **demo)
        for product in sorted(p.name for p in root.iterdir() if p.is_dir()):
            goods = sorted((root / product / "test" / "good").glob("*.png"))
            x = torch.stack([image_to_tensor(load_image(p, res)) for p in goods])
            with torch.no_grad():
                r = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
            out[f"{product}/good"] = {"recon_l1": round(float((r - x).abs().mean()), 4)}
            for t in discover_types(root, product):
                files = sorted((root / product / "test" / t).glob("*.png"))
                kept, l1, thick, area = [], [], [], []
                for f in files:
                    mask = load_mask(root / product / "ground_truth" / t / f"{f.stem}_mask.png", res).astype(bool)
                    x = image_to_tensor(load_image(f, res))[None]
                    with torch.no_grad():
                        r = vae.decode(vae.encode(x).latent_dist.mean).sample.clamp(-1, 1)
                    a, b = x[0].permute(1, 2, 0).numpy(), r[0].permute(1, 2, 0).numpy()
                    c0 = contrast(a, mask)
                    if c0 > 0:
                        kept.append(contrast(b, mask) / c0)
                    l1.append(float(np.abs(a - b)[mask].mean()))
                    thick.append(thickness(mask))
                    area.append(mask.sum() / 16)
                out[f"{product}/{t}"] = {"contrast_kept": round(float(np.nanmean(kept)), 3),
                                         "recon_l1_in_mask": round(float(np.mean(l1)), 4),
                                         "median_thickness_px": round(float(np.median(thick)), 1),
                                         "mean_area_latent_px": round(float(np.mean(area)), 1), "n": len(files)}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prior", type=Path, default=REPO / "priors" / "tiny_prior.safetensors")
    ap.add_argument("--train-vae", action="store_true", help="train a VAE variant from scratch (VAE phase only)")
    ap.add_argument("--vae-steps", type=int, default=300)
    ap.add_argument("--vae-strokes", type=float, default=0.0,
                    help="variant: probability a VAE training crop gets random synthetic strokes (not dataset images)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    vae, m = load_vae(args.prior)
    demo, res = m["data"]["demo"], m["resolution"]
    if args.train_vae:
        import time

        from diffusers import AutoencoderKL

        from seas.models import tiny_prior as tp

        r = dict(tp.DEFAULT_RECIPE, vae_steps=args.vae_steps)
        images, _ = tp.training_images(demo, res)
        torch.manual_seed(0)
        vae = AutoencoderKL(**tp.prior_configs(res)["vae"])
        t0 = time.process_time()
        tp.train_vae(vae, images, steps=r["vae_steps"], batch=r["vae_batch"], lr=r["vae_lr"], kl_weight=r["kl_weight"],
                     grad_weight=r["grad_weight"], seed=0, crop=r["vae_crop"], strokes=args.vae_strokes)
        print(f"VAE variant: {args.vae_steps} steps, strokes {args.vae_strokes}: {time.process_time() - t0:.0f} CPU-s")
    figs = measure(vae, demo, res)
    for k, v in figs.items():
        print(k, v)
    print(json.dumps(figs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

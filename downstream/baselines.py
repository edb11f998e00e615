"""Built-in comparison methods: image-mask pairs in the generated-pairs layout, for every anomaly type.

* ``real``     — the split's few real training anomalies of the type, cycled, each copy rotated by k·90° and
  flipped (``augmentation`` config, per-product overrides honoured). The "no generator" reference.
* ``crop_paste`` — Crop&Paste (Lin et al., ICME 2021, "crop-and-paste operation"; the paper's Crop&Paste column):
  a real defect is cropped out of one of the split's few training anomalies of the type (the bounding box of its
  mask, the mask as the cut-out's alpha), rotated by k·90° / flipped as ``augmentation`` allows, and pasted onto a
  normal training image at a uniformly random position where it fits. Only the defect's own pixels are pasted;
  mask = exactly those pixels. Unlike CutPaste, the pasted content is a real anomaly, not normal texture.
* ``cutpaste`` — CutPaste (Li et al., CVPR 2021): a rectangle (area 2–15 % of the image, aspect ratio
  log-uniform in [0.3, 3.3]) or a thin "scar" strip (rotated ±45°) is cut from a normal training image,
  colour-jittered (brightness, contrast, saturation ±10 %, hue ±0.1) and pasted at another place of the same
  image. Mask = the pasted area, exactly.
* ``draem``    — DRAEM-style (Zavrtanik et al., ICCV 2021): a Perlin-noise map (lattice 2^a × 2^b, a, b ∈ [0, 6)
  scaled to the image size, rotated by U(−90°, 90°)) thresholded at 0.5 gives the mask (anywhere in the image:
  no foreground restriction for object products); inside it a texture source is blended into a normal
  image: ``x' = (1−m)·x + m·((1−β)·src + β·x)``, β ~ U(0, 0.8). DRAEM's source is the DTD texture set:
  with ``downstream.dtd_root`` (the Describable Textures Dataset as it unpacks: ``<root>/images/<category>/*.jpg``,
  or the ``images`` folder itself) every source is a DTD image drawn uniformly (:func:`dtd_textures`; an absent
  or empty folder is an error naming the key). Without it (the demo) the source is, with probability 1/2 each,
  another normal image of the product (rotated by k·90°, colour-jittered) or a procedurally generated texture
  (multi-octave Perlin noise between two random colours), and every table labels the method
  ``draem (procedural textures, not DTD)`` (seas.run.labels.method_label). Mask = the thresholded noise, exactly.

The anomaly type only selects the output folder (and, for ``real`` and ``crop_paste``, the real anomalies used):
cutpaste/draem do not model types. Every pair has its own seed (``seas.run.runtime.derive_seed(seed, method,
product, type, index)``), stored in ``manifest.csv`` together with the reference normal image and the method's
parameters (crop_paste: ``anomaly``, the training anomaly cropped; draem with DTD: ``texture``).

CLI::

    python -m downstream.baselines --config C --method {real,crop_paste,cutpaste,draem} --split split/P.json --out methods/M/P
"""
from __future__ import annotations

import argparse
import logging
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from seas.run.cli_types import positive_int
from seas.data.integrity import check_split_files
from seas.data.split import Split
from seas.data.augment import augmentation_for, augment_pair
from seas.data.images import load_image, load_mask, image_to_tensor, mask_to_tensor
from seas.run.errors import ConfigError, DataError
from seas.run.runtime import atomic_dir, derive_seed, setup_logging, cli

from seas.run.labels import BASELINE_METHODS
from seas.data.pairs import save_pair, write_manifest
from seas.run.config import add_config_arguments, config_from_args
from seas.run.stages import STAGES
# Lazy imports: torch / torchvision are imported inside the augmentation that uses them: the baselines run in the base env.

__all__ = [
    "METHODS", "perlin_noise", "fractal_noise", "perlin_mask", "procedural_texture", "color_jitter",
    "cutpaste_pair", "crop_paste_pair", "dtd_textures", "draem_pair", "real_pair", "generate_baseline", "main",
]

log = logging.getLogger(__name__)

#: the config keys this stage reads: declared once, in the stage registry (seas.run.stages)
CONFIG_KEYS = STAGES["baselines"].config_keys

METHODS = BASELINE_METHODS


# ----------------------------------------------------------------------------- noise (pure numpy)
def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6 - 15) + 10)


def perlin_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Gradient (Perlin) noise of ``shape`` with a ``res`` = (rows, cols) lattice of random unit gradients.

    Values lie in about [−1, 1] and are exactly 0 on lattice points (pixel (i·H/ry, j·W/rx)).
    """
    h, w = shape
    ry, rx = res
    angles = rng.uniform(0.0, 2 * math.pi, size=(ry + 1, rx + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    y = np.arange(h) * (ry / h)
    x = np.arange(w) * (rx / w)
    yi, xi = y.astype(int), x.astype(int)
    yf, xf = y - yi, x - xi

    def corner(dy: int, dx: int) -> np.ndarray:
        g = grads[(yi + dy)[:, None], (xi + dx)[None, :]]
        return g[..., 0] * (yf - dy)[:, None] + g[..., 1] * (xf - dx)[None, :]

    u, v = _fade(yf)[:, None], _fade(xf)[None, :]
    top = corner(0, 0) * (1 - v) + corner(0, 1) * v
    bottom = corner(1, 0) * (1 - v) + corner(1, 1) * v
    return math.sqrt(2) * (top * (1 - u) + bottom * u)


def fractal_noise(shape: tuple[int, int], res: tuple[int, int], rng: np.random.Generator, octaves: int = 4,
                  persistence: float = 0.5) -> np.ndarray:
    """Sum of ``octaves`` Perlin layers, lattice doubling and amplitude × ``persistence`` per octave."""
    out = np.zeros(shape)
    amp = 1.0
    for o in range(octaves):
        out += amp * perlin_noise(shape, (res[0] * 2**o, res[1] * 2**o), rng)
        amp *= persistence
    return out


def perlin_mask(size: int, rng: np.random.Generator, threshold: float = 0.5, max_log2: int = 6,
                min_fraction: float = 0.002, tries: int = 50, rotate: bool = True
                ) -> tuple[np.ndarray, tuple[int, int], float]:
    """DRAEM's anomaly mask: Perlin noise on a 2^a × 2^b lattice (a, b ∈ [0, max_log2)), rotated by U(−90°, 90°)
    as DRAEM does (corners filled with 0), > ``threshold``.

    Lattice sizes are scaled to the image (DRAEM's range is for 256 px) and capped at size/4. Draws again until
    at least ``min_fraction`` of the pixels are anomalous. Returns (uint8 HxW in {0,1}, lattice, angle).
    """
    scale = size / 256
    for _ in range(tries):
        a, b = (int(v) for v in rng.integers(0, max_log2, size=2))
        res = (max(1, min(size // 4, round(2**a * scale))), max(1, min(size // 4, round(2**b * scale))))
        noise = perlin_noise((size, size), res, rng)
        angle = float(rng.uniform(-90, 90)) if rotate else 0.0
        if angle:
            noise = np.asarray(Image.fromarray(noise.astype(np.float32), mode="F").rotate(angle, Image.BILINEAR))
        m = (noise > threshold).astype(np.uint8)
        if m.mean() >= min_fraction:
            return m, res, angle
    raise RuntimeError(f"perlin_mask: no mask with >= {min_fraction:.1%} anomalous pixels in {tries} draws")


def procedural_texture(size: int, rng: np.random.Generator) -> Image.Image:
    """A colour texture: multi-octave Perlin noise mapped between two random colours, plus fine grain."""
    res = int(rng.integers(2, 9))
    t = fractal_noise((size, size), (res, res), rng, octaves=int(rng.integers(2, 5)))
    t = (t - t.min()) / max(t.max() - t.min(), 1e-8)
    c0, c1 = rng.uniform(0, 255, size=3), rng.uniform(0, 255, size=3)
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    img += rng.normal(0, 6, size=img.shape)
    return Image.fromarray(np.clip(img, 0, 255).round().astype(np.uint8), mode="RGB")


def color_jitter(img: Image.Image, rng: np.random.Generator, strength: float = 0.1) -> tuple[Image.Image, dict]:
    """Brightness/contrast/saturation × U(1±strength), hue + U(±strength) (torchvision functional ops)."""
    import torchvision.transforms.functional as TF

    p = {
        "brightness": float(rng.uniform(1 - strength, 1 + strength)),
        "contrast": float(rng.uniform(1 - strength, 1 + strength)),
        "saturation": float(rng.uniform(1 - strength, 1 + strength)),
        "hue": float(rng.uniform(-strength, strength)),
    }
    img = TF.adjust_brightness(img, p["brightness"])
    img = TF.adjust_contrast(img, p["contrast"])
    img = TF.adjust_saturation(img, p["saturation"])
    img = TF.adjust_hue(img, p["hue"])
    return img, p


# ----------------------------------------------------------------------------- one pair per method
def cutpaste_pair(normal: Image.Image, rng: np.random.Generator, scar_probability: float = 0.5
                  ) -> tuple[Image.Image, np.ndarray, dict]:
    """CutPaste on one normal image -> (image, mask uint8 {0,1}, parameters)."""
    w, h = normal.size
    scar = bool(rng.random() < scar_probability)
    if scar:
        s = min(w, h) / 256
        pw = max(2, round(rng.uniform(2, 16) * s))
        ph = max(4, round(rng.uniform(10, 25) * s))
    else:
        area = rng.uniform(0.02, 0.15) * w * h
        aspect = math.exp(rng.uniform(math.log(0.3), math.log(3.3)))
        pw = int(np.clip(round(math.sqrt(area * aspect)), 2, w - 1))
        ph = int(np.clip(round(math.sqrt(area / aspect)), 2, h - 1))
    sx, sy = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
    patch, jitter = color_jitter(normal.crop((sx, sy, sx + pw, sy + ph)), rng)
    alpha = Image.new("L", (pw, ph), 255)
    angle = 0.0
    if scar:
        angle = float(rng.uniform(-45, 45))
        patch = patch.rotate(angle, resample=Image.BILINEAR, expand=True)
        alpha = alpha.rotate(angle, resample=Image.NEAREST, expand=True)
    qw, qh = patch.size
    qw, qh = min(qw, w), min(qh, h)
    patch, alpha = patch.crop((0, 0, qw, qh)), alpha.crop((0, 0, qw, qh))
    dx, dy = int(rng.integers(0, w - qw + 1)), int(rng.integers(0, h - qh + 1))
    out = normal.copy()
    out.paste(patch, (dx, dy), alpha)
    mask = np.zeros((h, w), np.uint8)
    mask[dy:dy + qh, dx:dx + qw] = (np.asarray(alpha) > 127).astype(np.uint8)
    params = {"variant": "scar" if scar else "patch", "patch_w": pw, "patch_h": ph, "angle": round(angle, 3),
              "src_x": sx, "src_y": sy, "dst_x": dx, "dst_y": dy,
              **{k: round(v, 4) for k, v in jitter.items()}}
    return out, mask, params


def crop_paste_pair(normal: Image.Image, anomaly: Image.Image, anomaly_mask: np.ndarray, rng: np.random.Generator,
                    rotate90: bool = True, flip: bool = True) -> tuple[Image.Image, np.ndarray, dict]:
    """Crop&Paste (Lin et al. 2021): the defect of a real anomaly (``anomaly`` + its mask) cut out along its mask's
    bounding box, rotated by k·90° / flipped (where allowed), pasted onto ``normal`` at a random position where it
    fits; only the mask's pixels are pasted -> (image, mask uint8 {0,1} = exactly the pasted pixels, parameters)."""
    m = np.asarray(anomaly_mask) > 0
    if not m.any():
        raise DataError("crop_paste_pair: the anomaly's mask is empty (nothing to crop)")
    if anomaly.size != (m.shape[1], m.shape[0]):
        raise DataError(f"crop_paste_pair: mask {m.shape[::-1]} and anomaly image {anomaly.size} differ in size")
    ys, xs = np.nonzero(m)
    y0, y1, x0, x1 = int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1
    patch = np.asarray(anomaly.convert("RGB"))[y0:y1, x0:x1]
    alpha = m[y0:y1, x0:x1]
    k = int(rng.integers(0, 4)) if rotate90 else 0
    flipped = bool(rng.random() < 0.5) if flip else False
    patch, alpha = np.rot90(patch, k), np.rot90(alpha, k)
    if flipped:
        patch, alpha = patch[:, ::-1], alpha[:, ::-1]
    w, h = normal.size
    ph, pw = alpha.shape
    if ph > h or pw > w:  # a defect larger than the target (another size): keep its top-left part
        patch, alpha = patch[:h, :w], alpha[:h, :w]
        ph, pw = alpha.shape
    dx, dy = int(rng.integers(0, w - pw + 1)), int(rng.integers(0, h - ph + 1))
    out = np.array(normal.convert("RGB"))
    region = out[dy:dy + ph, dx:dx + pw]
    region[alpha] = patch[alpha]
    mask = np.zeros((h, w), np.uint8)
    mask[dy:dy + ph, dx:dx + pw] = alpha
    params = {"src_x": x0, "src_y": y0, "patch_w": int(x1 - x0), "patch_h": int(y1 - y0), "rot90": k,
              "flip": flipped, "dst_x": dx, "dst_y": dy}
    return Image.fromarray(out, mode="RGB"), mask, params


DTD_KEY = "downstream.dtd_root"


def dtd_textures(root: str | Path) -> list[Path]:
    """The Describable Textures Dataset's images, sorted: ``<root>/images/<category>/*.jpg`` (the archive's layout,
    ``dtd/images/banded/banded_0002.jpg``), or ``<root>/<category>/*.jpg`` when ``root`` is that ``images`` folder.
    An absent folder, or one without such images, is a ConfigError naming ``downstream.dtd_root``."""
    root = Path(root)
    if not root.is_dir():
        raise ConfigError(f"{DTD_KEY}: {root} is not a folder (the DTD archive unpacked: <root>/images/<category>/*.jpg; "
                          "null = procedural textures, labelled as such)")
    base = root / "images" if (root / "images").is_dir() else root
    files = sorted(p for p in base.glob("*/*") if p.suffix.lower() in (".jpg", ".jpeg") and p.is_file())
    if not files:
        raise ConfigError(f"{DTD_KEY}: no DTD images (<category>/*.jpg) under {base}")
    return files


def draem_pair(normal: Image.Image, rng: np.random.Generator, other_normals: Sequence[Image.Image] = (),
               beta_max: float = 0.8, texture: Image.Image | None = None) -> tuple[Image.Image, np.ndarray, dict]:
    """DRAEM-style Perlin anomaly on one normal image -> (image, mask uint8 {0,1}, parameters).

    ``texture``: a DTD image, the source (DRAEM; rotated by k·90° and colour-jittered in place of DRAEM's imgaug
    augmenters). Without it, ``other_normals`` (other normal images of the product) or a procedural texture, 1/2 each
    (procedural only when empty).
    """
    size = normal.size[0]
    if normal.size[0] != normal.size[1]:
        raise DataError(f"draem_pair: expected a square image, got {normal.size}")
    mask, res, angle = perlin_mask(size, rng)
    if texture is not None:
        src = texture.convert("RGB").resize(normal.size, Image.BILINEAR).rotate(90 * int(rng.integers(0, 4)))
        src, _ = color_jitter(src, rng, strength=0.3)
        source = "dtd"
    elif other_normals and rng.random() < 0.5:
        j = int(rng.integers(0, len(other_normals)))
        src = other_normals[j].rotate(90 * int(rng.integers(0, 4)))
        src, _ = color_jitter(src, rng, strength=0.3)
        source = f"normal:{j}"
    else:
        src = procedural_texture(size, rng)
        source = "procedural"
    beta = float(rng.uniform(0.0, beta_max))
    x = np.asarray(normal, np.float32)
    s = np.asarray(src.convert("RGB").resize(normal.size), np.float32)
    m = mask[..., None].astype(np.float32)
    out = (1 - m) * x + m * ((1 - beta) * s + beta * x)
    img = Image.fromarray(np.clip(out, 0, 255).round().astype(np.uint8), mode="RGB")
    return img, mask, {"perlin_res_y": res[0], "perlin_res_x": res[1], "perlin_angle": round(angle, 3),
                       "beta": round(beta, 4), "source": source}


def real_pair(image: Image.Image, mask: np.ndarray, seed: int, rotate90: bool, flip: bool
              ) -> tuple[Image.Image, np.ndarray, dict]:
    """A real training anomaly, rotated by k·90° / flipped with ``seas.data.augment.augment_pair`` -> (image, mask, {})."""
    import torch

    g = torch.Generator().manual_seed(seed)
    img_t, mask_t = augment_pair(image_to_tensor(image), mask_to_tensor(mask), g, rotate90=rotate90, flip=flip)
    arr = ((img_t.permute(1, 2, 0).numpy() + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
    return Image.fromarray(arr, mode="RGB"), (mask_t[0].numpy() > 0.5).astype(np.uint8), {}


# ----------------------------------------------------------------------------- driver
def generate_baseline(cfg: Mapping, method: str, split: Split, out: str | Path,
                      num_per_type: int | None = None, progress: bool = True) -> Path:
    """Write ``out/<type>/{images,masks}/NNNNNN.png + manifest.csv`` for every anomaly type of ``split``.

    The whole product folder is written in a temporary directory and renamed onto ``out`` at the end.
    """
    if method not in METHODS:
        raise DataError(f"--method: unknown baseline {method!r} (choose from {', '.join(METHODS)})")
    ds = cfg["downstream"]
    size = int(ds["image_size"])
    policy = cfg["dataset"]["image_policy"]
    if num_per_type is not None and (isinstance(num_per_type, bool) or int(num_per_type) != num_per_type
                                     or num_per_type < 1):
        raise ConfigError(f"--num {num_per_type!r}: the number of pairs per type must be an integer >= 1")
    n = int(ds["num_baseline_images_per_type"] if num_per_type is None else num_per_type)
    if not split.train_normals and method != "real":
        raise DataError(f"split of {split.product!r}: no normal training images for {method}")
    normals: dict[int, Image.Image] = {}

    def normal(i: int) -> Image.Image:
        if i not in normals:
            normals[i] = load_image(split.train_normals[i], size, policy)
        return normals[i]

    rot, flip = augmentation_for(cfg, split.product) if method in ("real", "crop_paste") else (False, False)
    dtd = dtd_textures(ds["dtd_root"]) if method == "draem" and ds.get("dtd_root") else None
    base_seed = int(cfg["seed"])
    with atomic_dir(out) as tmp:
        for t in split.anomaly_types:
            type_dir = tmp / t
            rows = []
            real = split.train_anomalies.get(t, [])
            if method in ("real", "crop_paste") and not real:
                raise DataError(f"split of {split.product!r}: no training anomalies of type {t!r}")
            for i in tqdm(range(n), desc=f"{method} {split.product}/{t}", disable=not progress, leave=False):
                seed = derive_seed(base_seed, "baseline", method, split.product, t, i)
                rng = np.random.default_rng(seed)
                if method == "real":
                    ref = real[i % len(real)]
                    img, mask, params = real_pair(load_image(ref["image"], size, policy),
                                                  load_mask(ref["mask"], size, policy), seed, rot, flip)
                    reference = ref["image"]
                elif method == "crop_paste":
                    ref = real[i % len(real)]
                    k = int(rng.integers(0, len(split.train_normals)))
                    reference = split.train_normals[k]
                    img, mask, params = crop_paste_pair(normal(k), load_image(ref["image"], size, policy),
                                                        load_mask(ref["mask"], size, policy), rng, rot, flip)
                    params["anomaly"] = ref["image"]
                else:
                    k = int(rng.integers(0, len(split.train_normals)))
                    reference = split.train_normals[k]
                    if method == "cutpaste":
                        img, mask, params = cutpaste_pair(normal(k), rng)
                    else:
                        if dtd is not None:  # DRAEM: a DTD texture
                            tex_path = dtd[int(rng.integers(0, len(dtd)))]
                            img, mask, params = draem_pair(normal(k), rng, texture=load_image(tex_path))
                            params["texture"] = str(tex_path)
                        else:  # the procedural stand-in (tables: draem (procedural textures, not DTD))
                            others = [j for j in range(len(split.train_normals)) if j != k]
                            picks = [others[j] for j in rng.permutation(len(others))[:8]] if others else []
                            img, mask, params = draem_pair(normal(k), rng, [normal(j) for j in picks])
                ip, mp = save_pair(type_dir, i, img, mask)
                rows.append({"index": i, "image": ip, "mask": mp, "seed": seed, "reference": reference, "type": t,
                             "method": method, "anomalous_fraction": round(float(mask.mean()), 6), **params})
            write_manifest(type_dir, rows)
            log.info("%s %s/%s: %d pairs", method, split.product, t, len(rows))
    return Path(out)


@cli
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m downstream.baselines", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(ap)
    ap.add_argument("--method", required=True, choices=METHODS, help="which baseline generator")
    ap.add_argument("--split", required=True, help="split manifest of the product (split/<product>.json)")
    ap.add_argument("--out", required=True, help="product folder to write (methods/<method>/<product>)")
    ap.add_argument("--num", type=positive_int, default=None, help="pairs per type (default downstream.num_baseline_images_per_type)")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    cfg = config_from_args(args)
    split = Split.load(args.split)
    check_split_files(split, ("train",))  # the images and masks the baselines cut and paste
    generate_baseline(cfg, args.method, split, args.out, num_per_type=args.num)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

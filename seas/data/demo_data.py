"""A procedurally generated anomaly dataset in the MVTec AD layout (the default run's data).

Two products, fixed names that tests and configs rely on:

* ``weave``  — texture: woven threads (random phase, slight rotation, lighting gradient, colour jitter);
  anomaly types ``scratch`` (thin bright or dark curved lines) and ``stain`` (soft-edged tinted blobs).
* ``washer`` — object: a metallic ring with a hole and an asymmetric notch + stamped dot, on a dark
  background (position jitter, random rotation, lighting); types ``hole`` (dark missing-material blob on
  the part) and ``scratch`` (thin lines on the part).

Layout written under ``out``::

    <out>/demo_dataset.json                        parameters (marker; regeneration is skipped when it matches)
    <out>/<product>/train/good/000.png …
    <out>/<product>/test/good/000.png …
    <out>/<product>/test/<type>/000.png …
    <out>/<product>/ground_truth/<type>/000_mask.png …   single channel, 0/255

Every image is drawn from its own ``numpy.random.Generator`` seeded by
``derive_seed(seed, "demo", product, split, type, index)``: the same parameters give byte-identical PNGs.
Masks are exact: a mask is the set of pixels whose 8-bit RGB value the defect changed
(``render_sample`` also returns the defect-free render, so this can be checked).

    python -m seas.data.demo_data --out resources/demo_data [--seed 0 --image-size 128 …]
    python -m seas.data.demo_data --config config.yaml --out resources/demo_data   (reads dataset.demo)
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from seas.run.cli_types import int_at_least, nonneg_int, positive_int
from seas.run.config import add_config_arguments, optional_config_from_args, schema_default
from seas.run.errors import ConfigError, DataError
from seas.run.runtime import atomic_dir, cli, derive_seed, setup_logging
from seas.run.stages import STAGES

log = logging.getLogger(__name__)

#: the config keys this stage reads: declared once, in the stage registry (seas.run.stages)
CONFIG_KEYS = STAGES["demo_data"].config_keys

__all__ = [
    "PRODUCTS",
    "DEMO_VERSION",
    "MARKER_NAME",
    "DemoSample",
    "render_sample",
    "generate_demo_dataset",
    "main",
]

#: product -> its anomaly types (sorted, as ``test/`` folders are discovered)
PRODUCTS: dict[str, tuple[str, ...]] = {"weave": ("scratch", "stain"), "washer": ("hole", "scratch")}
#: bump when the rendering changes, so cached demo datasets are rebuilt
DEMO_VERSION = 1
MARKER_NAME = "demo_dataset.json"
_MARKER_FORMAT = "seas-demo-dataset"

Array = np.ndarray


@dataclass(frozen=True)
class DemoSample:
    """One rendered sample: ``clean`` (defect-free render), ``image`` (what is saved) — HxWx3 uint8 —
    and ``mask`` (HxW uint8 in {0, 255}; None for a normal sample, whose image equals clean)."""

    clean: Array
    image: Array
    mask: Array | None


# ----------------------------------------------------------------------------- drawing primitives
def _grid(size: int) -> tuple[Array, Array]:
    """Pixel-centre coordinates (x, y), float64, shape (size, size)."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    return x, y


def _smoothstep(t: Array) -> Array:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _blob_distance(x: Array, y: Array, cx: float, cy: float, r0: float, rng: np.random.Generator) -> Array:
    """Signed distance-like field of an irregular blob: > 0 inside (in pixels, approximately).

    The radius is modulated by a few low-order harmonics of the polar angle, so every blob has its own shape.
    """
    dx, dy = x - cx, y - cy
    d = np.hypot(dx, dy)
    ang = np.arctan2(dy, dx)
    radius = np.full_like(d, r0)
    for k in (2, 3, 4, 5):
        radius += r0 * rng.uniform(0.0, 0.22 / (k - 1)) * np.cos(k * ang + rng.uniform(0, 2 * np.pi))
    return radius - d


def _curve_coverage(size: int, rng: np.random.Generator, n_curves: int, length: tuple[float, float],
                    width: tuple[float, float], start: Callable[[], tuple[float, float]] | None = None,
                    supersample: int = 2) -> Array:
    """Coverage in [0, 1] of ``n_curves`` thin curved strokes (quadratic Bézier polylines).

    Drawn with PIL at ``supersample``x and box-averaged, so edges are anti-aliased.
    """
    ss = supersample
    canvas = Image.new("L", (size * ss, size * ss), 0)
    draw = ImageDraw.Draw(canvas)
    for _ in range(n_curves):
        x0, y0 = start() if start is not None else tuple(rng.uniform(0.15, 0.85, 2) * size)
        ang = rng.uniform(0, 2 * np.pi)
        ln = rng.uniform(*length) * size
        x2, y2 = x0 + ln * np.cos(ang), y0 + ln * np.sin(ang)
        # control point pushed sideways: a visible bend
        bend = rng.uniform(-0.35, 0.35) * ln
        cx, cy = (x0 + x2) / 2 - bend * np.sin(ang), (y0 + y2) / 2 + bend * np.cos(ang)
        t = np.linspace(0.0, 1.0, 24)[:, None]
        pts = (1 - t) ** 2 * np.array([x0, y0]) + 2 * (1 - t) * t * np.array([cx, cy]) + t**2 * np.array([x2, y2])
        w = max(1, int(round(rng.uniform(*width) * size * ss)))
        draw.line([tuple(p) for p in (pts * ss)], fill=255, width=w, joint="curve")
    cov = np.asarray(canvas, dtype=np.float64) / 255.0
    return cov.reshape(size, ss, size, ss).mean(axis=(1, 3))


def _composite(clean: Array, alpha: Array, target: Array) -> Array:
    """clean + alpha * (target - clean); target broadcastable to HxWx3."""
    return clean + alpha[..., None] * (np.asarray(target, dtype=np.float64) - clean)


def _to_u8(img: Array) -> Array:
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- weave (texture)
_WEAVE_BASE = np.array([170.0, 142.0, 108.0])


def _render_weave(rng: np.random.Generator, size: int) -> tuple[Array, dict]:
    x, y = _grid(size)
    theta = np.deg2rad(rng.uniform(-6.0, 6.0))
    xc, yc = x - size / 2, y - size / 2
    u = xc * np.cos(theta) + yc * np.sin(theta)
    v = -xc * np.sin(theta) + yc * np.cos(theta)
    period = size / rng.uniform(9.0, 11.0)
    pu = u / period + rng.uniform(0, 1)
    pv = v / period + rng.uniform(0, 1)
    iu, iv = np.floor(pu), np.floor(pv)
    fu, fv = pu - iu, pv - iv
    over = (iu + iv) % 2 == 0  # warp on top where True, weft elsewhere: plain weave
    warp = np.sin(np.pi * fu) ** 0.6 * (0.75 + 0.25 * np.sin(np.pi * fv))
    weft = np.sin(np.pi * fv) ** 0.6 * (0.75 + 0.25 * np.sin(np.pi * fu))
    shade = np.where(over, warp, weft)
    fibre_phase = rng.uniform(0, 2 * np.pi)
    fibre = 0.04 * np.sin(2 * np.pi * np.where(over, v, u) / (period / 4.5) + fibre_phase)
    lum = 0.55 + 0.45 * shade + fibre
    light_dir = rng.uniform(0, 2 * np.pi)
    light = 1.0 + rng.uniform(0.1, 0.3) * (xc * np.cos(light_dir) + yc * np.sin(light_dir)) / size
    base = _WEAVE_BASE * (1.0 + rng.normal(0.0, 0.035)) * (1.0 + rng.normal(0.0, 0.02, 3))
    warp_col = base
    weft_col = base * np.array([0.93, 0.95, 1.0])
    col = np.where(over[..., None], warp_col, weft_col)
    img = col * (lum * light)[..., None] + rng.normal(0.0, 1.5, (size, size, 3))
    return img, {}


def _weave_scratch(clean: Array, ctx: dict, rng: np.random.Generator, size: int) -> tuple[Array, Array]:
    cov = _curve_coverage(size, rng, int(rng.integers(1, 4)), length=(0.25, 0.6), width=(0.012, 0.03))
    alpha = np.where(cov > 0, 0.4 + 0.6 * cov, 0.0)
    if rng.uniform() < 0.5:
        target = np.array([246.0, 242.0, 230.0]) + rng.uniform(-6, 6, 3)  # frayed bright fibre
    else:
        target = np.array([28.0, 24.0, 22.0]) + rng.uniform(-6, 6, 3)  # dark cut
    return _composite(clean, alpha, target), alpha


_STAIN_TINTS = np.array([[0.55, 0.42, 0.30], [0.45, 0.47, 0.55], [0.80, 0.45, 0.25], [0.40, 0.55, 0.35]])


def _weave_stain(clean: Array, ctx: dict, rng: np.random.Generator, size: int) -> tuple[Array, Array]:
    x, y = _grid(size)
    raw = np.zeros((size, size))
    cx, cy = rng.uniform(0.2, 0.8, 2) * size
    for _ in range(int(rng.integers(1, 4))):  # 1-3 overlapping lobes around one centre
        r0 = rng.uniform(0.05, 0.13) * size
        ox, oy = rng.normal(0.0, 0.06 * size, 2)
        soft = 0.45 * r0
        raw = np.maximum(raw, _blob_distance(x, y, cx + ox, cy + oy, r0, rng) / soft)
    alpha = np.where(raw > 0, 0.3 + 0.7 * _smoothstep(raw), 0.0) * rng.uniform(0.85, 1.0)
    tint = np.clip(_STAIN_TINTS[rng.integers(len(_STAIN_TINTS))] + rng.uniform(-0.05, 0.05, 3), 0.2, 0.85)
    return _composite(clean, alpha, clean * tint), alpha


# ----------------------------------------------------------------------------- washer (object)
_WASHER_BG = np.array([60.0, 64.0, 72.0])
_WASHER_METAL = np.array([176.0, 178.0, 184.0])


def _render_washer(rng: np.random.Generator, size: int) -> tuple[Array, dict]:
    x, y = _grid(size)
    cx, cy = size / 2 + rng.uniform(-0.05, 0.05, 2) * size
    R = rng.uniform(0.355, 0.375) * size
    r = rng.uniform(0.145, 0.16) * size
    dx, dy = x - cx, y - cy
    d = np.hypot(dx, dy)
    ang = np.arctan2(dy, dx)
    phi = rng.uniform(0, 2 * np.pi)  # orientation of the asymmetric features
    # anti-aliased coverage: outer disc minus the hole minus a rectangular notch in the rim at angle phi
    t = dx * np.cos(phi) + dy * np.sin(phi)
    perp = -dx * np.sin(phi) + dy * np.cos(phi)
    notch_in = np.minimum(t - (R - 0.075 * size), 0.045 * size - np.abs(perp))
    part = np.clip(R - d + 0.5, 0, 1) * np.clip(d - r + 0.5, 0, 1) * (1 - np.clip(notch_in + 0.5, 0, 1))
    # metal: brushed anisotropic highlight, machining rings, darker bevel at the edges
    light = rng.uniform(0, 2 * np.pi)
    lum = 0.8 + 0.2 * np.cos(2 * (ang - light)) + 0.04 * np.sin(2 * np.pi * d / max(0.03 * size, 3.0))
    bevel = np.clip(np.minimum(R - d, d - r) / (0.035 * size), 0, 1)
    lum = lum * (0.72 + 0.28 * bevel)
    # stamped dot opposite the notch
    mid = (R + r) / 2
    dot_d = np.hypot(x - (cx - mid * np.cos(phi)), y - (cy - mid * np.sin(phi)))
    lum = lum * (1 - 0.35 * np.clip(0.022 * size - dot_d + 0.5, 0, 1))
    metal = _WASHER_METAL * (1.0 + rng.normal(0.0, 0.03)) * (1.0 + rng.normal(0.0, 0.015, 3))
    bg_grad = 1.0 + 0.15 * (y - size / 2) / size * rng.uniform(-1, 1)
    bg = _WASHER_BG * (1.0 + rng.normal(0.0, 0.04)) * bg_grad[..., None]
    img = bg + part[..., None] * (metal * lum[..., None] - bg) + rng.normal(0.0, 1.5, (size, size, 3))
    ctx = {"cx": cx, "cy": cy, "R": R, "r": r, "part": part}
    return img, ctx


def _point_on_ring(ctx: dict, rng: np.random.Generator, margin: float) -> tuple[float, float]:
    rad = rng.uniform(ctx["r"] + margin, ctx["R"] - margin)
    a = rng.uniform(0, 2 * np.pi)
    return ctx["cx"] + rad * np.cos(a), ctx["cy"] + rad * np.sin(a)


def _washer_hole(clean: Array, ctx: dict, rng: np.random.Generator, size: int) -> tuple[Array, Array]:
    x, y = _grid(size)
    r0 = rng.uniform(0.04, 0.075) * size
    bx, by = _point_on_ring(ctx, rng, margin=min(r0 * 1.1, 0.45 * (ctx["R"] - ctx["r"])))
    dist = _blob_distance(x, y, bx, by, r0, rng)
    cov = np.clip(dist + 0.5, 0, 1) * ctx["part"]
    alpha = np.where(cov >= 0.1, cov, 0.0)
    depth = _smoothstep(dist / r0)  # darker towards the middle of the hole
    target = (np.array([34.0, 32.0, 34.0]) - 16.0 * depth[..., None]) * (1.0 + rng.uniform(-0.1, 0.1))
    return _composite(clean, alpha, target), alpha


def _washer_scratch(clean: Array, ctx: dict, rng: np.random.Generator, size: int) -> tuple[Array, Array]:
    cov = _curve_coverage(size, rng, int(rng.integers(1, 3)), length=(0.12, 0.3), width=(0.012, 0.025),
                          start=lambda: _point_on_ring(ctx, rng, margin=0.02 * size))
    cov = cov * (ctx["part"] > 0.5)
    alpha = np.where(cov > 0, 0.45 + 0.55 * cov, 0.0)
    if rng.uniform() < 0.7:
        target = np.array([248.0, 249.0, 252.0])  # bright scratch through the oxide
    else:
        target = np.array([70.0, 68.0, 66.0])  # dark groove
    return _composite(clean, alpha, target + rng.uniform(-5, 5, 3)), alpha


_RENDER = {"weave": _render_weave, "washer": _render_washer}
_DEFECTS = {
    ("weave", "scratch"): _weave_scratch,
    ("weave", "stain"): _weave_stain,
    ("washer", "hole"): _washer_hole,
    ("washer", "scratch"): _washer_scratch,
}


def render_sample(product: str, defect_type: str | None, seed: int, size: int = 128) -> DemoSample:
    """Render one sample of ``product`` (with a ``defect_type`` defect, or normal when None).

    Deterministic in (product, defect_type, seed, size). The mask is exactly the set of pixels whose
    8-bit value differs from ``clean``; the defect is redrawn until it changes at least a few pixels.
    """
    if product not in PRODUCTS:
        raise ConfigError(f"demo product {product!r}: expected one of {sorted(PRODUCTS)}")
    if defect_type is not None and defect_type not in PRODUCTS[product]:
        raise ConfigError(f"demo product {product!r}: unknown anomaly type {defect_type!r}, "
                          f"expected one of {list(PRODUCTS[product])}")
    if size < 32:
        raise ConfigError(f"demo image_size {size}: must be at least 32")
    rng = np.random.default_rng(seed)
    clean_f, ctx = _RENDER[product](rng, size)
    clean = _to_u8(clean_f)
    if defect_type is None:
        return DemoSample(clean=clean, image=clean, mask=None)
    min_pixels = max(6, int(0.0015 * size * size))
    for _ in range(50):
        out_f, _alpha = _DEFECTS[(product, defect_type)](clean.astype(np.float64), ctx, rng, size)
        image = _to_u8(out_f)
        changed = np.any(image != clean, axis=-1)
        if changed.sum() >= min_pixels:
            return DemoSample(clean=clean, image=image, mask=changed.astype(np.uint8) * 255)
    raise DataError(f"demo {product}/{defect_type} seed {seed}: could not draw a visible defect")  # pragma: no cover


# ----------------------------------------------------------------------------- dataset writer
def _png_bytes(arr: Array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _marker(seed: int, image_size: int, num_train_good: int, num_test_good: int, num_per_type: int) -> dict:
    return {
        "format": _MARKER_FORMAT,
        "version": DEMO_VERSION,
        "seed": int(seed),
        "image_size": int(image_size),
        "num_train_good": int(num_train_good),
        "num_test_good": int(num_test_good),
        "num_per_type": int(num_per_type),
        "products": {p: list(t) for p, t in PRODUCTS.items()},
    }


def _read_marker(out: Path) -> dict | None:
    try:
        data = json.loads((out / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("format") == _MARKER_FORMAT else None


def _expected_files(marker: dict) -> list[str]:
    files = []
    for product, types in marker["products"].items():
        files += [f"{product}/train/good/{i:03d}.png" for i in range(marker["num_train_good"])]
        files += [f"{product}/test/good/{i:03d}.png" for i in range(marker["num_test_good"])]
        for t in types:
            files += [f"{product}/test/{t}/{i:03d}.png" for i in range(marker["num_per_type"])]
            files += [f"{product}/ground_truth/{t}/{i:03d}_mask.png" for i in range(marker["num_per_type"])]
    return files


def generate_demo_dataset(out_dir: str | Path, seed: int = 0, image_size: int = 128, num_train_good: int = 24,
                          num_test_good: int = 6, num_per_type: int = 9) -> Path:
    """Write the demo dataset to ``out_dir`` (atomically) and return its path.

    Skips the work when ``out_dir`` already holds a complete demo dataset with the same parameters
    (``demo_dataset.json``). Refuses (DataError) to replace a non-empty directory that is not a demo dataset.
    """
    out = Path(out_dir)
    for name, value, low in (("image_size", image_size, 32), ("num_train_good", num_train_good, 1),
                             ("num_test_good", num_test_good, 1), ("num_per_type", num_per_type, 1)):
        if int(value) != value or value < low:
            raise ConfigError(f"demo dataset {name}={value!r}: must be an integer >= {low}")
    marker = _marker(seed, image_size, num_train_good, num_test_good, num_per_type)

    if out.exists():
        if not out.is_dir():
            raise DataError(f"{out}: exists and is not a directory; refusing to write the demo dataset there")
        old = _read_marker(out)
        if old is None and any(out.iterdir()):
            raise DataError(f"{out}: a non-empty directory without {MARKER_NAME} (not a demo dataset); "
                            "refusing to replace it — choose another --out or remove it yourself")
        if old == marker and all((out / f).is_file() for f in _expected_files(marker)):
            log.info("demo dataset %s is up to date (%s matches); nothing to do", out, MARKER_NAME)
            return out

    t0 = time.perf_counter()
    jobs: list[tuple[str, str, str | None, int]] = []  # (product, split, type, index)
    for product, types in PRODUCTS.items():
        jobs += [(product, "train", None, i) for i in range(num_train_good)]
        jobs += [(product, "test", None, i) for i in range(num_test_good)]
        jobs += [(product, "test", t, i) for t in types for i in range(num_per_type)]
    with atomic_dir(out) as tmp:
        for product, split, dtype, i in jobs:
            s = render_sample(product, dtype, derive_seed(seed, "demo", product, split, dtype or "good", i), image_size)
            folder = tmp / product / split / (dtype or "good")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i:03d}.png").write_bytes(_png_bytes(s.image))
            if s.mask is not None:
                gt = tmp / product / "ground_truth" / dtype
                gt.mkdir(parents=True, exist_ok=True)
                (gt / f"{i:03d}_mask.png").write_bytes(_png_bytes(s.mask))
        (tmp / MARKER_NAME).write_text(json.dumps(marker, indent=2, sort_keys=True) + "\n")
    log.info("wrote demo dataset %s: %d images, %d px, seed %d (%.2f s)", out, len(jobs), image_size, seed,
             time.perf_counter() - t0)
    return out


# ----------------------------------------------------------------------------- CLI
_PARAMS = ("seed", "image_size", "num_train_good", "num_test_good", "num_per_type")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m seas.data.demo_data",
        description="Write the procedurally generated demo anomaly dataset (products weave: scratch/stain, "
        "washer: hole/scratch) in the MVTec AD layout. Parameters come from the config's dataset.demo "
        "section when --config is given; explicit flags override it. Skips the work when OUT already holds "
        "the same dataset; refuses to replace a directory that is not a demo dataset.",
    )
    p.add_argument("--out", required=True, type=Path, help="output dataset root (e.g. resources/demo_data)")
    add_config_arguments(p, required=False, help="run config YAML (reads dataset.demo)")
    p.add_argument("--seed", type=nonneg_int, help="dataset seed (default 0)")
    p.add_argument("--image-size", type=int_at_least(32), help="image side in pixels (default 128, minimum 32)")
    p.add_argument("--num-train-good", type=int_at_least(3), help="normal training images per product (default 24)")
    p.add_argument("--num-test-good", type=positive_int, help="normal test images per product (default 6)")
    p.add_argument("--num-per-type", type=int_at_least(3), help="anomalous test images per anomaly type (default 9)")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


@cli
def main(argv: list[str] | None = None) -> int:
    """CLI entry point (see ``--help``)."""
    args = _parser().parse_args(argv)
    setup_logging(args.verbose)
    cfg = optional_config_from_args(args)
    if cfg is not None:
        params = {k: cfg["dataset"]["demo"][k] for k in _PARAMS}
    else:
        params = {k: schema_default(f"dataset.demo.{k}") for k in _PARAMS}
    params.update({k: getattr(args, k) for k in _PARAMS if getattr(args, k) is not None})
    generate_demo_dataset(args.out, **params)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

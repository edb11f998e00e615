"""Generate image-mask pairs of one anomaly type (or normal images) with the fine-tuned generator + RMP branch.

    python -m seas.method.generate --config C --split split/P.json --generator generator/P --rmp rmp/P --type T \
        --out methods/seas/P/T
    python -m seas.method.generate ... --type good --out methods/seas/P/good      # normal images, prompt "a <ob>"

Image j (docs/METHOD.md, "Generation"):
1. reference = normal training image ``j mod generation.num_reference_images`` of the split; its VAE latent
   (posterior mean, *not* multiplied by the VAE scaling factor unless ``generation.scale_init_latent``, as the
   authors do) is noised at the last step of the scaled-linear schedule stretched to
   ``generation.init_schedule_steps`` (1500: x_T = 0.0178·z + 0.99984·ε, i.e. ≈ 0.098·z_scaled + 0.9998·ε);
   ε ~ N(0, I) from a CPU generator seeded with ``derive_seed(seed, product, type, j)``, so image j does not depend
   on the other images;
2. ``generation.num_inference_steps`` steps of diffusers' ``DPMSolverMultistepScheduler``
   (``algorithm_type="dpmsolver++"``, ``final_sigmas_type="sigma_min"``, ``generation.timestep_spacing``, by default
   ``linspace``: the first step is t = 999), configured from the base model's scheduler config, with classifier-free guidance
   (``generation.guidance_scale``; empty-prompt unconditional branch);
3. at each of the last ``generation.mask_steps`` steps the RMP branch predicts a mask from the conditional U-Net
   features and the VAE decoder features of the latent entering that step (the pre-step latent, as the
   authors); the anomaly probabilities are averaged and thresholded at ``generation.mask_threshold`` (τ,
   strictly greater); the image is the decode of the final latent.

Output: ``images/NNNNNN.png`` (RGB) and ``masks/NNNNNN.png`` (L, 0/255), same names, each written atomically, then
``manifest.csv`` last (its presence marks a complete folder): index, files, seed, reference and every parameter,
so any pair can be regenerated (:func:`regenerate`). Batches are aligned to multiples of
``generation.batch_size``; an interrupted run resumes at the batch holding the first missing index.
``.params.json`` records the parameters of the folder (seas.run.resume's policy, see :func:`generate`): a finished
folder is regenerated when the workflow reruns the job, an interrupted one continued with the same parameters and
refused with other ones; a folder not written by seas.method.generate is refused (``--restart`` deletes it first).
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from seas.method import rmp as rmp_mod
from seas.method.checkpoint import load_generator
from seas.run.config import add_config_arguments, config_from_args
from seas.data.integrity import check_split_files
from seas.data.split import Split
from seas.data.images import image_to_tensor, load_image
from seas.run.errors import ConfigError, DataError
from seas.data.pairs import (GOOD, IMAGES, MANIFEST, MANIFEST_COLUMNS, MASKS, pair_name, pair_paths, read_manifest, write_manifest)
from seas.run.cli_types import positive_int
from seas.run.resume import add_resume_arguments, check_fingerprint
from seas.run.runtime import (RUN_RECORD, atomic_save_image, atomic_write_text, autocast_dtype, cli, derive_seed, get_device, run_record, setup_logging)
from seas.run.stages import STAGES
# Lazy imports: the diffusers schedulers are imported where they are built (heavy optional import).

log = logging.getLogger("seas.method.generate")

#: the config keys this stage reads: declared once, in the stage registry (seas.run.stages)
CONFIG_KEYS = STAGES["generate"].config_keys

__all__ = ["GOOD", "REFERENCES", "init_noise_coefficients", "noise_reference", "make_dpm_scheduler", "denoise_batch",
           "to_uint8_images", "threshold_masks", "GenContext", "prepare", "initial_latents", "generate_indices",
           "generate_references", "reference_path", "first_missing",
           "generate", "regenerate", "read_manifest", "main"]

PARAMS = ".params.json"
REFERENCES = "references"  # normal-prompt twins of the pairs (generation.reference_images)
_COMPLETE = "complete"  # set in PARAMS once the folder is finished
MANIFEST_FIELDS = [*MANIFEST_COLUMNS, "prompt", "guidance_scale",
                   "num_inference_steps", "mask_threshold", "mask_steps", "init_schedule_steps", "scale_init_latent",
                   "timestep_spacing", "num_reference_images", "resolution", "batch_size", "batch_start", "generator", "rmp",
                   "normal_twin"]


# ----------------------------------------------------------------------------- pure pieces
def init_noise_coefficients(scheduler_config: Mapping, steps: int) -> tuple[float, float]:
    """(sqrt(ᾱ_T), sqrt(1-ᾱ_T)) at the last step of the base scaled-linear schedule stretched to ``steps`` steps."""
    from diffusers import DDPMScheduler

    s = DDPMScheduler(num_train_timesteps=int(steps), beta_start=float(scheduler_config["beta_start"]),
                      beta_end=float(scheduler_config["beta_end"]), beta_schedule="scaled_linear")
    acp = s.alphas_cumprod[-1].double()
    return float(acp.sqrt()), float((1 - acp).sqrt())


def noise_reference(z: torch.Tensor, eps: torch.Tensor, coefs: tuple[float, float]) -> torch.Tensor:
    a, b = coefs
    return a * z + b * eps


def make_dpm_scheduler(scheduler_config: Mapping, num_inference_steps: int, timestep_spacing: str = "linspace"):
    """DPM-Solver++ (multistep, order 2) from the base model's scheduler config; timesteps set."""
    from diffusers import DPMSolverMultistepScheduler

    s = DPMSolverMultistepScheduler.from_config(dict(scheduler_config), algorithm_type="dpmsolver++",
                                                final_sigmas_type="sigma_min", timestep_spacing=timestep_spacing)
    s.set_timesteps(num_inference_steps)
    return s


def to_uint8_images(images: torch.Tensor) -> np.ndarray:
    """[B,3,H,W] in [-1,1] -> uint8 [B,H,W,3]."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def threshold_masks(prob: torch.Tensor, tau: float) -> np.ndarray:
    """[B,H,W] anomaly probability -> uint8 0/255 masks (prob > τ)."""
    return ((prob.detach().float() > tau).to(torch.uint8) * 255).cpu().numpy()


@torch.no_grad()
def denoise_batch(unet, vae, rmp, scheduler_config: Mapping, latents: torch.Tensor, cond: torch.Tensor,
                  uncond: torch.Tensor | None, *, guidance_scale: float, num_inference_steps: int, mask_steps: int,
                  vae_kind: str = "decoder", amp_dtype=None, timestep_spacing: str = "linspace"):
    """Denoise ``latents`` (x_T, [B,4,h,w]) and return (images [B,3,H,W] in [-1,1], mean anomaly prob [B,H,W] or None).

    At each of the last ``mask_steps`` steps the RMP predicts a mask from the conditional branch's U-Net features
    and the VAE features of the latent *entering* that step (the pre-step latent: t = 120, 80, 40 with 25
    linspace steps), as the authors do; the image is the decode of the final latent.
    ``cond`` / ``uncond``: text embeddings [1 or B, 77, D]; guidance is skipped when ``uncond`` is None or the scale is
    1. ``rmp`` None skips the masks (normal images).
    """
    device = latents.device
    b = latents.shape[0]
    sched = make_dpm_scheduler(scheduler_config, num_inference_steps, timestep_spacing)
    do_cfg = uncond is not None and guidance_scale != 1.0
    cond = cond.expand(b, -1, -1) if cond.shape[0] == 1 else cond
    ctx = torch.cat([uncond.expand(b, -1, -1), cond]) if do_cfg else cond
    ctx = ctx.to(device, unet.dtype)
    n_levels = rmp_mod.num_vae_levels(vae)
    x = latents.to(unet.dtype)
    timesteps = sched.timesteps
    n = len(timesteps)
    k = min(mask_steps, n)
    prob_sum = None
    take = slice(b, 2 * b) if do_cfg else slice(0, b)
    autocast = lambda: torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None)  # noqa: E731
    for i, t in enumerate(timesteps):
        mask_step = rmp is not None and i >= n - k
        inp = torch.cat([x, x]) if do_cfg else x
        inp = sched.scale_model_input(inp, t)
        with autocast():
            if mask_step:
                pred, feats = rmp_mod.unet_features(unet, inp, t, ctx, take=take, blocks=rmp.arch.unet_features)
                vfeats = rmp_mod.vae_features(vae, x, vae_kind, n_levels)  # the pre-step latent
                out = rmp(feats, vfeats)
            else:
                pred = unet(inp, t, encoder_hidden_states=ctx, return_dict=False)[0]
        if mask_step:
            p = rmp_mod.anomaly_probability(out.fine_logits)
            prob_sum = p if prob_sum is None else prob_sum + p
        if do_cfg:
            pu, pc = pred.chunk(2)
            pred = pu + guidance_scale * (pc - pu)
        x = sched.step(pred, t, x, return_dict=False)[0]
    with autocast():
        decoded = vae.decode(x / vae.config.scaling_factor, return_dict=False)[0]
    prob = None if prob_sum is None else prob_sum / k
    return decoded, prob


# ----------------------------------------------------------------------------- context
def _params(cfg: Mapping, anomaly_type: str, generator_dir, rmp_dir) -> dict:
    g = cfg["generation"]
    return {
        "seed": cfg["seed"], "type": anomaly_type, "guidance_scale": g["guidance_scale"],
        "num_inference_steps": g["num_inference_steps"], "mask_threshold": g["mask_threshold"],
        "mask_steps": g["mask_steps"], "init_schedule_steps": g["init_schedule_steps"],
        "scale_init_latent": g["scale_init_latent"], "num_reference_images": g["num_reference_images"],
        "timestep_spacing": g["timestep_spacing"],
        "resolution": cfg["model"]["resolution"], "image_policy": cfg["dataset"]["image_policy"],
        "batch_size": g["batch_size"], "generator": str(generator_dir),
        "rmp": str(rmp_dir) if rmp_dir is not None and anomaly_type != GOOD else "",
        "bn_train_mode_at_inference": cfg["rmp"]["bn_train_mode_at_inference"],
        "reference_images": bool(g["reference_images"]) and anomaly_type != GOOD,
    }


@dataclass
class GenContext:
    product: str
    anomaly_type: str
    params: dict
    prompt: str
    references: list  # reference image paths
    ref_latents: torch.Tensor  # [R,4,h,w] on device (scaled or not, see params)
    coefs: tuple[float, float]
    cond: torch.Tensor
    uncond: torch.Tensor
    bundle: object
    rmp: object
    device: torch.device
    amp_dtype: object
    ref_cond: torch.Tensor | None = None  # the normal prompt's embedding (generation.reference_images)

    def seed(self, index: int) -> int:
        return derive_seed(self.params["seed"], self.product, self.anomaly_type, int(index))

    def reference_index(self, index: int) -> int:
        return int(index) % len(self.references)


def prepare(cfg: Mapping, split: Split, generator_dir, rmp_dir, anomaly_type: str, device=None,
            params: Mapping | None = None) -> GenContext:
    """Load the generator (+ RMP), encode the reference images and the prompts."""
    device = device or get_device(cfg)
    params = dict(params or _params(cfg, anomaly_type, generator_dir, rmp_dir))
    bundle = load_generator(generator_dir, device=device)  # frozen: eval mode, no gradients
    tm = bundle.token_map
    if anomaly_type == GOOD:
        prompt, rmp = bundle.prompt(GOOD), None
    else:
        if anomaly_type not in tm.anomaly_types:
            raise DataError(f"--type {anomaly_type}: generator {generator_dir} knows only {', '.join(tm.anomaly_types)}")
        prompt = tm.prompt(anomaly_type)
        if rmp_dir is None:
            raise DataError(f"--type {anomaly_type}: an RMP checkpoint (--rmp) is needed for anomalous images")
        rmp = rmp_mod.load_rmp(rmp_dir, device)
        rmp_mod.check_compatible(rmp.arch, bundle.unet, bundle.vae)
        rmp_mod.set_inference_mode(rmp, params["bn_train_mode_at_inference"])
    refs = list(split.train_normals[: params["num_reference_images"]])
    if not refs:
        raise DataError(f"split of {split.product}: no normal training images to start generation from")
    size, policy = params["resolution"], params["image_policy"] or "shorter_side_center_crop"
    vae = bundle.vae
    with torch.no_grad():
        imgs = torch.stack([image_to_tensor(load_image(p, size, policy)) for p in refs]).to(device, vae.dtype)
        z = torch.cat([vae.encode(imgs[i:i + 1]).latent_dist.mean for i in range(len(refs))])
        if params["scale_init_latent"]:
            z = z * vae.config.scaling_factor
    with torch.no_grad():
        cond, uncond = bundle.encode([prompt]), bundle.encode([""])
        ref_cond = bundle.encode([bundle.prompt(GOOD)]) if params.get("reference_images") else None
    coefs = init_noise_coefficients(bundle.noise_scheduler.config, params["init_schedule_steps"])
    return GenContext(split.product, anomaly_type, params, prompt, refs, z, coefs, cond, uncond, bundle, rmp, device,
                      autocast_dtype(cfg, device), ref_cond)


def initial_latents(ctx: GenContext, indices: Sequence[int]) -> torch.Tensor:
    """x_T of images ``indices``: the reference latent of each, noised with the noise of its own seed."""
    shape = tuple(ctx.ref_latents.shape[1:])
    eps = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(ctx.seed(j)), dtype=torch.float32)
                       for j in indices]).to(ctx.device)
    z = ctx.ref_latents[[ctx.reference_index(j) for j in indices]].float()
    return noise_reference(z, eps, ctx.coefs)


def generate_references(ctx: GenContext, indices: Sequence[int]) -> np.ndarray:
    """The normal-prompt twins of images ``indices`` (uint8 [B,H,W,3]): the same x_T (reference latent and noise of
    the same seed), scheduler and guidance, prompt ``a <ob>``, no RMP -- what the product looks like without the
    anomaly tokens. gen_metrics' mask-defect agreement compares each generated image with its twin."""
    if ctx.ref_cond is None:
        raise DataError("generate_references: the context was prepared without generation.reference_images")
    p, b = ctx.params, ctx.bundle
    images, _ = denoise_batch(b.unet, b.vae, None, b.noise_scheduler.config, initial_latents(ctx, indices),
                              ctx.ref_cond, ctx.uncond, guidance_scale=p["guidance_scale"],
                              num_inference_steps=p["num_inference_steps"], mask_steps=p["mask_steps"],
                              amp_dtype=ctx.amp_dtype, timestep_spacing=p["timestep_spacing"])
    return to_uint8_images(images)


def generate_indices(ctx: GenContext, indices: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Generate images ``indices`` as one batch: (uint8 images [B,H,W,3], uint8 0/255 masks [B,H,W])."""
    p = ctx.params
    x_t = initial_latents(ctx, indices)
    b = ctx.bundle
    images, prob = denoise_batch(b.unet, b.vae, ctx.rmp, b.noise_scheduler.config, x_t, ctx.cond, ctx.uncond,
                                 guidance_scale=p["guidance_scale"], num_inference_steps=p["num_inference_steps"],
                                 mask_steps=p["mask_steps"],
                                 vae_kind=ctx.rmp.arch.vae_features if ctx.rmp is not None else "decoder",
                                 amp_dtype=ctx.amp_dtype, timestep_spacing=p["timestep_spacing"])
    imgs = to_uint8_images(images)
    if prob is None:
        masks = np.zeros(imgs.shape[:3], np.uint8)
    else:
        masks = threshold_masks(prob, p["mask_threshold"])
    return imgs, masks


# ----------------------------------------------------------------------------- files
def reference_path(out: Path, index: int) -> Path:
    """The normal-prompt twin of pair ``index`` (generation.reference_images)."""
    return Path(out) / REFERENCES / pair_name(index)


def _complete(out: Path, index: int, with_reference: bool = False) -> bool:
    return all(p.is_file() for p in pair_paths(out, index)) and (
        not with_reference or reference_path(out, index).is_file())


def _clear(out: Path) -> None:
    """Remove what seas.method.generate wrote in ``out`` (manifest first, so the folder never looks complete)."""
    (out / MANIFEST).unlink(missing_ok=True)
    for sub in (IMAGES, MASKS, REFERENCES):
        shutil.rmtree(out / sub, ignore_errors=True)
    (out / PARAMS).unlink(missing_ok=True)


def _prune_beyond(out: Path, count: int) -> None:
    """Delete pairs with index >= count (left by an earlier run with a larger count): the folder = the manifest."""
    extra = 0
    for sub in (IMAGES, MASKS, REFERENCES):
        for p in (out / sub).glob("*.png"):
            if p.stem.isdigit() and int(p.stem) >= count:
                p.unlink()
                extra += 1
    if extra:
        log.info("%s: removed %d files beyond index %d", out, extra, count - 1)


def _remove_stale_tmp(out: Path) -> None:
    """Delete temporary files an interrupted atomic write may have left (``.NAME.tmpPID``)."""
    for sub in (IMAGES, MASKS, REFERENCES):
        for p in (out / sub).glob(".*.tmp*") if (out / sub).is_dir() else []:
            p.unlink(missing_ok=True)


def first_missing(out: Path, count: int, with_reference: bool = False) -> int:
    """Smallest index < count whose image or mask (or normal-prompt twin) is missing (``count`` when none is)."""
    for j in range(count):
        if not _complete(out, j, with_reference):
            return j
    return count


def _png(arr: np.ndarray):
    """uint8 HxWx3 -> RGB image, uint8 HxW -> L image."""
    return Image.fromarray(np.ascontiguousarray(arr))


def _manifest_rows(ctx_params: Mapping, count: int, product: str, prompt: str, references: Sequence[str]) -> list[dict]:
    rows = []
    bs = ctx_params["batch_size"]
    for j in range(count):
        rows.append({
            "index": j, "image": f"{IMAGES}/{pair_name(j)}", "mask": f"{MASKS}/{pair_name(j)}",
            "seed": derive_seed(ctx_params["seed"], product, ctx_params["type"], j),
            "reference": references[j % len(references)], "type": ctx_params["type"], "prompt": prompt,
            **{k: ctx_params[k] for k in ("guidance_scale", "num_inference_steps", "mask_threshold", "mask_steps",
                                          "init_schedule_steps", "scale_init_latent", "timestep_spacing",
                                          "num_reference_images",
                                          "resolution", "batch_size", "generator", "rmp")},
            "batch_start": (j // bs) * bs,
            "normal_twin": f"{REFERENCES}/{pair_name(j)}" if ctx_params.get("reference_images") else "",
        })
    return rows


def _count_for(cfg: Mapping, anomaly_type: str) -> int:
    return cfg["generation"]["num_images_per_type"]


def generate(cfg: Mapping, split_path, generator_dir, rmp_dir, anomaly_type: str, out, *, restart: bool = False,
             stop_after: int | None = None, count: int | None = None) -> Path | None:
    """Generate (or finish) ``out``. ``stop_after`` stops after that many batches in this call and returns None
    (used to test resumption).

    Resume policy (seas.run.resume): ``.params.json`` is the folder's state. A folder of a *finished* run (marked
    ``complete``) is kept when its parameters and manifest match, else generated anew (the workflow reran the job:
    a changed parameter or a retrained generator); an *interrupted* run is continued with the same parameters and
    refused with other ones (``restart`` deletes the folder first).
    """
    if count is not None and (isinstance(count, bool) or int(count) != count or count < 1):
        raise ConfigError(f"--count {count!r}: the number of pairs must be an integer >= 1")
    out = Path(out)
    split = Split.load(split_path)
    check_split_files(split, ("train",))  # the reference normals (the checkpoints: load_generator / load_rmp)
    count = _count_for(cfg, anomaly_type) if count is None else int(count)
    params = _params(cfg, anomaly_type, generator_dir, rmp_dir)
    twins = params["reference_images"]
    ppath = out / PARAMS
    if restart and out.exists():
        shutil.rmtree(out)
    if ppath.is_file():
        old = json.loads(ppath.read_text())
        if old.pop(_COMPLETE, False):
            if (old == json.loads(json.dumps(params)) and (out / MANIFEST).is_file()
                    and first_missing(out, count, twins) == count and len(read_manifest(out)) == count):
                log.info("%s: complete (%d pairs), nothing to do", out, count)
                return out
            log.info("%s: replacing the pairs of a finished run", out)
            _clear(out)
        else:
            check_fingerprint(ppath, old, params)  # an interrupted run: continue it, never mix two settings
    elif out.exists() and any(out.iterdir()):
        raise DataError(f"{out}: exists without {PARAMS}; not a folder of seas.method.generate (use --restart)")
    ctx = prepare(cfg, split, generator_dir, rmp_dir, anomaly_type, params=params)  # fails before writing anything
    atomic_write_text(ppath, json.dumps(params, indent=1, sort_keys=True))
    (out / MANIFEST).unlink(missing_ok=True)

    _remove_stale_tmp(out)
    start = first_missing(out, count, twins)
    bs = params["batch_size"]
    batches = list(range((start // bs) * bs, count, bs))
    if start < count:
        log.info("%s %s: generating %d..%d (batch %d)%s", split.product, anomaly_type, start, count - 1, bs,
                 " (resuming)" if start else "")
    for n_done, b0 in enumerate(tqdm(batches, desc=f"generate {split.product}/{anomaly_type}", unit="batch",
                                     leave=False)):
        if stop_after is not None and n_done >= stop_after:
            return None
        idx = list(range(b0, min(b0 + bs, count)))
        if all(_complete(out, j, twins) for j in idx):
            continue
        imgs, masks = generate_indices(ctx, idx)
        normal = generate_references(ctx, idx) if twins else None
        for k, j in enumerate(idx):
            if _complete(out, j, twins):
                continue
            img_path, mask_path = pair_paths(out, j)
            if normal is not None:  # first: the pair's files mark the index done
                atomic_save_image(_png(normal[k]), reference_path(out, j))
            atomic_save_image(_png(imgs[k]), img_path)
            atomic_save_image(_png(masks[k]), mask_path)
    _prune_beyond(out, count)
    rows = _manifest_rows(params, count, split.product, ctx.prompt, ctx.references)
    atomic_write_text(ppath, json.dumps({**params, _COMPLETE: True}, indent=1, sort_keys=True))
    write_manifest(out, rows, extra_columns=MANIFEST_FIELDS[len(MANIFEST_COLUMNS):])  # last: marks the folder done
    log.info("%s: %d pairs + %s", out, count, MANIFEST)
    return out


def regenerate(cfg: Mapping, split_path, out, index: int, *, alone: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Regenerate pair ``index`` of a finished folder from its manifest (parameters, seed, reference, checkpoints).

    By default the batch that produced it (``batch_start``, ``batch_size``) is rerun, which reproduces the pair bit
    for bit on the same device; ``alone=True`` generates it by itself (same seed and reference; the arithmetic of a
    different batch size may differ in the last bits on some backends).
    """
    out = Path(out)
    rows = read_manifest(out)
    row = rows[int(index)]
    params = json.loads((out / PARAMS).read_text())
    params.pop(_COMPLETE, None)
    split = Split.load(split_path)
    ctx = prepare(cfg, split, params["generator"], params["rmp"] or None, params["type"], params=params)
    if int(row["seed"]) != ctx.seed(index) or row["reference"] != ctx.references[ctx.reference_index(index)]:
        raise DataError(f"{out / MANIFEST}: row {index} does not match the split / seed derivation")
    if alone:
        idx = [int(index)]
    else:
        b0, bs = int(row["batch_start"]), int(row["batch_size"])
        idx = list(range(b0, min(b0 + bs, len(rows))))
    imgs, masks = generate_indices(ctx, idx)
    k = idx.index(int(index))
    return imgs[k], masks[k]


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m seas.method.generate",
        description="Generate SeaS image-mask pairs for one anomaly type (or normal images with --type good); "
                    "resumable, writes images/, masks/ and manifest.csv (last).",
    )
    add_config_arguments(p)
    p.add_argument("--split", required=True, help="split manifest split/<product>.json (reference normal images)")
    p.add_argument("--generator", required=True, help="generator checkpoint folder generator/<product>")
    p.add_argument("--rmp", default=None, help="RMP checkpoint folder rmp/<product> (not needed for --type good)")
    p.add_argument("--type", required=True, help="anomaly type, or 'good' for normal images (prompt 'a <ob>')")
    p.add_argument("--out", required=True, help="output folder methods/seas/<product>/<type>")
    p.add_argument("--count", type=positive_int, default=None,
                   help="number of pairs (default generation.num_images_per_type)")
    add_resume_arguments(p, "batches")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


@cli
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    cfg = config_from_args(args)
    out = generate(cfg, args.split, args.generator, args.rmp, args.type, args.out, restart=args.restart,
                   stop_after=args.stop_after, count=args.count)
    if out is not None:  # what this stage cost (tables/cost.csv); new_files = images generated by this call
        run_record(Path(out) / RUN_RECORD, new_files=Path(out) / IMAGES, stage="generation",
                   images=len(read_manifest(out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

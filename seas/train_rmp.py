"""Train the Refined Mask Prediction branch on top of a frozen fine-tuned generator.

    python -m seas.train_rmp --config C --split split/P.json --generator generator/P --out rmp/P

Each step (seas-method.md, "Refined Mask Prediction"): ``rmp.batch_abnormal`` training anomalies (any type of the
product, with their masks) and ``rmp.batch_normal`` normal training images, augmented like the generator's data.
Latents are noised at a random t per sample; one forward pass of the frozen U-Net (each image with its prompt)
gives the up-block features and the time embedding through forward hooks; the abnormal latents are stepped once
(DDPM, x_t -> x_{t-1}) and decoded by the frozen VAE, whose decoder up-block outputs feed the Mask Refinement
Modules; normal images skip the MRMs and share the image-size head in the same batch. Loss: focal loss
(γ = ``rmp.focal_gamma``) on the image-size masks and the latent-size masks (:func:`coarse_target`) of the joint batch,
normal images against all-zero masks. ``rmp.gradient_accumulation`` batches per optimizer step (the authors: 2).
Switches: ``rmp.coarse_supervision``, ``rmp.coarse_target``, ``rmp.normal_supervision``, ``rmp.mrm``,
``rmp.progressive``, ``rmp.vae_features``. Steps: ``rmp.steps_per_type`` x the generator's anomaly types (all
types of the product, or one with ``generator.scope: type``).

Resumable: every ``rmp.checkpoint_every`` steps the branch and optimizer go to ``<out>.work/ckpt/`` (replaced in one
rename); a rerun continues from there. Every step's randomness is derived from (seed, product, step), so a resumed
run draws the same batches as an uninterrupted one. On success ``<out>/rmp.safetensors`` + ``rmp.json`` appear
and ``<out>.work/`` is removed.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from . import rmp as rmp_mod
from .config import add_config_arguments, config_from_args
from .data import Split, augment_pair, augmentation_for, image_to_tensor, load_image, load_mask, mask_to_tensor
from .errors import CheckpointError, DataError
from .runtime import (atomic_dir, atomic_write_text, autocast_dtype, cli, derive_seed, get_device,
                      save_safetensors_atomic, setup_logging)

log = logging.getLogger("seas.train_rmp")

__all__ = ["TrainData", "load_train_data", "sample_batch", "coarse_target", "rmp_loss", "train_rmp", "main",
           "load_generator_bundle", "normal_prompt_of"]


# ----------------------------------------------------------------------------- generator access
def load_generator_bundle(generator_dir, device, dtype=torch.float32):
    """The frozen fine-tuned generator (seas.checkpoint.load_generator), every part in eval mode, no grads."""
    from .checkpoint import load_generator

    bundle = load_generator(generator_dir, device=device, dtype=dtype)
    for m in (bundle.text_encoder, bundle.unet, bundle.vae):
        m.requires_grad_(False)
        m.eval()
    return bundle


def normal_prompt_of(token_map) -> str:
    p = token_map.normal_prompt
    return p() if callable(p) else p


@torch.no_grad()
def prompt_embeddings(bundle, prompts: Sequence[str], device) -> torch.Tensor:
    from .prompt import encode_prompts

    return encode_prompts(bundle.tokenizer, bundle.text_encoder, list(prompts), device=device)


# ----------------------------------------------------------------------------- data
@dataclass
class TrainData:
    anomalies: list  # [(image [3,H,W] in [-1,1], mask [1,H,W] in {0,1}, type)]
    normals: list  # [image [3,H,W]]
    rotate90: bool
    flip: bool


def load_train_data(split: Split, cfg: Mapping) -> TrainData:
    """All training anomalies (with masks) and normal images of the split, at the model resolution."""
    size = cfg["model"]["resolution"]
    policy = cfg["dataset"].get("image_policy", "shorter_side_center_crop")
    anomalies = []
    for image, mask, t in split.train_pairs():
        anomalies.append((image_to_tensor(load_image(image, size, policy)), mask_to_tensor(load_mask(mask, size, policy)), t))
    if not anomalies:
        raise DataError(f"split of {split.product}: no training anomalies for the RMP")
    normals = [image_to_tensor(load_image(p, size, policy)) for p in split.train_normals]
    if cfg["rmp"]["batch_normal"] > 0 and not normals:
        raise DataError(f"split of {split.product}: rmp.batch_normal > 0 but the split has no normal training images")
    rot, flip = augmentation_for(cfg, split.product)
    return TrainData(anomalies, normals, rot, flip)


def sample_batch(data: TrainData, n_abnormal: int, n_normal: int, generator: torch.Generator):
    """(abnormal images [A,3,H,W], masks [A,1,H,W], types [A], normal images [N,3,H,W]), augmented."""
    ia = torch.randint(0, len(data.anomalies), (n_abnormal,), generator=generator).tolist()
    imgs, masks, types = [], [], []
    for i in ia:
        img, m, t = data.anomalies[i]
        img, m = augment_pair(img, m, generator, data.rotate90, data.flip)
        imgs.append(img), masks.append(m), types.append(t)
    normals = []
    if n_normal:
        inn = torch.randint(0, len(data.normals), (n_normal,), generator=generator).tolist()
        for i in inn:
            img = data.normals[i]
            img, _ = augment_pair(img, img[:1], generator, data.rotate90, data.flip)
            normals.append(img)
    h, w = data.anomalies[0][0].shape[-2:]
    nt = torch.stack(normals) if normals else torch.zeros(0, 3, h, w)
    return torch.stack(imgs), torch.stack(masks), types, nt


COARSE_TARGETS = ("bilinear", "bilinear_max")
_ONE_TOL = 1e-4  # "== 1" up to float rounding of the bilinear weights


def coarse_target(masks: torch.Tensor, size: Sequence[int], rule: str = "bilinear") -> torch.Tensor:
    """The latent-size target ``[B, h, w]`` (long) of masks ``[B, 1, H, W]`` in {0, 1}, as the authors build it.

    The masks are resized bilinearly (align_corners False); a position is anomalous only where the resized value
    is 1 (the authors truncate the float target to an integer class). ``bilinear_max`` first divides the resized
    masks by their maximum over the batch (their VisA / MVTec 3D AD rule: the peak of a tiny defect stays 1; an
    all-empty batch stays empty). Thin defects can vanish under ``bilinear``: the image-size target keeps them.
    """
    if rule not in COARSE_TARGETS:
        raise ValueError(f"coarse_target: unknown rule {rule!r} ({', '.join(COARSE_TARGETS)})")
    m = F.interpolate(masks.float(), size=tuple(size), mode="bilinear", align_corners=False)
    if rule == "bilinear_max":
        peak = m.max()
        if peak > 0:
            m = m / peak
    return (m >= 1.0 - _ONE_TOL).squeeze(1).long()


def rmp_loss(out, masks: torch.Tensor, *, gamma: float = 2.0, coarse_supervision: bool = True,
             coarse_rule: str = "bilinear") -> dict[str, torch.Tensor]:
    """Focal losses of the RMP on the joint batch ``out`` (abnormal images first, then normal images; see
    :meth:`RefinedMaskPredictor.forward`): image-size masks of every image against its mask (normal images: the
    empty mask), and, with ``coarse_supervision``, latent-size masks against :func:`coarse_target`. Each term is a
    mean over all pixels of all images, as the authors' loss. Returns the terms and their ``total``."""
    from .losses import focal_loss

    b, na = out.fine_logits.shape[0], masks.shape[0]
    full = torch.zeros((b, 1, *out.fine_logits.shape[-2:]), dtype=torch.float32, device=out.fine_logits.device)
    full[:na] = masks.float().to(full.device)
    terms = {"fine": focal_loss(out.fine_logits, (full.squeeze(1) > 0.5).long(), gamma)}
    if coarse_supervision:
        coarse = torch.zeros((b, *out.coarse_logits.shape[-2:]), dtype=torch.long, device=full.device)
        if na:
            coarse[:na] = coarse_target(full[:na], out.coarse_logits.shape[-2:], coarse_rule)
        terms["coarse"] = focal_loss(out.coarse_logits, coarse, gamma)
    terms["total"] = sum(terms.values())
    return terms


# ----------------------------------------------------------------------------- features of a batch
def one_step_scheduler(noise_scheduler):
    """The training DDPM schedule, without x0 clipping (latents are not in [-1, 1]), for x_t -> x_{t-1}."""
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(noise_scheduler.config, clip_sample=False, thresholding=False)


@torch.no_grad()
def batch_features(bundle, images: torch.Tensor, cond: torch.Tensor, n_abnormal: int, vae_kind: str,
                   generator: torch.Generator, device):
    """Frozen-generator features of a batch (abnormal first): U-Net (f_low, f_high) and the VAE features of the
    one-step-denoised abnormal latents."""
    vae, unet = bundle.vae, bundle.unet
    sched = one_step_scheduler(bundle.noise_scheduler)
    x = images.to(device=device, dtype=vae.dtype)
    latents = vae.encode(x).latent_dist.sample(generator=generator) * vae.config.scaling_factor
    b = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator).to(device, latents.dtype)
    t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=generator).to(device)
    noisy = sched.add_noise(latents, noise, t)
    eps, feats = rmp_mod.unet_features(unet, noisy, t, cond.to(device, unet.dtype))
    vae_feats = None
    if n_abnormal:
        prev = torch.cat([
            sched.step(eps[i:i + 1], int(t[i]), noisy[i:i + 1], generator=generator).prev_sample
            for i in range(n_abnormal)
        ])
        _, vae_feats = rmp_mod.vae_features(vae, prev, vae_kind, rmp_mod.num_vae_levels(vae))
    return feats, vae_feats


# ----------------------------------------------------------------------------- checkpoints
def _fingerprint(cfg: Mapping, generator_dir: Path, split: Split, total: int) -> dict:
    return {"rmp": dict(cfg["rmp"]), "generator": str(Path(generator_dir).resolve()), "product": split.product,
            "seed": cfg["seed"], "resolution": cfg["model"]["resolution"], "total_steps": total}


_VOLATILE = ("checkpoint_every", "log_every", "bn_train_mode_at_inference")  # not read by training


def _same_run(a: Mapping, b: Mapping) -> bool:
    strip = lambda d: {**d, "rmp": {k: v for k, v in d["rmp"].items() if k not in _VOLATILE}}  # noqa: E731
    return strip(a) == strip(b)


def _save_work(work: Path, model, opt, step: int, fp: dict, history: list) -> None:
    with atomic_dir(work / "ckpt") as tmp:
        save_safetensors_atomic(model.state_dict(), tmp / "rmp.safetensors")
        torch.save(opt.state_dict(), tmp / "optimizer.pt")
        atomic_write_text(tmp / "state.json", json.dumps({"step": step, "fingerprint": fp, "history": history}))


def _load_work(work: Path, model, opt, fp: dict, device) -> tuple[int, list]:
    ck = work / "ckpt"
    if not (ck / "state.json").is_file():
        return 0, []
    from safetensors.torch import load_file

    state = json.loads((ck / "state.json").read_text())
    if not _same_run(state.get("fingerprint", {}), fp):
        log.warning("%s: checkpoint of a different configuration; starting over", ck)
        return 0, []
    model.load_state_dict(load_file(str(ck / "rmp.safetensors"), device=str(device)))
    opt.load_state_dict(torch.load(ck / "optimizer.pt", map_location=device, weights_only=True))
    log.info("resuming RMP training from step %d (%s)", state["step"], ck)
    return int(state["step"]), list(state.get("history", []))


# ----------------------------------------------------------------------------- training
def train_rmp(cfg: Mapping, split_path, generator_dir, out, max_steps: int | None = None) -> Path | None:
    """Train (or resume) and write ``out/``. ``max_steps`` stops early after that many steps in this call
    (checkpointing first) and returns None: used to test resumption."""
    from tqdm import tqdm

    out, generator_dir = Path(out), Path(generator_dir)
    split = Split.load(split_path)
    r = cfg["rmp"]
    device = get_device(cfg)
    amp = autocast_dtype(cfg, device)
    bundle = load_generator_bundle(generator_dir, device)
    arch = rmp_mod.arch_from_configs(bundle.unet.config, bundle.vae.config, r)
    types = list(bundle.token_map.anomaly_types)
    missing = [t for t in types if t not in split.anomaly_types]
    if missing:
        raise CheckpointError(f"{generator_dir}: generator was trained on anomaly types {missing} that {split_path} "
                              "does not have")
    split = split.restricted(types)  # a per-type generator (generator.scope: type) gets a per-type RMP
    total = r["steps_per_type"] * len(split.anomaly_types)
    fp = _fingerprint(cfg, generator_dir, split, total)

    torch.manual_seed(derive_seed(cfg["seed"], "rmp-init", split.product))
    model = rmp_mod.RefinedMaskPredictor(arch).to(device)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=r["lr"])
    work = out.with_name(out.name + ".work")
    step, history = _load_work(work, model, opt, fp, device)

    data = load_train_data(split, cfg)
    prompts = {t: bundle.token_map.prompt(t) for t in split.anomaly_types}
    emb = {t: prompt_embeddings(bundle, [p], device) for t, p in prompts.items()}
    n_norm = r["batch_normal"] if r["normal_supervision"] else 0
    if n_norm:
        emb["good"] = prompt_embeddings(bundle, [normal_prompt_of(bundle.token_map)], device)

    done_here = 0
    accum = int(r["gradient_accumulation"])
    t0 = time.time()
    bar = tqdm(total=total, initial=step, desc=f"rmp {split.product}", unit="step", leave=False)
    while step < total:
        sums: dict[str, float] = {}
        for micro in range(accum):
            g = torch.Generator().manual_seed(derive_seed(cfg["seed"], "rmp", split.product, step, micro))
            imgs, masks, btypes, normals = sample_batch(data, r["batch_abnormal"], n_norm, g)
            images = torch.cat([imgs, normals])
            cond = torch.cat([emb[t] for t in btypes] + ([emb["good"]] * normals.shape[0] if normals.shape[0] else []))
            na = imgs.shape[0]
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                (low, high), vae_feats = batch_features(bundle, images, cond, na, arch.vae_features, g, device)
                out_all = model((low, high), vae_feats, n_refined=na)
                terms = rmp_loss(out_all, masks.to(device), gamma=r["focal_gamma"],
                                 coarse_supervision=r["coarse_supervision"], coarse_rule=r["coarse_target"])
            (terms["total"] / accum).backward()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) / accum
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        done_here += 1
        bar.update(1)
        if step % r["log_every"] == 0 or step == total:
            rec = {"step": step, **{k: round(v, 6) for k, v in sums.items()}}
            history.append(rec)
            log.info("step %d/%d %s", step, total, " ".join(f"{k}={v:.4f}" for k, v in rec.items() if k != "step"))
        if step % r["checkpoint_every"] == 0 and step < total:
            _save_work(work, model, opt, step, fp, history)
        if max_steps is not None and done_here >= max_steps and step < total:
            _save_work(work, model, opt, step, fp, history)
            bar.close()
            return None
    bar.close()
    extra = {"product": split.product, "steps": total, "generator": str(generator_dir), "history": history,
             "train_seconds_this_call": round(time.time() - t0, 1),
             "rmp_config": {k: v for k, v in r.items()}}
    with atomic_dir(out) as tmp:
        rmp_mod.save_rmp(model, tmp, extra=extra)
    shutil.rmtree(work, ignore_errors=True)
    log.info("RMP for %s written to %s", split.product, out)
    return out


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m seas.train_rmp",
        description="Train the Refined Mask Prediction branch of SeaS on a frozen fine-tuned generator "
                    "(resumable from <out>.work/).",
    )
    add_config_arguments(p)
    p.add_argument("--split", required=True, help="split manifest split/<product>.json")
    p.add_argument("--generator", required=True, help="generator checkpoint folder generator/<product>")
    p.add_argument("--out", required=True, help="output folder rmp/<product> (rmp.safetensors + rmp.json)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    cfg = config_from_args(args)
    out = train_rmp(cfg, args.split, args.generator, args.out)
    if out is not None:  # what this stage cost (tables/cost.csv)
        from .runtime import RUN_RECORD, run_record
        run_record(Path(out) / RUN_RECORD, stage="rmp",
                   steps=json.loads((Path(out) / "rmp.json").read_text()).get("steps"))
    return 0


main = cli(_main)

if __name__ == "__main__":
    raise SystemExit(main())

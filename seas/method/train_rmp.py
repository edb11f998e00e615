"""Train the Refined Mask Prediction branch on top of a frozen fine-tuned generator.

    python -m seas.method.train_rmp --config C --split split/P.json --generator generator/P --out rmp/P

Each step (docs/METHOD.md, "Refined Mask Prediction"): ``rmp.batch_abnormal`` training anomalies (any type of the
product, with their masks) and ``rmp.batch_normal`` normal training images, augmented like the generator's data.
Latents are noised at a random t per sample; one forward pass of the frozen U-Net (each image with its prompt)
gives the up-block features and the time embedding through forward hooks; the abnormal latents are stepped once
(DDPM, x_t -> x_{t-1}) and decoded by the frozen VAE, whose decoder up-block outputs feed the Mask Refinement
Modules; normal images skip the MRMs and share the image-size head in the same batch. Loss: focal loss
(γ = ``rmp.focal_gamma``) on the image-size masks and the latent-size masks (:func:`coarse_target`) of the joint batch,
normal images against all-zero masks. ``rmp.gradient_accumulation`` batches per optimizer step (the authors: 2).
Switches: ``rmp.coarse_supervision``, ``rmp.coarse_target``, ``rmp.normal_supervision``, ``rmp.mrm``,
``rmp.mrm_variant``, ``rmp.progressive``, ``rmp.vae_features``, ``rmp.unet_features`` (which U-Net up blocks).
Steps: ``rmp.steps_per_type`` x the generator's anomaly types (all types of the product, or one with
``generator.scope: type``).

Resumable (seas.run.resume): every ``rmp.checkpoint_every`` steps the branch and optimizer go to ``<out>.work/ckpt/``
(replaced in one rename); a rerun continues from there, one of other settings is refused (``--restart``). Every step's randomness is derived from (seed, product, step), so a resumed
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
from tqdm import tqdm

from seas.method import rmp as rmp_mod
from seas.run.config import add_config_arguments, config_from_args
from seas.method.checkpoint import load_generator
from seas.data.integrity import check_split_files
from seas.data.split import Split
from seas.data.augment import augmentation_for
from seas.method.latents import training_set_cache
from seas.method.training_data import TrainData, draw_keys, load_train_data
from seas.run.errors import CheckpointError, DataError
from seas.data.pairs import GOOD
from seas.run.resume import add_resume_arguments, check_fingerprint, discard, work_dir
from seas.method.optim import optimizer_class
from seas.run.runtime import (RUN_RECORD, atomic_dir, atomic_write_text, autocast_dtype, cli, derive_seed, get_device, run_record, save_safetensors_atomic, setup_logging)
from seas.method.losses import ONE_TOL, focal_loss
from seas.run.stages import STAGES, fingerprint
# Lazy imports: diffusers / safetensors are imported where they are used (heavy optional imports).

log = logging.getLogger("seas.method.train_rmp")

#: the config keys this stage reads: declared once, in the stage registry (seas.run.stages)
CONFIG_KEYS = STAGES["train_rmp"].config_keys

__all__ = ["RmpData", "load_rmp_data", "sample_batch", "coarse_target", "rmp_loss", "train_rmp", "main"]


# ----------------------------------------------------------------------------- data
@dataclass
class RmpData:
    """The RMP's training images (seas.method.training_data) and its product's augmentation."""

    images: TrainData
    rotate90: bool
    flip: bool


def load_rmp_data(split: Split, cfg: Mapping) -> RmpData:
    """All training anomalies (with masks) and normal images of the split, at the model resolution."""
    data = load_train_data(split, cfg["model"]["resolution"], cfg["dataset"]["image_policy"], stage="RMP")
    if cfg["rmp"]["batch_normal"] > 0 and not data.normals:
        raise DataError(f"split of {split.product}: rmp.batch_normal > 0 but the split has no normal training images")
    return RmpData(data, *augmentation_for(cfg, split.product))


def sample_batch(data: RmpData, n_abnormal: int, n_normal: int, generator: torch.Generator):
    """(latent keys [A + N] of seas.method.latents' training-set cache, masks [A,1,H,W], types [A]), augmented: the
    abnormal images first, then ``n_normal`` normal ones (indices drawn with replacement)."""
    keys, masks, types = draw_keys(data.images, n_abnormal, n_normal, generator, data.rotate90, data.flip,
                                   replacement=True)
    return keys, torch.stack(masks), types


COARSE_TARGETS = ("bilinear", "bilinear_max")


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
    return (m >= 1.0 - ONE_TOL).squeeze(1).long()


def rmp_loss(out, masks: torch.Tensor, *, gamma: float = 2.0, coarse_supervision: bool = True,
             coarse_rule: str = "bilinear") -> dict[str, torch.Tensor]:
    """Focal losses of the RMP on the joint batch ``out`` (abnormal images first, then normal images; see
    :meth:`RefinedMaskPredictor.forward`): image-size masks of every image against its mask (normal images: the
    empty mask), and, with ``coarse_supervision``, latent-size masks against :func:`coarse_target`. Each term is a
    mean over all pixels of all images, as the authors' loss. Returns the terms and their ``total``."""
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
def batch_features(bundle, latents, keys, cond: torch.Tensor, n_abnormal: int, vae_kind: str,
                   generator: torch.Generator, device, unet_blocks: Sequence[int] = (1, 2)):
    """Frozen-generator features of a batch (abnormal first): the U-Net features (outputs of ``up_blocks[i] for i
    in unet_blocks``, default (f_low, f_high)) and the VAE features of the one-step-denoised abnormal latents.
    ``latents``: the training-set LatentCache, ``keys`` the batch's variants."""
    vae, unet = bundle.vae, bundle.unet
    sched = one_step_scheduler(bundle.noise_scheduler)
    latents = latents.sample(keys, generator).to(device, unet.dtype)
    b = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator).to(device, latents.dtype)
    t = torch.randint(0, sched.config.num_train_timesteps, (b,), generator=generator).to(device)
    noisy = sched.add_noise(latents, noise, t)
    eps, feats = rmp_mod.unet_features(unet, noisy, t, cond.to(device, unet.dtype), blocks=unet_blocks)
    vae_feats = None
    if n_abnormal:
        prev = torch.cat([
            sched.step(eps[i:i + 1], int(t[i]), noisy[i:i + 1], generator=generator).prev_sample
            for i in range(n_abnormal)
        ])
        vae_feats = rmp_mod.vae_features(vae, prev, vae_kind, rmp_mod.num_vae_levels(vae))
    return feats, vae_feats


# ----------------------------------------------------------------------------- checkpoints
def _rmp_settings(cfg: Mapping) -> dict:
    """The ``rmp`` keys this stage reads (CONFIG_KEYS; not the generation-time ones)."""
    return {k[len("rmp."):]: cfg["rmp"][k[len("rmp."):]] for k in CONFIG_KEYS if k.startswith("rmp.")}


def _fingerprint(cfg: Mapping, generator_dir: Path, split: Split, total: int) -> dict:
    """The stage's declared config keys (seas.run.stages) + the generator and split it trains on."""
    return fingerprint(cfg, "train_rmp", generator=str(Path(generator_dir).resolve()), product=split.product,
                       anomaly_types=list(split.anomaly_types), train_anomalies=split.train_anomalies,
                       train_normals=list(split.train_normals), total_steps=total)


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
    check_fingerprint(ck, state.get("fingerprint", {}), fp)
    model.load_state_dict(load_file(str(ck / "rmp.safetensors"), device=str(device)))
    opt.load_state_dict(torch.load(ck / "optimizer.pt", map_location=device, weights_only=True))
    log.info("resuming RMP training from step %d (%s)", state["step"], ck)
    return int(state["step"]), list(state.get("history", []))


# ----------------------------------------------------------------------------- training
def train_rmp(cfg: Mapping, split_path, generator_dir, out, stop_after: int | None = None,
              restart: bool = False) -> Path | None:
    """Train (or resume, seas.run.resume) and write ``out/``. ``stop_after`` stops early after that many steps in this
    call (checkpointing first) and returns None: used to test resumption. ``restart`` discards an interrupted
    run's state."""
    out, generator_dir = Path(out), Path(generator_dir)
    split = Split.load(split_path)
    check_split_files(split, ("train",))  # before the first step (the generator's folder: load_generator)
    r = cfg["rmp"]
    device = get_device(cfg)
    amp = autocast_dtype(cfg, device)
    bundle = load_generator(generator_dir, device=device)  # frozen: eval mode, no gradients
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
    cls, used_optimizer = optimizer_class(r["optimizer"], device, "rmp.optimizer")
    opt = cls(model.parameters(), lr=r["lr"])  # betas 0.9/0.999, eps 1e-8, weight decay 0.01: the authors' too
    work = work_dir(out)
    if restart:
        discard(work)
    step, history = _load_work(work, model, opt, fp, device)

    data = load_rmp_data(split, cfg)
    cache = training_set_cache(bundle.vae, [img for img, _, _ in data.images.anomalies], data.images.normals, device,
                               amp)
    prompts = {t: bundle.token_map.prompt(t) for t in split.anomaly_types}
    emb = {t: bundle.encode([p]) for t, p in prompts.items()}
    n_norm = r["batch_normal"] if r["normal_supervision"] else 0
    if n_norm:
        emb["good"] = bundle.encode([bundle.prompt(GOOD)])

    done_here = 0
    accum = int(r["gradient_accumulation"])
    t0 = time.time()
    bar = tqdm(total=total, initial=step, desc=f"rmp {split.product}", unit="step", leave=False)
    while step < total:
        sums: dict[str, float] = {}
        for micro in range(accum):
            g = torch.Generator().manual_seed(derive_seed(cfg["seed"], "rmp", split.product, step, micro))
            keys, masks, btypes = sample_batch(data, r["batch_abnormal"], n_norm, g)
            na = len(btypes)
            cond = torch.cat([emb[t] for t in btypes] + ([emb["good"]] * (len(keys) - na) if len(keys) > na else []))
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                feats, vae_feats = batch_features(bundle, cache, keys, cond, na, arch.vae_features, g, device,
                                                  arch.unet_features)
                out_all = model(feats, vae_feats, n_refined=na)
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
        if stop_after is not None and done_here >= stop_after and step < total:
            _save_work(work, model, opt, step, fp, history)
            bar.close()
            return None
    bar.close()
    extra = {"product": split.product, "steps": total, "generator": str(generator_dir), "history": history,
             "train_seconds_this_call": round(time.time() - t0, 1), "optimizer": used_optimizer,
             "rmp_config": _rmp_settings(cfg)}
    with atomic_dir(out) as tmp:
        rmp_mod.save_rmp(model, tmp, extra=extra)
    shutil.rmtree(work, ignore_errors=True)
    log.info("RMP for %s written to %s", split.product, out)
    return out


# ----------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m seas.method.train_rmp",
        description="Train the Refined Mask Prediction branch of SeaS on a frozen fine-tuned generator "
                    "(resumable from <out>.work/).",
    )
    add_config_arguments(p)
    p.add_argument("--split", required=True, help="split manifest split/<product>.json")
    p.add_argument("--generator", required=True, help="generator checkpoint folder generator/<product>")
    p.add_argument("--out", required=True, help="output folder rmp/<product> (rmp.safetensors + rmp.json)")
    add_resume_arguments(p, "steps")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


@cli
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    cfg = config_from_args(args)
    out = train_rmp(cfg, args.split, args.generator, args.out, stop_after=args.stop_after, restart=args.restart)
    if out is not None:  # what this stage cost (tables/cost.csv)
        info = json.loads((Path(out) / "rmp.json").read_text())
        run_record(Path(out) / RUN_RECORD, stage="rmp", steps=info.get("steps"), optimizer=info.get("optimizer"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

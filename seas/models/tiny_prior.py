"""Pretraining the tiny SD-shaped model on the demo's normal training images: the prior the default run starts from.

The role Stable Diffusion's own pretraining plays for a real run. Two phases, from scratch, deterministic
(same seed -> same weights on the same machine and thread count):

1. **VAE** (diffusers ``AutoencoderKL``, a KL autoencoder): reconstruction (L1 + L1 of the image gradients) + a
   small KL term, on the normal training images of every demo product under the 8 flips/rotations by 90 degrees.
   Then the latent space is rescaled (exactly: :func:`rescale_latent_space`) so that 1 / std of the training
   latents -- SD's rule for its scaling factor -- is SD v1-4's 0.18215: generation's start from the reference
   latent (``generation.scale_init_latent: false``, the authors') keeps the signal-to-noise ratio it has with SD.
2. **U-Net** (``UNet2DConditionModel``): epsilon-prediction (DDPM, SD v1-4's scaled-linear schedule, 1000 steps,
   random t per sample) on the VAE latents, each sample captioned with the generic prompt :data:`PRIOR_PROMPT`
   (``"a object"``: the text of the normal prompt ``a <ob>`` before ``<ob>`` moves away from the word "object") or,
   with probability ``recipe["product_captions"]`` (0.5), with its product's name (``"a washer"``: the class words
   SD's own pretraining knows; with the generic caption alone the U-Net has no reason to read the text, and the
   generator's learned tokens then steer a mixture of the products: measured, see the README), dropped to the empty
   prompt with probability :data:`CAPTION_DROPOUT` so classifier-free guidance has an unconditional branch to work
   with. The CLIP text encoder keeps its random (seeded) weights and is frozen.

The architecture (:func:`prior_configs`) keeps SD v1-4's block structure (3 CrossAttnDownBlock2D + DownBlock2D,
2 layers per block, UpBlock2D + 3 CrossAttnUpBlock2D, 4 latent channels) at CPU widths, with a x4 VAE (3 levels):
every later stage (generator, RMP, generation) runs the same code as with SD v1-4.

    python -m seas.models.tiny_prior --config config.yaml --out priors/tiny_prior.safetensors     # regenerate the prior

writes ``<out>`` (every weight, keys ``vae.* unet.* text_encoder.*``) and ``<out stem>.json`` (architecture,
recipe, the data it saw, its sha256, loss curve, CPU time). The same training (:func:`pretrain_images`, resumable
through :class:`Resumable`) pretrains a prior on a run's own ``train/good`` images: the workflow's stage
``train_prior`` (seas.models.train_prior, ``model.tiny_prior: auto`` on data the committed prior never saw). ``python -m seas.models.tiny_sd --prior <out>`` (the workflow's
``tiny_sd`` rule, ``model.tiny_prior``) assembles the diffusers folder from it after checking the hash.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from seas.run.cli_types import nonneg_float, nonneg_int, positive_float, positive_int, unit_float
from seas.run.config import add_config_arguments, optional_config_from_args, schema_default
from seas.run.errors import ConfigError
from seas.data.demo_data import generate_demo_dataset
from seas.data.images import image_to_tensor, load_image
from seas.models.clip_vocab import make_clip_tokenizer
from seas.models.tiny_sd import tiny_configs
from seas.models.prior_file import PRIOR_VERSION, read_prior_manifest, write_prior
from seas.run.runtime import cli, derive_seed, setup_logging

log = logging.getLogger("seas.models.tiny_prior")

#: the config keys this CLI reads (not a workflow stage, so not in seas.run.stages; tests/seas/models/test_tiny_prior.py
#: checks it reads nothing else)
CONFIG_KEYS = ("seed", "dataset.demo", "model.resolution")

PRIOR_PROMPT = "a object"
CAPTION_DROPOUT = 0.1
#: the recipe of the committed prior (priors/tiny_prior.safetensors); --vae-steps / --unet-steps override it
DEFAULT_RECIPE = {
    "vae_steps": 300, "vae_batch": 8, "vae_crop": 64, "vae_lr": 1.0e-3, "kl_weight": 1.0e-6, "grad_weight": 1.0,
    "unet_steps": 700, "unet_batch": 8, "unet_crop": 16, "unet_crop_steps": 550, "unet_lr": 1.0e-3, "warmup": 50,
    "product_captions": 0.5, "caption_suffixes": 0.5,
}
#: the argparse type of each recipe option (--vae-steps ...): step numbers, batches and crops >= 1, learning rates > 0,
#: loss weights >= 0, caption probabilities in [0, 1]
RECIPE_TYPES = {
    "vae_steps": positive_int, "vae_batch": positive_int, "vae_crop": positive_int, "vae_lr": positive_float,
    "kl_weight": nonneg_float, "grad_weight": nonneg_float, "unet_steps": positive_int, "unet_batch": positive_int,
    "unet_crop": positive_int, "unet_crop_steps": nonneg_int, "unet_lr": positive_float, "warmup": nonneg_int,
    "product_captions": unit_float, "caption_suffixes": unit_float,
}
#: ``product_captions`` p > 0: each U-Net sample is captioned ``a <product name>`` (PRODUCT_PROMPT) with probability
#: p instead of the generic prompt -- the class words SD's own pretraining knows -- so the U-Net learns to read the
#: text (a generic-only prior has no reason to: the generator's tokens then steer a mixture of the products)
PRODUCT_PROMPT = "a {product}"
#: ``caption_suffixes`` q > 0: with probability q a caption gets " with " + 1-4 of these neutral words (one of
#: :data:`NUM_SUFFIXES` seeded draws per subject), so captions vary in length like SD's and the U-Net learns that
#: later words do not change the product -- SeaS's prompt ``a <ob> with <df1>..<df4>`` is 7 tokens long, and a
#: prior that saw only 2-token captions reads its trailing tokens as an arbitrary product (measured: README)
SUFFIX_WORDS = ("texture", "surface", "pattern", "detail", "light", "shadow", "color", "material")
NUM_SUFFIXES = 16

__all__ = ["PRIOR_PROMPT", "DEFAULT_RECIPE", "prior_configs", "dihedral", "training_images", "vae_loss",
           "train_vae", "latent_scaling_factor", "train_unet", "pretrain", "main"]


# ----------------------------------------------------------------------------- architecture
def prior_configs(sample_size: int = 128) -> dict:
    """Configs of the pretrained tiny model: SD v1-4's blocks at CPU widths, x4 VAE (latent = image / 4)."""

    base = tiny_configs(sample_size)
    return {
        "unet": dict(base["unet"], sample_size=sample_size // 4, block_out_channels=(32, 64, 64, 64),
                     cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8),
        "vae": dict(base["vae"], down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                    block_out_channels=(16, 32, 64), layers_per_block=1, norm_num_groups=8),
        "text_encoder": dict(base["text_encoder"]),
        "scheduler": dict(base["scheduler"]),
    }


# ----------------------------------------------------------------------------- data
def dihedral(x, k: int):
    """The k-th of the 8 flips/rotations by 90 degrees of [..., H, W] tensors (k in 0..7)."""
    import torch

    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


def training_images(demo: Mapping, size: int):
    """The normal training images (``train/good``) of every demo product, rendered exactly as seas.data.demo_data
    writes them, as a float tensor [N,3,size,size] in [-1, 1], and their names (product/file)."""
    import torch


    keys = ("seed", "image_size", "num_train_good", "num_test_good", "num_per_type")
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_demo_dataset(Path(tmp) / "demo", **{k: demo[k] for k in keys})
        files = sorted(root.glob("*/train/good/*.png"))
        imgs = torch.stack([image_to_tensor(load_image(p, size, "shorter_side_center_crop")) for p in files])
        names = [f"{p.parts[-4]}/{p.name}" for p in files]
    return imgs, names


# ----------------------------------------------------------------------------- VAE
def vae_loss(recon, target, mean, logvar, kl_weight: float, grad_weight: float):
    """(total, parts) for one VAE batch: L1 + grad_weight * L1 of horizontal/vertical differences + kl_weight * KL
    (KL of N(mean, exp(logvar)) to N(0, I), summed over latent elements, averaged over the batch)."""

    l1 = (recon - target).abs().mean()
    dx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    dy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    grad = (dx(recon) - dx(target)).abs().mean() + (dy(recon) - dy(target)).abs().mean()
    kl = 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).flatten(1).sum(1).mean()
    total = l1 + grad_weight * grad + kl_weight * kl
    return total, {"l1": float(l1.detach()), "grad": float(grad.detach()), "kl": float(kl.detach())}


def _batch(images, idx, gen, crop: int = 0):
    """Images ``idx`` under random flips/rotations, cut to random ``crop`` x ``crop`` windows when crop > 0."""
    import torch

    ks = torch.randint(0, 8, (len(idx),), generator=gen)
    out = torch.stack([dihedral(images[i], int(k)) for i, k in zip(idx, ks)])
    h, w = out.shape[-2:]
    if 0 < crop < min(h, w):
        ys = torch.randint(0, h - crop + 1, (len(idx),), generator=gen).tolist()
        xs = torch.randint(0, w - crop + 1, (len(idx),), generator=gen).tolist()
        out = torch.stack([o[:, y:y + crop, x:x + crop] for o, y, x in zip(out, ys, xs)])
    return out


def _strokes(x, gen, prob: float):
    """Random synthetic strokes (1-3 line segments, 1-4 px wide, random colour) drawn on each image of ``x`` with
    probability ``prob``: generic content a VAE trained on normals alone never sees (an experiment of
    benchmarks/prior_limits.py; not the committed recipe)."""
    import torch

    h, w = x.shape[-2:]
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    out = x.clone()
    for i in range(x.shape[0]):
        if float(torch.rand(1, generator=gen)) >= prob:
            continue
        for _ in range(int(torch.randint(1, 4, (1,), generator=gen))):
            y0, x0 = float(torch.rand(1, generator=gen)) * h, float(torch.rand(1, generator=gen)) * w
            ang = float(torch.rand(1, generator=gen)) * math.pi
            length = (0.2 + 0.8 * float(torch.rand(1, generator=gen))) * min(h, w)
            width = 1.0 + 3.0 * float(torch.rand(1, generator=gen))
            colour = torch.rand(3, generator=gen) * 2 - 1
            dy, dx = math.sin(ang), math.cos(ang)
            t = ((yy - y0) * dy + (xx - x0) * dx).clamp(0, length)
            dist = torch.hypot(yy - (y0 + t * dy), xx - (x0 + t * dx))
            m = (dist <= width / 2).to(out.device)
            out[i] = torch.where(m, colour.view(3, 1, 1).to(out.device), out[i])
    return out


def _optimizer_step(module, opt, sched, loss) -> None:
    """One step of the prior's two trainings: backward, gradient norm clipped to 1, AdamW, the LR schedule."""
    import torch

    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
    opt.step()
    sched.step()


def _log_every(steps: int) -> int:
    return max(1, steps // 20)


def train_vae(vae, images, *, steps: int, batch: int, lr: float, kl_weight: float, grad_weight: float, seed: int,
              crop: int = 0, history: list | None = None, ckpt: "Resumable | None" = None, strokes: float = 0.0):
    """Train ``vae`` in place on ``images`` ([N,3,H,W] in [-1,1]) with random flips/rotations (and random
    ``crop``-pixel windows: a convolutional autoencoder, cheaper on crops); returns ``vae`` (None: ``ckpt`` asked to
    stop early, the state saved). ``ckpt`` (:class:`Resumable`): continue an interrupted run, checkpoint, progress."""
    import torch

    gen = torch.Generator().manual_seed(derive_seed(seed, "prior", "vae"))
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    start = ckpt.restore("vae", vae, opt, sched, gen) if ckpt is not None else 0
    dev = images.device
    vae.train()
    for step in range(start, steps):
        idx = torch.randint(0, images.shape[0], (batch,), generator=gen).tolist()
        x = _batch(images, idx, gen, crop)
        if strokes > 0:
            x = _strokes(x, gen, strokes)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen).to(dev)
        recon = vae.decode(z).sample
        loss, parts = vae_loss(recon, x, post.mean, post.logvar, kl_weight, grad_weight)
        _optimizer_step(vae, opt, sched, loss)
        if history is not None and (step % _log_every(steps) == 0 or step == steps - 1):
            history.append({"phase": "vae", "step": step + 1, "loss": float(loss.detach()), **parts})
            log.info("vae step %d/%d  loss %.4f  l1 %.4f  grad %.4f  kl %.1f", step + 1, steps, float(loss.detach()),
                     parts["l1"], parts["grad"], parts["kl"])
        if ckpt is not None and ckpt.step_done("vae", step + 1, steps, vae, opt, sched, gen):
            return None
    vae.eval()
    return vae


def latent_scaling_factor(latents) -> float:
    """1 / std of the (unscaled) training latents, rounded to 5 digits: SD's rule for its 0.18215."""
    return round(float(1.0 / latents.float().std()), 5)


SD_SCALING_FACTOR = 0.18215


def rescale_latent_space(vae, factor: float) -> None:
    """Reparametrise ``vae``'s latent space z -> factor * z, exactly: the posterior mean (quant_conv's first half)
    times ``factor``, its log-variance plus 2 ln(factor), and post_quant_conv's weights divided by ``factor``, so
    decode(encode(x)) is unchanged. Used to give the prior SD v1-4's latent scale (unscaled std 1 / 0.18215), so
    generation's start x_T = a * z_unscaled + b * eps keeps the reference signal it has with SD."""
    import torch

    c = float(factor)
    half = vae.quant_conv.out_channels // 2
    with torch.no_grad():
        vae.quant_conv.weight[:half] *= c
        vae.quant_conv.bias[:half] *= c
        vae.quant_conv.bias[half:] += 2.0 * math.log(c)
        vae.post_quant_conv.weight /= c


# ----------------------------------------------------------------------------- U-Net
def train_unet(unet, latents, cond, uncond, noise_scheduler, *, steps: int, batch: int, lr: float, warmup: int,
               seed: int, crop: int = 0, crop_steps: int = 0, caption_dropout: float = CAPTION_DROPOUT,
               history: list | None = None, cond_bank=None, subject_of=None, product_prob: float = 0.0,
               suffix_prob: float = 0.0, ckpt: "Resumable | None" = None):
    """Epsilon-prediction training of ``unet`` in place on scaled ``latents`` [N,4,h,w] (each
    batch flips/rotates them) with text embedding ``cond`` ([1,77,D]) and, with probability
    ``caption_dropout``, ``uncond`` (the empty prompt); returns ``unet``. The first ``crop_steps`` steps see random
    ``crop`` x ``crop`` latent windows at twice the batch (a fully convolutional U-Net: local texture at a quarter
    of the cost), the rest whole latents. ``cond_bank`` ([S,V,77,D]: subject 0 = the generic prompt, then one per
    product; variant 0 = no suffix) with ``subject_of`` ([N], each latent's product subject) varies the captions:
    the product's subject with probability ``product_prob``, a random suffixed variant with probability
    ``suffix_prob`` (drawn only when a probability is > 0: the generic-only recipe's random stream is unchanged).
    ``ckpt`` (:class:`Resumable`): continue an interrupted run, checkpoint, progress (None returned: stopped early)."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(derive_seed(seed, "prior", "unet"))
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(warmup, 1)) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    n_t = noise_scheduler.config.num_train_timesteps
    start = ckpt.restore("unet", unet, opt, sched, gen) if ckpt is not None else 0
    dev = latents.device
    unet.train()
    for step in range(start, steps):
        cropped = step < crop_steps and 0 < crop < latents.shape[-1]
        b = 2 * batch if cropped else batch
        idx = torch.randint(0, latents.shape[0], (b,), generator=gen)
        x0 = _batch(latents, idx.tolist(), gen, crop if cropped else 0)
        noise = torch.randn(x0.shape, generator=gen).to(dev)
        t = torch.randint(0, n_t, (b,), generator=gen).to(dev)
        drop = (torch.rand(b, generator=gen) < caption_dropout).view(-1, 1, 1).to(dev)
        ctx = cond.expand(b, -1, -1)
        if cond_bank is not None and (product_prob > 0 or suffix_prob > 0):
            subj = torch.where(torch.rand(b, generator=gen) < product_prob, subject_of[idx], 0)
            var = torch.randint(1, cond_bank.shape[1], (b,), generator=gen)
            var = torch.where(torch.rand(b, generator=gen) < suffix_prob, var, 0)
            ctx = cond_bank[subj, var]
        ctx = torch.where(drop, uncond.expand(b, -1, -1), ctx)
        xt = noise_scheduler.add_noise(x0, noise, t)
        pred = unet(xt, t, encoder_hidden_states=ctx, return_dict=False)[0]
        loss = F.mse_loss(pred, noise)
        _optimizer_step(unet, opt, sched, loss)
        if history is not None and (step % _log_every(steps) == 0 or step == steps - 1):
            history.append({"phase": "unet", "step": step + 1, "loss": float(loss.detach())})
            log.info("unet step %d/%d  loss %.4f", step + 1, steps, float(loss.detach()))
        if ckpt is not None and ckpt.step_done("unet", step + 1, steps, unet, opt, sched, gen):
            return None
    unet.eval()
    return unet


# ----------------------------------------------------------------------------- the whole prior
def caption_bank(products: Sequence[str], seed: int) -> list[list[str]]:
    """The prior's captions: row 0 the generic subject (PRIOR_PROMPT), then one row per product ("a washer"); column
    0 the bare caption, then NUM_SUFFIXES seeded variants "<caption> with <1-4 of SUFFIX_WORDS>"."""
    rng = np.random.default_rng(derive_seed(seed, "prior", "captions"))
    rows = []
    for base in [PRIOR_PROMPT] + [PRODUCT_PROMPT.format(product=p) for p in products]:
        words = [rng.choice(SUFFIX_WORDS, size=rng.integers(1, 5), replace=False) for _ in range(NUM_SUFFIXES)]
        rows.append([base] + [f"{base} with {' '.join(w)}" for w in words])
    return rows


def _recipe(overrides: Mapping | None) -> dict:
    r = dict(DEFAULT_RECIPE)
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if k not in r:
            raise ConfigError(f"tiny prior recipe: unknown key {k!r} (known: {', '.join(r)})")
        r[k] = type(r[k])(v)
    return r


class Resumable:
    """The prior training's resumable state (seas.run.resume): ``<work>/state.pt`` holds the phase (``vae``,
    ``vae_done``, ``unet``), its step, the module / optimizer / LR schedule / random generator states, the loss
    history and the fingerprint it was computed under, saved every ``every`` steps (atomically) and when
    ``stop_after`` steps of this call are done (then training stops: the test-only early exit). A tqdm bar counts
    the steps of both phases. A rerun under another fingerprint is refused (StaleStateError)."""

    def __init__(self, work: Path | None, fingerprint: Mapping, total: int, every: int = 100,
                 stop_after: int | None = None, desc: str = "prior"):
        from tqdm import tqdm

        self.work, self.fp, self.every, self.stop_after = work, dict(fingerprint), max(1, int(every)), stop_after
        self.state = self._load() if work is not None else None
        self.history: list = list(self.state["history"]) if self.state else []
        self.done_here = 0
        self.extra: dict = dict(self.state.get("extra", {})) if self.state else {}
        self.carry: dict = {}  # name -> module whose state every checkpoint also holds (the finished VAE)
        self.bar = tqdm(total=total, desc=desc, unit="step", leave=False)

    @property
    def file(self) -> Path:
        return Path(self.work) / "state.pt"

    def _load(self) -> dict | None:
        import torch

        from seas.run.resume import check_fingerprint

        if not self.file.is_file():
            return None
        state = torch.load(self.file, map_location="cpu", weights_only=False)
        check_fingerprint(self.work, json.loads(state["fingerprint"]), self.fp)
        log.info("resuming the prior's training: phase %s, step %d (%s)", state["phase"], state["step"], self.work)
        return state

    @property
    def phase(self) -> str | None:
        return self.state["phase"] if self.state else None

    def restore(self, phase: str, module, opt, sched, gen) -> int:
        """Load the saved state of ``phase`` into the objects; the step to continue from (0: none saved)."""
        base = self.extra.get("vae_steps", 0) if phase == "unet" else 0
        step = 0
        if self.state and self.state["phase"] == phase:
            module.load_state_dict(self.state["module"])
            opt.load_state_dict(self.state["opt"])
            sched.load_state_dict(self.state["sched"])
            gen.set_state(self.state["gen"])
            step = int(self.state["step"])
        self.bar.update(max(0, base + step - self.bar.n))
        return step

    def save(self, phase: str, step: int, module, opt=None, sched=None, gen=None) -> None:
        import io

        import torch

        from seas.run.runtime import atomic_write_bytes

        if self.work is None:
            return
        payload = {"phase": phase, "step": step, "module": module.state_dict(),
                   "opt": opt.state_dict() if opt is not None else None,
                   "sched": sched.state_dict() if sched is not None else None,
                   "gen": gen.get_state() if gen is not None else None,
                   "history": self.history, "extra": self.extra, "fingerprint": json.dumps(self.fp, default=str),
                   **{name: m.state_dict() for name, m in self.carry.items()}}
        buf = io.BytesIO()
        torch.save(payload, buf)
        Path(self.work).mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.file, buf.getvalue())

    def step_done(self, phase: str, step: int, steps: int, module, opt, sched, gen) -> bool:
        """After each optimizer step: progress, periodic checkpoint; True = stop now (state saved)."""
        self.bar.update(1)
        self.done_here += 1
        stop = self.stop_after is not None and self.done_here >= self.stop_after and step < steps
        if stop or (step % self.every == 0 and step < steps):
            self.save(phase, step, module, opt, sched, gen)
        return stop

    def close(self) -> None:
        self.bar.close()


def pretrain(demo: Mapping, resolution: int, seed: int = 0, recipe: Mapping | None = None):
    """Build and pretrain the tiny model on the demo's normal training images -> (state dict {vae.*, unet.*,
    text_encoder.*}, manifest dict)."""
    images, names = training_images(demo, resolution)
    data = {"demo": {k: demo[k] for k in sorted(demo)}, "images": names, "augmentation": "8 flips/rotations"}
    return pretrain_images(images, names, resolution, seed, recipe, data=data)


def pretrain_images(images, names: Sequence[str], resolution: int, seed: int = 0, recipe: Mapping | None = None,
                    data: Mapping | None = None, ckpt: Resumable | None = None, device=None):
    """Build and pretrain the tiny model on ``images`` ([N,3,R,R] in [-1,1]; ``names`` ``product/file``, the
    product giving each image's caption) -> (state dict, manifest dict with ``data`` as what it saw), or None
    when ``ckpt`` stopped early (its state saved: a rerun continues, bit-identically on the same machine)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    r = _recipe(recipe)
    cfgs = prior_configs(resolution)
    device = torch.device(device or "cpu")
    t_cpu, t_wall = time.process_time(), time.perf_counter()
    log.info("prior training set: %d normal images (%s), %d px, x8 flips/rotations", len(names),
             ", ".join(sorted({n.split('/')[0] for n in names})), resolution)
    images = images.to(device)
    torch.manual_seed(derive_seed(seed, "prior", "init"))
    vae = AutoencoderKL(**cfgs["vae"]).to(device)
    unet = UNet2DConditionModel(**cfgs["unet"]).to(device)
    text_encoder = CLIPTextModel(CLIPTextConfig(**cfgs["text_encoder"])).eval().requires_grad_(False).to(device)
    history: list = ckpt.history if ckpt is not None else []
    if ckpt is not None:
        ckpt.extra["vae_steps"] = r["vae_steps"]
    if ckpt is not None and ckpt.phase in ("vae_done", "unet"):
        vae_state = ckpt.state["vae"] if ckpt.phase == "unet" else ckpt.state["module"]
        vae.load_state_dict(vae_state)
        vae.eval()
        ckpt.bar.update(r["vae_steps"] - ckpt.bar.n)
        recon_l1, rescale = ckpt.extra["recon_l1"], ckpt.extra["rescale"]
        t_vae = 0.0
    else:
        if train_vae(vae, images, steps=r["vae_steps"], batch=r["vae_batch"], lr=r["vae_lr"],
                     kl_weight=r["kl_weight"], grad_weight=r["grad_weight"], seed=seed, crop=r["vae_crop"],
                     history=history, ckpt=ckpt) is None:
            return None
        t_vae = time.process_time() - t_cpu
        with torch.no_grad():  # the latents of the images as they are (the U-Net's batches flip/rotate them)
            means = torch.cat([vae.encode(images[i:i + 16]).latent_dist.mean for i in range(0, len(images), 16)])
            recon = torch.cat([vae.decode(means[i:i + 16]).sample for i in range(0, len(images), 16)])
            recon_l1 = float((recon.clamp(-1, 1) - images).abs().mean())
        # SD v1-4's latent scale: 1 / std of the training latents = 0.18215 after an exact reparametrisation
        rescale = (1.0 / SD_SCALING_FACTOR) / float(means.float().std())
        rescale_latent_space(vae, rescale)
        if ckpt is not None:
            ckpt.extra.update(recon_l1=recon_l1, rescale=rescale)
            ckpt.save("vae_done", r["vae_steps"], vae)
    vae.requires_grad_(False)
    with torch.no_grad():
        means = torch.cat([vae.encode(images[i:i + 16]).latent_dist.mean for i in range(0, len(images), 16)])
    sf = SD_SCALING_FACTOR
    vae.register_to_config(scaling_factor=sf)
    cfgs["vae"]["scaling_factor"] = sf
    log.info("VAE: reconstruction L1 %.4f (images in [-1,1]); latents x%.4f -> scaling factor %.5f (SD's; measured "
             "1/std %.5f)", recon_l1, rescale, sf, latent_scaling_factor(means))
    with tempfile.TemporaryDirectory() as tmp:
        tok = make_clip_tokenizer(Path(tmp))
        products = sorted({n.split("/")[0] for n in names})
        bank = caption_bank(products, seed)
        prompts = [PRIOR_PROMPT, ""] + [c for row in bank for c in row]
        ids = tok(prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        with torch.no_grad():
            emb = text_encoder(ids.input_ids.to(device))[0]
    cond, uncond = emb[:1], emb[1:2]
    cond_bank = emb[2:].reshape(len(bank), len(bank[0]), *emb.shape[1:])
    subject_of = torch.tensor([1 + products.index(n.split("/")[0]) for n in names])
    noise_scheduler = DDPMScheduler(**{k: v for k, v in cfgs["scheduler"].items()
                                       if k not in ("set_alpha_to_one", "skip_prk_steps")})
    if ckpt is not None:  # the U-Net phase's checkpoints carry the finished VAE
        ckpt.carry["vae"] = vae
    if train_unet(unet, means * sf, cond, uncond, noise_scheduler, steps=r["unet_steps"], batch=r["unet_batch"],
                  lr=r["unet_lr"], warmup=r["warmup"], seed=seed, crop=r["unet_crop"],
                  crop_steps=r["unet_crop_steps"], history=history, cond_bank=cond_bank, subject_of=subject_of,
                  product_prob=r["product_captions"], suffix_prob=r["caption_suffixes"], ckpt=ckpt) is None:
        return None
    state = {}
    for prefix, m in (("vae", vae), ("unet", unet), ("text_encoder", text_encoder)):
        state.update({f"{prefix}.{k}": v.detach().cpu().contiguous() for k, v in m.state_dict().items()})
    manifest = {
        "version": PRIOR_VERSION, "seed": int(seed), "resolution": int(resolution), "prompt": PRIOR_PROMPT,
        "caption_dropout": CAPTION_DROPOUT, "product_prompt": PRODUCT_PROMPT if r["product_captions"] else None,
        "captions": bank if (r["product_captions"] or r["caption_suffixes"]) else None,
        "recipe": r, "configs": cfgs,
        "data": dict(data) if data is not None else {"images": list(names), "augmentation": "8 flips/rotations"},
        "vae_recon_l1": recon_l1, "latent_rescale": rescale, "history": history,
        "parameters": {p: int(sum(v.numel() for k, v in state.items() if k.startswith(p + ".")))
                       for p in ("vae", "unet", "text_encoder")},
        "cpu_seconds": {"vae": round(t_vae, 1), "total": round(time.process_time() - t_cpu, 1)},
        "wall_seconds": round(time.perf_counter() - t_wall, 1), "torch_threads": torch.get_num_threads(),
    }
    if ckpt is not None and ckpt.state is not None:
        manifest["resumed_from"] = {"phase": ckpt.state["phase"], "step": int(ckpt.state["step"])}
    return state, manifest


# ----------------------------------------------------------------------------- CLI
@cli
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m seas.models.tiny_prior", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="weights file to write (.safetensors; the manifest goes next to it)")
    add_config_arguments(ap, required=False, help="run configuration: seed, dataset.demo, model.resolution")
    ap.add_argument("--seed", type=nonneg_int, default=None, help="seed (default: the config's seed, or 0)")
    for k, v in DEFAULT_RECIPE.items():
        ap.add_argument("--" + k.replace("_", "-"), type=RECIPE_TYPES[k], default=None, help=f"recipe (default {v})")
    ap.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (determinism: same seed + same "
                    "threads -> same weights)")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = optional_config_from_args(args)
    if cfg is not None:
        seed, demo, res = cfg["seed"], cfg["dataset"]["demo"], cfg["model"]["resolution"]
    else:
        seed, demo, res = 0, schema_default("dataset.demo"), 128
    seed = seed if args.seed is None else args.seed
    recipe = {k: getattr(args, k) for k in DEFAULT_RECIPE}
    state, manifest = pretrain(demo, res, seed, recipe)
    out = write_prior(state, manifest, args.out)
    log.info("wrote %s (%.1f MB, sha256 %s) in %.0f CPU-s", out, out.stat().st_size / 1e6,
             read_prior_manifest(out)["sha256"][:12], manifest["cpu_seconds"]["total"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

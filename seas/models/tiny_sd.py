"""A tiny Stable-Diffusion-shaped model in the diffusers layout: random weights, or a pretrained prior.

It has SD v1-4's structure — a U-Net with 3 CrossAttnDownBlock2D + DownBlock2D / UpBlock2D + 3
CrossAttnUpBlock2D (2 layers per block, so 2 cross-attention layers per down resolution), a VAE with 4
levels (×8 downsampling, 4 latent channels, scaling factor 0.18215), a CLIP text encoder with 77
positions and the real 49,408-token CLIP BPE tokenizer — at a few hundred thousand parameters, so the
whole pipeline runs on a CPU. With random weights whatever it generates is noise-level output (tables:
``tiny-random (not SD v1-4)``). With ``--prior`` (``model.tiny_prior``: a weights file of :mod:`seas.models.tiny_prior`,
hash-checked) the folder is assembled from that pretrained prior, whose architecture (same blocks, its own widths,
a x4 VAE) comes from the prior's manifest (tables: ``tiny-pretrained``). ``seas_tiny.json`` marks the folder and
says which (``weights: random | pretrained``).

    python -m seas.models.tiny_sd --out resources/tiny_sd [--seed 0]                                 # random
    python -m seas.models.tiny_sd --out resources/tiny_sd --prior priors/tiny_prior.safetensors      # pretrained

The result loads through exactly the code that loads ``CompVis/stable-diffusion-v1-4``
(:func:`seas.models.sd.load_sd`).
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Sequence

from seas.run.cli_types import int_at_least, nonneg_int
from seas.run.config import add_config_arguments, optional_config_from_args
from seas.run.errors import CheckpointError
from seas.models.clip_vocab import make_clip_tokenizer
from seas.models.prior_choice import AUTO, DEMO_PRIOR, OWN_SOURCE, prior_products
from seas.models.prior_file import load_prior_state, read_prior_manifest
from seas.run.runtime import atomic_dir, cli, setup_logging
from seas.run.stages import STAGES
# Lazy imports: torch / diffusers / transformers are imported inside the functions that build the model (heavy).

log = logging.getLogger(__name__)

#: the config keys this stage reads: declared once, in the stage registry (seas.run.stages)
CONFIG_KEYS = STAGES["tiny_sd"].config_keys

TINY_MARKER = "seas_tiny.json"
def tiny_configs(sample_size: int = 64) -> dict:
    """Configs of the tiny components (``sample_size`` is the image side the VAE is declared for)."""
    return {
        "unet": dict(
            sample_size=sample_size // 8,
            in_channels=4,
            out_channels=4,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            block_out_channels=(32, 64, 64, 64),
            layers_per_block=2,
            cross_attention_dim=32,
            attention_head_dim=4,
            norm_num_groups=8,
        ),
        "vae": dict(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(16, 32, 32, 32),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=8,
            sample_size=sample_size,
            scaling_factor=0.18215,
        ),
        "text_encoder": dict(
            vocab_size=49408,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            hidden_act="quick_gelu",
            bos_token_id=49406,
            eos_token_id=49407,
            pad_token_id=49407,
        ),
        # SD v1-4's scheduler/ folder (a PNDM config; training reads it as DDPM)
        "scheduler": dict(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            num_train_timesteps=1000,
            set_alpha_to_one=False,
            skip_prk_steps=True,
            steps_offset=1,
            prediction_type="epsilon",
        ),
    }


def read_marker(model_dir: str | Path) -> dict | None:
    """The ``seas_tiny.json`` marker of a model folder, or None (not a tiny model)."""
    f = Path(model_dir) / TINY_MARKER
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{f} is not valid JSON: {e}") from None


def _marker(seed: int, sample_size: int, prior: str | Path | None) -> dict:
    if prior is None:
        return {"tiny": True, "weights": "random", "seed": seed, "sample_size": sample_size, "version": 3,
                "note": "random weights with Stable Diffusion v1-4's structure; NOT Stable Diffusion. "
                        "Results are tiny-model numbers."}
    m = read_prior_manifest(prior)  # checks the file's sha256
    data = prior_data(m)
    what = ("the run's own normal training images (seas.models.train_prior)" if data["source"] == OWN_SOURCE
            else "the demo's normal training images (seas.models.tiny_prior)")
    return {"tiny": True, "weights": "pretrained", "prior": Path(prior).name, "prior_sha256": m["sha256"],
            "seed": m["seed"], "sample_size": m["resolution"], "version": 3, "prior_data": data,
            "note": f"Stable Diffusion v1-4's structure at CPU widths, pretrained on {what}; NOT Stable Diffusion. "
                    "Results are tiny-model numbers."}


def prior_data(manifest: dict) -> dict:
    """What a prior saw, as the model folder's marker keeps it (``prior_data``: the tables' label and their check
    of the run's products, seas.run.labels.prior_label / seas.models.prior_choice.unseen_products): ``source``
    (``demo`` or ``train_prior``), ``images`` (how many), ``products``, and the demo parameters or the images'
    sha256 it was made from."""
    data = manifest.get("data") or {}
    out = {"source": data.get("source", "demo" if "demo" in data else "unknown"),
           "images": len(data.get("images", [])), "products": prior_products(manifest)}
    for k in ("demo", "sha256"):
        if k in data:
            out[k] = data[k]
    return out


def write_tiny_sd(out_dir: str | Path, seed: int = 0, sample_size: int = 64, prior: str | Path | None = None) -> Path:
    """Write the tiny model to ``out_dir`` (atomically; an existing tiny model with the same marker is kept).

    ``prior``: a weights file of :mod:`seas.models.tiny_prior` (its manifest next to it; the sha256 is checked): the
    model is assembled from it (architecture from the manifest, ``seed``/``sample_size`` from the prior) and marked
    ``weights: pretrained``; None: random weights from ``seed`` (:func:`tiny_configs`), marked ``weights: random``.
    """
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    out_dir = Path(out_dir)
    marker = _marker(seed, sample_size, prior)
    if read_marker(out_dir) == marker:
        log.info("tiny model already at %s", out_dir)
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / TINY_MARKER).is_file():
        raise CheckpointError(f"{out_dir} exists and is not a tiny model folder; refusing to overwrite it")

    if prior is None:
        cfgs = tiny_configs(sample_size)
    else:
        cfgs = read_prior_manifest(prior)["configs"]
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**cfgs["unet"])
    vae = AutoencoderKL(**cfgs["vae"])
    text_encoder = CLIPTextModel(CLIPTextConfig(**cfgs["text_encoder"]))
    scheduler = PNDMScheduler(**cfgs["scheduler"])
    if prior is not None:

        for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text_encoder)):
            state = {k: v.float() for k, v in load_prior_state(prior, name).items()}
            missing, unexpected = module.load_state_dict(state, strict=False)
            if missing or [k for k in unexpected if not k.endswith("position_ids")]:
                raise CheckpointError(f"{prior}: {name} weights do not fit its config (missing {missing[:3]}, "
                                      f"unexpected {unexpected[:3]})")
    with atomic_dir(out_dir) as tmp:
        tokenizer = make_clip_tokenizer(tmp / "_bpe")
        pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                       scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                       requires_safety_checker=False)
        pipe.save_pretrained(tmp, safe_serialization=True)
        for f in (tmp / "_bpe").iterdir():
            f.unlink()
        (tmp / "_bpe").rmdir()
        (tmp / TINY_MARKER).write_text(json.dumps(marker, indent=1))
    n = sum(p.numel() for m in (unet, vae, text_encoder) for p in m.parameters())
    log.info("wrote tiny SD-shaped model (%.2fM parameters, %s weights) to %s", n / 1e6, marker["weights"], out_dir)
    return out_dir


@cli
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m seas.models.tiny_sd", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (diffusers layout)")
    add_config_arguments(ap, required=False, help="run configuration: seed and model.resolution (the workflow)")
    ap.add_argument("--seed", type=nonneg_int, default=None, help="weight initialisation seed (default: seed, or 0)")
    ap.add_argument("--prior", default=None, help="pretrained prior weights (python -m seas.models.tiny_prior or the "
                    "stage train_prior; default: model.tiny_prior with --config (auto: the committed demo prior "
                    "where it covers the run), else none = random weights)")
    ap.add_argument("--sample-size", type=int_at_least(8), default=None,
                    help="image side the VAE config declares (default: model.resolution, or 64)")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    seed, size, prior = 0, 64, None
    cfg = optional_config_from_args(args)
    if cfg is not None:
        seed, size, prior = cfg["seed"], cfg["model"]["resolution"], cfg["model"]["tiny_prior"]
        if prior == AUTO and args.prior is None:
            raise CheckpointError(f"model.tiny_prior: auto is decided by the workflow (seas.models.prior_choice: the "
                                  f"committed {DEMO_PRIOR.name} where it covers the run, else the prior of the stage "
                                  f"train_prior); run on its own, pass the prior with --prior FILE")
    write_tiny_sd(args.out, seed=seed if args.seed is None else args.seed,
                  sample_size=size if args.sample_size is None else args.sample_size,
                  prior=args.prior if args.prior is not None else prior)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Loading a Stable Diffusion v1.x model: the one loader every stage uses.

``pretrained`` is exactly what users pass: a local diffusers folder (``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, ``scheduler/``, ``model_index.json``) or a hub id such as
``CompVis/stable-diffusion-v1-4`` (resolved through the Hugging Face cache; set ``HF_HUB_OFFLINE=1``
on machines without internet). The tiny random model of :mod:`seas.models.tiny_sd` loads through the same code.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seas.run.errors import CheckpointError
from seas.models.tiny_sd import TINY_MARKER, read_marker
from seas.run.labels import tiny_label
# Lazy imports: torch / diffusers / transformers are imported inside load_sd (heavy; this module's constants are read without them).

log = logging.getLogger(__name__)

SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


@dataclass
class SDComponents:
    tokenizer: Any
    text_encoder: Any
    vae: Any
    unet: Any
    noise_scheduler: Any  # DDPMScheduler configured from the model's scheduler/ folder
    is_tiny: bool
    source: str

    @property
    def label(self) -> str:
        """How tables name the generator model."""
        return model_label(self.source, self.is_tiny)


def is_tiny_model(pretrained: str | os.PathLike) -> bool:
    return (Path(pretrained) / TINY_MARKER).is_file()


def model_label(pretrained: str, tiny_flag: bool = False) -> str:
    """``tiny-pretrained`` / ``tiny-random (not SD v1-4)`` for a tiny model (its marker says which), else the source."""
    marker = read_marker(pretrained) if Path(str(pretrained)).is_dir() else None
    if marker is not None or tiny_flag:
        return tiny_label(marker)
    return str(pretrained)


def _check_local(path: Path) -> None:
    missing = [s for s in ("model_index.json",) + SUBFOLDERS if not (path / s).exists()]
    if missing:
        raise CheckpointError(
            f"model folder {path} is not a diffusers Stable Diffusion folder: missing {', '.join(missing)}"
        )


def load_sd(pretrained: str | os.PathLike, revision: str | None = None, device="cpu", dtype=None,
            local_files_only: bool | None = None) -> SDComponents:
    """Load tokenizer, text encoder, VAE, U-Net and the DDPM training scheduler of an SD v1.x model."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    dtype = dtype or torch.float32
    src = str(pretrained)
    local = Path(src).expanduser()
    if local.is_dir():
        _check_local(local)
        src = str(local)
        local_files_only = True if local_files_only is None else local_files_only
    elif local.exists() or src.startswith((".", "/", "~")) or src.count("/") != 1:
        raise CheckpointError(f"model.pretrained: {src!r} is neither a model folder nor a hub id like 'org/name'")
    kw = dict(revision=revision, local_files_only=bool(local_files_only))
    try:
        tokenizer = CLIPTokenizer.from_pretrained(src, subfolder="tokenizer", **kw)
        text_encoder = CLIPTextModel.from_pretrained(src, subfolder="text_encoder", **kw)
        vae = AutoencoderKL.from_pretrained(src, subfolder="vae", **kw)
        unet = UNet2DConditionModel.from_pretrained(src, subfolder="unet", **kw)
        noise_scheduler = DDPMScheduler.from_pretrained(src, subfolder="scheduler", **kw)
    except (OSError, ValueError, EnvironmentError) as e:
        hint = ("" if local.is_dir() else
                f" (No local folder {local} exists, so it was taken as a hub id.)"
                f" If this machine has no internet, download it elsewhere (e.g. `hf download {src}`) and set "
                "model.pretrained to that local folder, or pre-fill the Hugging Face cache and set HF_HUB_OFFLINE=1.")
        raise CheckpointError(f"cannot load Stable Diffusion model {src!r}: {e}.{hint}") from e
    for m in (text_encoder, vae, unet):
        m.to(device=device, dtype=dtype)
    tiny = local.is_dir() and (local / TINY_MARKER).is_file()
    if tiny:
        log.warning("model %s is a TINY model (%s weights): results are tiny-model numbers, not SD v1-4's", src,
                    (read_marker(local) or {}).get("weights", "random"))
    return SDComponents(tokenizer, text_encoder, vae, unet, noise_scheduler, tiny, src)


def model_info(pretrained: str | os.PathLike) -> dict:
    """Small JSON-able description of a model source, for manifests and checkpoints."""
    p = Path(pretrained)
    info = {"source": str(pretrained), "tiny": is_tiny_model(pretrained)}
    if info["tiny"]:
        info["tiny_marker"] = json.loads((p / TINY_MARKER).read_text())
    return info

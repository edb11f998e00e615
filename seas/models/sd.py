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


#: seconds the hub (through the environment's proxy, if any) is given to answer before a hub id is given up on
HUB_PROBE_TIMEOUT_S = 3.0
#: files of a hub model whose presence in the Hugging Face cache means it can load without the network
_CACHE_PROBES = ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json")
_TRUE = {"1", "on", "yes", "true"}


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) is set, now or when huggingface_hub was imported."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or any(
        os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _cached(repo_id: str, revision: str | None) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return all(isinstance(try_to_load_from_cache(repo_id, f, revision=revision), str) for f in _CACHE_PROBES)
    except Exception:  # noqa: BLE001 -- an invalid repo id, an unreadable cache: not usable offline
        return False


def hub_unreachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> str | None:
    """Why the model hub cannot be reached (one HTTP HEAD request to its endpoint, through the proxy the
    environment names, answered within ``timeout`` seconds; any HTTP status counts as an answer), or None when it
    can. Seconds, not the minutes of retries a download would take."""
    import threading
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    endpoint = constants.ENDPOINT.rstrip("/") + "/"
    result: list = []

    def ask() -> None:  # in a thread: the name lookup itself has no timeout (a resolver that never answers)
        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
            result.append(None)
        except urllib.error.HTTPError:  # an answer, if not a welcome one: the hub is there
            result.append(None)
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", e)
            result.append(f"{endpoint}: {getattr(reason, 'strerror', None) or reason}")

    probe = threading.Thread(target=ask, name="hub-probe", daemon=True)
    probe.start()
    probe.join(timeout)
    return result[0] if result else f"{endpoint} did not answer within {timeout:g} s"


def _hub_hint(src: str) -> str:
    return (f"download it on a machine with internet (e.g. `hf download {src} --local-dir DIR`) and set "
            "model.pretrained to that local folder (model_index.json, unet/, vae/, text_encoder/, tokenizer/, "
            "scheduler/: `model: {pretrained: DIR}` in the config file, `--set model.pretrained=DIR` on a CLI), or "
            "pre-fill the Hugging Face cache here and set HF_HUB_OFFLINE=1")


def _hub_local_only(src: str, revision: str | None, local_files_only: bool | None) -> bool:
    """``local_files_only`` for a hub id, decided in seconds: offline (HF_HUB_OFFLINE, or local files only) needs
    the model in the Hugging Face cache; online, an unreachable hub falls back on the cache or fails at once."""
    cached = _cached(src, revision)
    if local_files_only or hub_offline():
        if not cached:
            why = "HF_HUB_OFFLINE is set" if hub_offline() else "local files only were asked for"
            raise CheckpointError(f"model.pretrained: {src!r} is not a local folder, so it was taken as a hub id, but "
                                  f"{why} and the Hugging Face cache holds no copy of it: {_hub_hint(src)}")
        return True
    reason = hub_unreachable()
    if reason is None:
        return bool(local_files_only)
    if cached:
        log.warning("model hub unreachable (%s): loading %s from the Hugging Face cache", reason, src)
        return True
    raise CheckpointError(f"model.pretrained: {src!r} is not a local folder, so it was taken as a hub id, but the "
                          f"model hub cannot be reached ({reason}) and the Hugging Face cache holds no copy of it: "
                          f"{_hub_hint(src)}")


def load_sd(pretrained: str | os.PathLike, revision: str | None = None, device="cpu", dtype=None,
            local_files_only: bool | None = None) -> SDComponents:
    """Load tokenizer, text encoder, VAE, U-Net and the DDPM training scheduler of an SD v1.x model.

    A hub id (not a local folder) is decided on in seconds, before torch and diffusers are imported: offline
    (HF_HUB_OFFLINE) or with the hub unreachable, it loads from the Hugging Face cache or fails at once saying how to
    pass a local folder (never the minutes of download retries)."""
    src = str(pretrained)
    local = Path(src).expanduser()
    if local.is_dir():
        _check_local(local)
        src = str(local)
        local_files_only = True if local_files_only is None else local_files_only
    elif local.exists() or src.startswith((".", "/", "~")) or src.count("/") != 1:
        raise CheckpointError(f"model.pretrained: {src!r} is neither a model folder nor a hub id like 'org/name'")
    else:
        local_files_only = _hub_local_only(src, revision, local_files_only)  # seconds, not minutes of retries
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    dtype = dtype or torch.float32
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

"""The tiny prior's file: weights (``.safetensors``, float16) + manifest (``.json``: recipe, products, hash).
Read by the tiny-model builder (seas.models.tiny_sd), written by its trainer (seas.models.tiny_prior)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Mapping

from seas.run.errors import CheckpointError
from seas.run.runtime import atomic_write_bytes, atomic_write_text


PRIOR_VERSION = 1
def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


#: weights are stored in float16 (the file stays well under 20 MB) and loaded into float32 models
STORE_DTYPE_NAME = "float16"


def write_prior(state: Mapping, manifest: Mapping, out: str | Path) -> Path:
    """Write the weights (safetensors, atomically) then the manifest with their sha256."""
    from safetensors.torch import save

    out = Path(out)
    import torch

    half = {k: v.to(getattr(torch, STORE_DTYPE_NAME)) if v.is_floating_point() else v for k, v in state.items()}
    atomic_write_bytes(out, save(half, metadata={"format": "pt", "seas_tiny_prior": str(PRIOR_VERSION)}))
    m = dict(manifest, sha256=sha256_file(out), bytes=out.stat().st_size, weights=out.name, dtype=STORE_DTYPE_NAME)
    atomic_write_text(manifest_path(out), json.dumps(m, indent=1) + "\n")
    return out


def read_prior_manifest(weights: str | Path) -> dict:
    """The manifest of a prior weights file, after checking the file's sha256 against it."""
    weights = Path(weights)
    mpath = manifest_path(weights)
    if not weights.is_file():
        raise CheckpointError(f"model.tiny_prior: {weights} not found (regenerate it: python -m seas.models.tiny_prior "
                              f"--config config.yaml --out {weights})")
    if not mpath.is_file():
        raise CheckpointError(f"model.tiny_prior: {mpath} (the manifest of {weights.name}) not found")
    try:
        m = json.loads(mpath.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{mpath} is not valid JSON: {e}") from None
    got = sha256_file(weights)
    if got != m.get("sha256"):
        raise CheckpointError(f"{weights}: sha256 {got} does not match {mpath.name} ({m.get('sha256')}); the file is "
                              f"corrupt or was replaced (regenerate: python -m seas.models.tiny_prior --out {weights})")
    return m


def load_prior_state(weights: str | Path, component: str) -> dict:
    """The state dict of one component (vae, unet, text_encoder) of a prior weights file."""
    from safetensors.torch import load_file

    state = load_file(str(weights))
    pre = component + "."
    sub = {k[len(pre):]: v for k, v in state.items() if k.startswith(pre)}
    if not sub:
        raise CheckpointError(f"{weights}: no {component}.* weights")
    return sub

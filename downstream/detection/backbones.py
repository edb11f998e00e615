"""Offline ImageNet backbones of the detectors (``downstream.detector_backbones``). Pure Python at import (the
Snakefile calls :func:`check_detector_backbones` at parse time); torch only inside :func:`load_backbone_weights`.

Each value is a weights file path, or a bare torchvision file name looked up under ``$TORCH_HOME/hub/checkpoints``
(where ``torchvision.models.<name>(weights=...)`` keeps what it downloaded), or ``random`` (said explicitly: every
table row of the detector says ``random-init`` in ``backbone_init``); null (the default) with a detector that needs
the backbone configured is an error naming the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from seas.run.config import RANDOM_BACKBONE, torch_hub_checkpoints
from seas.run.errors import ConfigError

__all__ = ["DETECTOR_BACKBONES", "BACKBONE_OF", "resolve_detector_backbone", "check_detector_backbones",
           "backbone_label", "load_backbone_weights"]

#: downstream.detector_backbones key -> (torchvision file name, where it comes from)
DETECTOR_BACKBONES = {
    "wide_resnet50_2": ("wide_resnet50_2-95faca4d.pth",
                        "torchvision's ImageNet Wide-ResNet-50-2 (wide_resnet50_2(weights='IMAGENET1K_V1')): "
                        "https://download.pytorch.org/models/wide_resnet50_2-95faca4d.pth"),
    "resnet18": ("resnet18-f37072fd.pth",
                 "torchvision's ImageNet ResNet-18 (resnet18(weights='IMAGENET1K_V1')): "
                 "https://download.pytorch.org/models/resnet18-f37072fd.pth"),
}
#: detector -> the backbone it extracts features with (anomalib's defaults); DRAEM has none (trained from scratch)
BACKBONE_OF = {"patchcore": "wide_resnet50_2", "stfpm": "resnet18", "glass": "wide_resnet50_2"}


def resolve_detector_backbone(cfg: Mapping[str, Any], name: str) -> Path | None:
    """The weights file of ``downstream.detector_backbones.<name>``; None for ``random``. ConfigError naming the key
    and the file(s) looked for."""
    file_name, origin = DETECTOR_BACKBONES[name]
    key = f"downstream.detector_backbones.{name}"
    value = cfg["downstream"]["detector_backbones"][name]
    users = "/".join(d for d, b in BACKBONE_OF.items() if b == name)
    if value == RANDOM_BACKBONE:
        return None
    if value is None:
        raise ConfigError(f"{key} is not set but {users} uses it: give {file_name} ({origin}) as a path or a file "
                          f"name under {torch_hub_checkpoints()}, or `{RANDOM_BACKBONE}` for a random backbone")
    path = Path(str(value)).expanduser()
    if path.is_file():
        return path
    looked = [str(path)]
    if path.name == str(value):
        hub = torch_hub_checkpoints() / path.name
        if hub.is_file():
            return hub
        looked.append(str(hub))
    raise ConfigError(f"{key}: weights file {value} not found (looked for {' and '.join(looked)}); {users} expects "
                      f"{file_name}, {origin}. Put it there, give its path, or set `{RANDOM_BACKBONE}`")


def _detectors(cfg: Mapping[str, Any]) -> set[str]:
    return {d.removesuffix("_pairs") for d in cfg["downstream"]["detectors"]}


def check_detector_backbones(cfg: Mapping[str, Any], source: str = "<config>",
                             detectors: set[str] | None = None) -> dict[str, Path | None]:
    """Resolve the backbones of the configured detectors before any job runs (ConfigError naming ``source``)."""
    wanted = _detectors(cfg) if detectors is None else {d.removesuffix("_pairs") for d in detectors}
    out = {}
    for det in sorted(wanted):
        if det in BACKBONE_OF:
            try:
                out[BACKBONE_OF[det]] = resolve_detector_backbone(cfg, BACKBONE_OF[det])
            except ConfigError as e:
                raise ConfigError(f"{source}: {e}") from None
    return out


def backbone_label(path: Path | None) -> str:
    """``backbone_init`` of a detector row: ``pretrained:<file name>`` or ``random-init``."""
    return "random-init" if path is None else f"pretrained:{Path(path).name}"


def load_backbone_weights(module, path: Path) -> None:
    """Load a torchvision ResNet checkpoint into a timm ``features_only`` ResNet (same parameter names; the layers
    after the last extracted one and the classifier ``fc`` are dropped). A parameter of the network missing from
    the file, or of another shape, is an error naming the file."""
    import torch

    from seas.run.errors import CheckpointError

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for a bad file
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({e})") from None
    # a features_only network ends at its last extracted layer (PatchCore: layer3): the file's deeper layers and
    # its classifier are not part of it
    kept = {k.split(".", 1)[0] for k in module.state_dict()}
    state = {k: v for k, v in state.items() if k.split(".", 1)[0] in kept}
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a shape mismatch
        raise CheckpointError(f"{path}: does not fit the backbone ({str(e).splitlines()[-1].strip()})") from None
    if missing or unexpected:
        raise CheckpointError(f"{path}: does not fit the backbone (missing {sorted(missing)[:5]}, unexpected "
                              f"{sorted(unexpected)[:5]})")

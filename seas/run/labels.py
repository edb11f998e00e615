"""Labels: the method names of ``downstream.methods`` (their folder names and table labels) and the tiny model's
``generator_model`` labels. The one place both are defined: the layout, the tables and the Snakefile import them.
Pure Python."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from seas.run.errors import ConfigError


# ----------------------------------------------------------------------------- methods
BUILTIN_METHODS = ("seas", "real", "cutpaste", "draem")
BASELINE_METHODS = ("real", "cutpaste", "draem")
EXTERNAL_PREFIX = "external:"


def is_external(method: str) -> bool:
    return method.startswith(EXTERNAL_PREFIX)


def external_path(method: str) -> str:
    return method[len(EXTERNAL_PREFIX):]


def _external_base(method: str) -> str:
    base = Path(external_path(method).rstrip("/\\")).name
    if not base:
        raise ConfigError(f"downstream.methods: {method!r} has no folder name")
    return base


def method_dir(method: str) -> str:
    """Folder (and workflow wildcard) name of a method's outputs: built-ins keep their name,
    ``external:/data/ad/pairs`` -> ``external-pairs``."""
    return f"external-{_external_base(method)}" if is_external(method) else method


def method_label(method: str) -> str:
    """Table label: ``external:/data/ad/pairs`` -> ``external:pairs``; other methods unchanged."""
    return f"external:{_external_base(method)}" if is_external(method) else method


# ----------------------------------------------------------------------------- generator models
#: ``generator_model`` of a tiny model with random weights / one assembled from the pretrained prior
TINY_RANDOM_LABEL = "tiny-random (not SD v1-4)"
TINY_PRETRAINED_LABEL = "tiny-pretrained"


def tiny_label(marker: Mapping | None) -> str:
    """How tables name a tiny model from its ``seas_tiny.json`` marker: pretrained prior or random weights."""
    return TINY_PRETRAINED_LABEL if (marker or {}).get("weights") == "pretrained" else TINY_RANDOM_LABEL

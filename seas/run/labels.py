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


def tiny_label(marker: Mapping | None, unseen=()) -> str:
    """How tables name a tiny model from its ``seas_tiny.json`` marker: random weights, or a pretrained prior and what
    it saw (the marker's ``prior_data``, see :func:`prior_label`; ``unseen``: the run's products it never saw)."""
    marker = marker or {}
    if marker.get("weights") != "pretrained":
        return TINY_RANDOM_LABEL
    return prior_label(marker.get("prior_data"), unseen)


def prior_label(prior_data: Mapping | None, unseen=()) -> str:
    """``tiny-pretrained (own normals: N images, P products)`` for a prior the workflow pretrained on the run's own
    ``train/good`` images (stage train_prior: ``source: train_prior``), ``tiny-pretrained (demo prior)`` for one
    pretrained on the demo's (the committed prior); ``; never saw: X, Y`` is added for the run's products it never
    saw (its own normals then are another run's: ``prior normals``). ``prior_data`` None (a model folder built before
    the marker recorded it): ``tiny-pretrained``."""
    if not prior_data:
        return TINY_PRETRAINED_LABEL
    unseen = list(unseen)
    if prior_data.get("source") == "train_prior":
        n, p = int(prior_data.get("images", 0)), len(prior_data.get("products", ()))
        what = (f"{'prior' if unseen else 'own'} normals: {n} image{'s' * (n != 1)}, "
                f"{p} product{'s' * (p != 1)}")
    else:
        what = "demo prior"
    if unseen:
        what += f"; never saw: {', '.join(unseen)}"
    return f"{TINY_PRETRAINED_LABEL} ({what})"


# ----------------------------------------------------------------------------- the settings a run departs from
#: the authors' settings (their code: HUST-SLOW/SeaS configs/seas.yaml, HUST-SLOW/LFD datasets/*.py) the paper
#: presets reproduce; a run's departures from them are named in the tables' ``protocol`` column
AUTHORS_GENERATOR_ACCUMULATION = 2
AUTHORS_OPTIMIZER = "adamw8bit"


def _optimizer_deviation(asked: str, records, what: str) -> list[str]:
    used = {str(r["optimizer"]) for r in records if r and r.get("optimizer")}
    if asked != AUTHORS_OPTIMIZER:
        return [f"{what}torch AdamW"]
    if used - {AUTHORS_OPTIMIZER}:
        return [f"{what}torch AdamW (8-bit AdamW needs CUDA + bitsandbytes)"]
    return []


def setting_deviations(cfg: Mapping, records=(), rmp_records=()) -> list[str]:
    """The ways this run departs from the authors' training settings, as the tables' ``protocol`` column names
    them (empty: the paper's setting). ``records``: the generator stage's run records (``optimizer`` and
    ``precision`` actually used, where the stage ran; else the config decides).

    * segmenters' data (downstream; the authors' LFD code: every train/good image + the real 1/3 anomalies):
      ``seg normals N/product`` (``downstream.normal_images``), ``seg without real anomalies``
      (``downstream.include_real_anomalies: false``);
    * the generator (only where ``seas`` is a method; the authors: fp32, 2 batches per update, 8-bit AdamW):
      ``bf16 autocast`` / ``fp16 autocast`` (``model.mixed_precision``; ``auto`` is bf16 on CUDA: without records
      ``bf16 autocast on CUDA (mixed_precision auto)``), ``generator accumulation N``, ``torch AdamW``
      (``generator.optimizer: adamw``) or ``torch AdamW (8-bit AdamW needs CUDA + bitsandbytes)`` (asked for
      adamw8bit, run without it); the RMP likewise (the authors' RMP trains with 8-bit AdamW as well):
      ``RMP torch AdamW`` (``rmp.optimizer: adamw``) or ``RMP torch AdamW (8-bit AdamW needs CUDA +
      bitsandbytes)``, from ``rmp_records`` (the RMP stage's run records).
    """
    out: list[str] = []
    d = cfg["downstream"]
    if d["normal_images"] != "all":
        out.append(f"seg normals {d['normal_images']}/product")
    if not d["include_real_anomalies"]:
        out.append("seg without real anomalies")
    if "seas" not in d["methods"]:
        return out
    records = [r for r in records if r]
    used_precision = {str(r["precision"]) for r in records if r.get("precision")}
    if used_precision:
        out += [f"{p} autocast" for p in sorted(used_precision - {"fp32"})]
    else:
        mp = cfg["model"]["mixed_precision"]
        if mp == "auto":
            out.append("bf16 autocast on CUDA (mixed_precision auto)")
        elif mp != "no":
            out.append(f"{mp} autocast")
    g = cfg["generator"]
    if int(g["gradient_accumulation"]) != AUTHORS_GENERATOR_ACCUMULATION:
        out.append(f"generator accumulation {g['gradient_accumulation']}")
    out += _optimizer_deviation(g["optimizer"], records, "")
    out += _optimizer_deviation(cfg["rmp"]["optimizer"], rmp_records, "RMP ")
    return out

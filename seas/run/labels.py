"""Labels: the method names of ``downstream.methods`` (their folder names and table labels) and the tiny model's
``generator_model`` labels. The one place both are defined: the layout, the tables and the Snakefile import them.
Pure Python."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from seas.run.errors import ConfigError


# ----------------------------------------------------------------------------- methods
BUILTIN_METHODS = ("seas", "real", "crop_paste", "cutpaste", "draem")
BASELINE_METHODS = ("real", "crop_paste", "cutpaste", "draem")
EXTERNAL_PREFIX = "external:"


def is_external(method: str) -> bool:
    return method.startswith(EXTERNAL_PREFIX)


def external_path(method: str) -> str:
    """The folder of ``external:<path>`` (an optional ``?format=F&mask_threshold=X`` tail is not part of it)."""
    return split_external(method)[0]


# ----------------------------------------------------------------------------- external folders' options
#: the layouts an external folder may be in (seas.data.peers reads each): the SeaS authors' released pairs,
#: AnomalyDiffusion's / MAGIC's / DFMGAN's generation scripts' outputs, this project's pairs layout, images only
EXTERNAL_FORMATS = ("seas", "anomalydiffusion", "magic", "dfmgan", "ours", "images")
#: the options an ``external:<path>?...`` spec may carry
EXTERNAL_OPTIONS = ("format", "mask_threshold")


def split_external(method: str) -> tuple[str, dict[str, str]]:
    """``external:/data/ad?format=anomalydiffusion&mask_threshold=100`` -> ``("/data/ad", {"format":
    "anomalydiffusion", "mask_threshold": "100"})``. Only a ``?`` followed by ``key=value`` pairs of
    :data:`EXTERNAL_OPTIONS` starts the options (a folder name with a plain ``?`` stays the path's)."""
    rest = method[len(EXTERNAL_PREFIX):]
    path, sep, query = rest.rpartition("?")
    if not sep:
        return rest, {}
    opts: dict[str, str] = {}
    for part in query.split("&"):
        key, eq, value = part.partition("=")
        if not eq or key not in EXTERNAL_OPTIONS:
            return rest, {}
        opts[key] = value
    return path, opts


def external_options(method: str) -> dict:
    """The validated options of an external method spec: ``{"format": F or None, "mask_threshold": float or
    None}`` (None: auto-detected layout / the config's ``downstream.external_mask_threshold``). ConfigError naming
    the spec for an unknown format or a threshold outside (0, 1)."""
    _, opts = split_external(method)
    fmt = opts.get("format") or None
    if fmt is not None and fmt not in EXTERNAL_FORMATS:
        raise ConfigError(f"downstream.methods: {method!r}: format={fmt} is not one of {', '.join(EXTERNAL_FORMATS)}")
    thr = opts.get("mask_threshold")
    if thr is not None:
        try:
            thr = float(thr)
        except ValueError:
            thr = None
        if thr is None or not 0 < thr < 1:
            raise ConfigError(f"downstream.methods: {method!r}: mask_threshold must be a number in (0, 1) (a mask "
                              f"pixel / 255 above it is anomalous), got {opts['mask_threshold']!r}")
    return {"format": fmt, "mask_threshold": thr}


def _external_base(method: str) -> str:
    base = Path(external_path(method).rstrip("/\\")).name
    if not base:
        raise ConfigError(f"downstream.methods: {method!r} has no folder name")
    return base


def method_dir(method: str) -> str:
    """Folder (and workflow wildcard) name of a method's outputs: built-ins keep their name,
    ``external:/data/ad/pairs`` -> ``external-pairs``."""
    return f"external-{_external_base(method)}" if is_external(method) else method


#: table label of the ``draem`` baseline without ``downstream.dtd_root``: its sources are not DRAEM's DTD textures
DRAEM_PROCEDURAL_LABEL = "draem (procedural textures, not DTD)"


def method_label(method: str, cfg: Mapping | None = None) -> str:
    """Table label: ``external:/data/ad/pairs`` -> ``external:pairs``; ``draem`` of a config without
    ``downstream.dtd_root`` -> :data:`DRAEM_PROCEDURAL_LABEL` (``cfg`` given); other methods unchanged."""
    if is_external(method):
        return f"external:{_external_base(method)}"
    if method == "draem" and cfg is not None and not cfg["downstream"].get("dtd_root"):
        return DRAEM_PROCEDURAL_LABEL
    return method


# ----------------------------------------------------------------------------- protocol parts of issue 21
#: the ``protocol`` column's part for a method scored although its pairs hold copies of test images
#: (``downstream.leakage.allow``; downstream.leakage)
def test_copies_label(method: str, copies: int | None) -> str:
    n = "" if copies is None else f"{copies} "
    return f"{method_label(method)}: {n}test copies allowed (downstream.leakage.allow)"


#: ``downstream.protocol: peer_per_product_unet`` with ``downstream.peer_unet.select_on: test``
PEER_UNET_TEST_SELECTION = "checkpoint picked on test"


def generation_only(cfg: Mapping) -> list[str]:
    """``downstream.generation_only``: methods scored by the generation metrics only (no segmentation jobs): the
    paper's Tab. 1 columns of generators that make no masks (CDC, SDGAN, Defect-GAN)."""
    return list(cfg["downstream"].get("generation_only") or [])


def all_methods(cfg: Mapping) -> list[str]:
    """Every method of a configuration: ``downstream.methods`` (segmentation + generation metrics) then
    ``downstream.generation_only`` (generation metrics only)."""
    return list(cfg["downstream"]["methods"]) + [m for m in generation_only(cfg)
                                                 if m not in cfg["downstream"]["methods"]]


def check_methods(cfg: Mapping) -> None:
    """Cross-key checks of the method lists (ConfigError naming the key): an external spec's options are valid;
    a ``generation_only`` method is not also in ``downstream.methods`` and is not ``real`` (the real images,
    which get no generation metrics)."""
    d = cfg["downstream"]
    for m in all_methods(cfg):
        if is_external(m):
            external_options(m)
            _external_base(m)
    for m in generation_only(cfg):
        if m in d["methods"]:
            raise ConfigError(f"downstream.generation_only: {m!r} is also in downstream.methods; a method is either "
                              "segmented and scored (methods) or scored by the generation metrics only")
        if m == "real":
            raise ConfigError("downstream.generation_only: 'real' (the real training anomalies) gets no generation "
                              "metrics; remove it")


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
    if "seas" not in all_methods(cfg):
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

"""Studies: a base run plus named variants, each a few config overrides; one table row per variant.

A study is declared in the run config's ``studies:`` section (part of the run's default target) or ships as
``config/studies/<name>.yaml`` (the paper's ablations; ``snakemake study_<name>``). Both have the schema's
``definitions.study`` shape::

    title: "Tab. 29: mask threshold tau"
    paper_table: Tab. 29
    models: [bisenetv2]            # the segmentation model(s) the paper's table reports; null = the run's
    methods: [seas]
    digits: 2                      # decimals of the table, as the paper prints it (Tab. 22: 3)
    per_model: false               # true: a row per segmentation model + their average (Tab. 19)
    variants:
      "tau=0.1": {generation: {mask_threshold: 0.1}}
      "tau=0.2 (SeaS)": {}

Variant ``v`` of a study on run config ``base`` is ``base`` with ``v``'s overrides merged in (mappings key by key),
``downstream.models`` / ``downstream.methods`` set to the study's (``downstream.detectors``: only those the variant names), validated like any config
(:func:`variant_config`). Its stage folders come from :class:`seas.run.layout.Layout`, so every stage whose keys a
variant does not change is computed once for all variants (a tau study trains one generator and one RMP).
Pure Python (no torch): the Snakefile imports it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml
from jsonschema import Draft7Validator

from seas.run.config import REPO, ConfigError, deep_update, load_schema, validate_config

__all__ = ["STUDY_DIR", "FIXED_KEYS", "Study", "shipped_study_files", "load_studies", "variant_config",
           "variant_configs"]

STUDY_DIR = REPO / "config" / "studies"
#: top-level keys a variant may not override: they name the run, its data or its base model, which every variant
#: shares (the run's dataset tree and model are built or read once)
FIXED_KEYS = ("run_name", "results_dir", "dataset", "model", "studies", "resources")


@dataclass(frozen=True)
class Study:
    name: str
    source: str                      # the file or config key it was read from (for error messages)
    title: str = ""
    paper_table: str = ""
    models: tuple | None = None
    methods: tuple = ("seas",)
    variants: dict = field(default_factory=dict)
    digits: int = 2                  # decimals of the study table, as the paper prints it
    per_model: bool = False          # a row per segmentation model + their average (Tab. 19)


def _plain(value: Any) -> Any:
    """Plain dicts and lists (a config may come as any Mapping; jsonschema checks for dict)."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _study_schema() -> dict:
    schema = load_schema()
    return {**schema["definitions"]["study"], "definitions": schema["definitions"]}


def _parse(name: str, raw: Any, source: str) -> Study:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: a study must be a mapping, got {type(raw).__name__}")
    raw = _plain(raw)
    errors = sorted(Draft7Validator(_study_schema()).iter_errors(raw), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        lines = [f"  {'.'.join(map(str, e.absolute_path)) or '<top level>'}: {e.message}" for e in errors[:10]]
        raise ConfigError(f"{source}: invalid study\n" + "\n".join(lines))
    for variant, overrides in raw["variants"].items():
        bad = sorted(set(overrides) & set(FIXED_KEYS))
        if bad:
            raise ConfigError(f"{source}: variants.{variant}: may not override {', '.join(bad)} (every variant of a "
                              f"study shares the run's {', '.join(FIXED_KEYS)})")
    models = raw.get("models")
    return Study(name=name, source=source, title=raw.get("title", ""), paper_table=raw.get("paper_table", ""),
                 models=tuple(models) if models else None, methods=tuple(raw.get("methods", ("seas",))),
                 variants={str(k): dict(v) for k, v in raw["variants"].items()}, digits=int(raw.get("digits", 2)),
                 per_model=bool(raw.get("per_model", False)))


def shipped_study_files(folder: str | Path = STUDY_DIR) -> dict[str, Path]:
    """``{name: file}`` of the shipped studies (``config/studies/<name>.yaml``)."""
    folder = Path(folder)
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))} if folder.is_dir() else {}


def load_studies(cfg: Mapping[str, Any], folder: str | Path = STUDY_DIR) -> dict[str, Study]:
    """Every study a run knows: the shipped ones, then the config's ``studies:`` (a name in both is an error)."""
    studies: dict[str, Study] = {}
    for name, path in shipped_study_files(folder).items():
        try:
            raw = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML: {e}") from None
        studies[name] = _parse(name, raw, str(path))
    for name, raw in (cfg.get("studies") or {}).items():
        if name in studies:
            raise ConfigError(f"studies.{name}: a shipped study has that name ({studies[name].source}); rename it")
        studies[name] = _parse(name, raw, f"studies.{name}")
    return studies


def variant_config(base: Mapping[str, Any], study: Study, variant: str) -> dict:
    """The validated configuration of one variant (see the module docstring)."""
    cfg = _plain(base)
    cfg["studies"] = {}
    # a study's anomaly detectors are those its variants name (Tab. 11, 12, 33), never the run's: an ablation of a
    # run with detectors on does not retrain them per variant
    cfg.setdefault("downstream", {})["detectors"] = []
    deep_update(cfg, study.variants[variant])
    cfg["downstream"]["models"] = list(study.models or base["downstream"]["models"])
    cfg["downstream"]["methods"] = list(study.methods)
    return validate_config(cfg, source=f"{study.source}: variant {variant!r}")


def variant_configs(base: Mapping[str, Any], study: Study) -> dict[str, dict]:
    return {v: variant_config(base, study, v) for v in study.variants}

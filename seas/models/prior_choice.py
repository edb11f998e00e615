"""Which tiny prior a run uses (``model.tiny_prior``), decided when the workflow is parsed. Pure Python (no torch):
the Snakefile imports it.

``model.tiny_prior`` is

* ``null``: random weights (``tiny-random (not SD v1-4)``);
* a weights file (``priors/tiny_prior.safetensors``): that prior, whatever it saw -- a run whose products it never
  saw is warned about at parse time and every table row says so (``tiny-pretrained (demo prior; never saw: X)``);
* ``auto``: the committed demo prior (:data:`DEMO_PRIOR`, the fast path; its sha256 is checked when the model is
  assembled) when its manifest covers the run's products, else the workflow's stage ``train_prior`` pretrains a
  prior on the run's own normal training images (``train/good`` of the selected products, as their splits list
  them) and the tiny model is assembled from that one.

A prior *covers* a product when its manifest shows it saw that product's ``train/good`` images:

* a demo prior (manifest ``data.demo``: the procedurally generated demo, rendered from those parameters) covers the
  demo products it lists when the run's dataset is the demo with the same parameters (the images are then the same);
* a prior of ``train_prior`` (manifest ``data.sha256``: ``{product/file: sha256}`` of every image it saw) covers a
  product when every one of the product's ``train/good`` hashes is among them (``train_hashes``: from the dataset
  manifest at parse time, from the split manifests in the tables); without hashes to compare, by product name.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from seas.run.errors import ConfigError

__all__ = ["AUTO", "DEMO_PRIOR", "PriorChoice", "read_manifest", "prior_products", "unseen_products", "choose",
           "auto_trains", "warning_text"]

AUTO = "auto"
#: the committed demo prior (python -m seas.models.tiny_prior --out priors/tiny_prior.safetensors)
DEMO_PRIOR = Path(__file__).resolve().parents[2] / "priors" / "tiny_prior.safetensors"
#: the manifest's ``data.source`` of a prior pretrained by the workflow's stage train_prior
OWN_SOURCE = "train_prior"

TrainHashes = Callable[[str], "Sequence[str] | None"]


@dataclass(frozen=True)
class PriorChoice:
    """``mode``: ``random`` | ``file`` (use ``path``) | ``train`` (stage train_prior); ``unseen``: the run's
    products the chosen file never saw (``file`` only)."""

    mode: str
    path: str | None = None
    unseen: tuple[str, ...] = ()


def read_manifest(weights: str | Path) -> dict:
    """The manifest ``<weights stem>.json`` of a prior file (JSON only: the weights' sha256 is checked where the
    model is assembled, seas.models.prior_file)."""
    mpath = Path(weights).with_suffix(".json")
    try:
        return json.loads(mpath.read_text())
    except FileNotFoundError:
        raise ConfigError(f"model.tiny_prior: {mpath} (the manifest of {Path(weights).name}) not found") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"model.tiny_prior: {mpath} is not valid JSON: {e}") from None


def prior_products(manifest: Mapping) -> list[str]:
    """The products whose images the prior saw (``data.images``: ``product/file`` names)."""
    data = manifest.get("data") or {}
    if data.get("products"):
        return list(data["products"])
    return sorted({str(n).split("/")[0] for n in data.get("images", [])})


def _same_demo(manifest_demo: Mapping, cfg: Mapping) -> bool:
    ds = cfg["dataset"]
    if ds.get("name") != "demo":
        return False
    demo = ds.get("demo") or {}
    return all(demo.get(k) == v for k, v in manifest_demo.items())


def unseen_products(manifest: Mapping, cfg: Mapping, products: Sequence[str],
                    train_hashes: TrainHashes | None = None) -> list[str]:
    """The run's ``products`` whose ``train/good`` images the prior of ``manifest`` never saw (module docstring).
    A prior made at another resolution than ``model.resolution`` saw none of them."""
    if int(manifest.get("resolution", cfg["model"]["resolution"])) != int(cfg["model"]["resolution"]):
        return list(products)
    data = manifest.get("data") or {}
    seen = set(prior_products(manifest))
    if "demo" in data:
        return [p for p in products if not (p in seen and _same_demo(data["demo"], cfg))]
    if "sha256" in data:
        known = set(data["sha256"].values())
        out = []
        for p in products:
            hashes = train_hashes(p) if train_hashes is not None else None
            if hashes is None:  # nothing to compare: by name
                covered = p in seen
            else:
                covered = bool(hashes) and set(hashes) <= known
            if not covered:
                out.append(p)
        return out
    return [p for p in products if p not in seen]


def auto_trains(cfg: Mapping, demo_prior: str | Path = DEMO_PRIOR) -> bool:
    """Whether ``model.tiny_prior: auto`` trains a prior (stage train_prior) for this configuration, from the
    configuration alone: the committed demo prior covers only the demo dataset with its own parameters and
    resolution (its manifest records them), whatever the products (the demo has the two it saw). Only for tiny
    models that SeaS uses."""
    m = cfg["model"]
    if not m.get("tiny") or m.get("tiny_prior") != AUTO or "seas" not in cfg["downstream"]["methods"]:
        return False
    manifest = read_manifest(demo_prior)
    products = cfg["dataset"].get("products")
    wanted = prior_products(manifest) if products in (None, "all") else list(products)
    return bool(unseen_products(manifest, cfg, wanted))


def choose(cfg: Mapping, products: Sequence[str], train_hashes: TrainHashes | None = None,
           demo_prior: str | Path = DEMO_PRIOR) -> PriorChoice:
    """The prior of a run (module docstring): ``random``, ``file`` (with the products it never saw) or ``train``."""
    m = cfg["model"]
    value = m.get("tiny_prior")
    if not m.get("tiny") or value is None:
        return PriorChoice("random")
    if value == AUTO:
        return PriorChoice("train") if auto_trains(cfg, demo_prior) else PriorChoice("file", str(demo_prior))
    manifest = read_manifest(value)
    if not products and cfg["dataset"].get("name") == "demo":  # the demo before it is built: the demo's products
        products = prior_products(manifest) if "demo" in (manifest.get("data") or {}) else []
    return PriorChoice("file", str(value), tuple(unseen_products(manifest, cfg, products, train_hashes)))


def warning_text(choice: PriorChoice) -> str | None:
    """The parse-time warning of a pinned prior that never saw some of the run's products (None: nothing to say)."""
    if choice.mode != "file" or not choice.unseen:
        return None
    return (f"model.tiny_prior {choice.path} never saw the normal images of {', '.join(choice.unseen)}: SeaS starts "
            f"from a prior that does not know these products (the tables say so in generator_model); "
            f"model.tiny_prior: auto pretrains one on their train/good images (stage train_prior)")

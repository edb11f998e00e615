"""The stage registry: the one list of the pipeline's stages.

Each stage has ONE name, shared by its Snakemake rule, its CLI module (``python -m <module>``, whose file is named
for the stage) and this entry. An entry says what the stage is and what it reads:

``module``       the CLI the rule runs
``config_keys``  the config keys the stage reads (dotted keys or whole sections; ``{model}`` is filled per
                 segmentation model). They key the stage's output folder (seas.run.layout), are the rule's
                 ``params: cfg`` (Snakemake's params rerun trigger) and are the resume fingerprint of a resumable
                 stage (:func:`fingerprint`): a key cannot be in one and missing from the other.
                 tests/seas/run/test_config_keys.py fails when a stage reads a key outside them.
``upstream``     the stages whose keys enter this stage's key (``pairs``: the key of the method's pairs -- the
                 ``generate`` stage, a baseline, or an external folder's content)
``folder``       the output folder under the run directory (``<run>/<folder>/<k>/...``); None: not keyed
``parts``        the wildcards of one job (its benchmark and log files: ``benchmarks/<rule>/<parts>.tsv``)
``gpu``          the rule asks for ``resources.gpus_per_job`` GPUs (its time counts as GPU-hours in cost.csv)
``minutes``      the SLURM time-limit estimate of one job (a function of the config and the job's fields)
``resume_free``  leaves of ``config_keys`` a resumed run may change (they change how long, not what: e.g. a
                 longer training continues an interrupted one); never part of the fingerprint
``cost_stage``   the stage's row in cost.csv (paper Tab. 6 / 7), in :data:`COST_ORDER`
``record``       where a job's run record lies inside the stage folder (``{product}/{group}``): cost.csv reads it
``for_method``   the stage runs only when this ``downstream.methods`` entry is configured (``seas``)

Adding a stage is one entry here, one CLI module and one rule. Pure Python (no torch): the Snakefile imports it.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

__all__ = ["Stage", "STAGES", "RESULT_FREE", "stage", "stage_keys", "stage_values", "fingerprint", "gpu_rules",
           "COST_ORDER"]

#: config leaves that change how any stage runs, never what it produces: part of no key and no fingerprint
RESULT_FREE = frozenset({"checkpoint_every", "log_every", "num_workers"})


# ----------------------------------------------------------------------------- time estimates (SLURM limits)
def _generator_minutes(cfg: Mapping[str, Any], n_types: int = 1, **_) -> int:
    """Paper (A100, 512 px, the authors' settings: 2 batches per update): 35 min per anomaly type at 800 steps ->
    ~2.6 s/step; x1.5 margin, +15 min load/save. Scales with steps, accumulation (relative to the authors' 2) and
    (resolution/512)^2."""
    g = cfg["generator"]
    scale = (cfg["model"]["resolution"] / 512) ** 2
    steps = g["steps_per_type"] * n_types * g["gradient_accumulation"] / 2
    return int(15 + 1.5 * steps * 2.6 * scale / 60) + 1


def _rmp_minutes(cfg: Mapping[str, Any], n_types: int = 1, **_) -> int:
    """Paper: 25 min per type at 800 steps -> ~1.9 s/step; x1.5 margin, +15 min."""
    scale = (cfg["model"]["resolution"] / 512) ** 2
    steps = cfg["rmp"]["steps_per_type"] * n_types
    return int(15 + 1.5 * steps * 1.9 * scale / 60) + 1


def _generate_minutes(cfg: Mapping[str, Any], **_) -> int:
    """Paper: 720 ms per image (A100, 25 steps); x2 margin, +10 min."""
    g = cfg["generation"]
    scale = (cfg["model"]["resolution"] / 512) ** 2 * g["num_inference_steps"] / 25
    return int(10 + 2 * g["num_images_per_type"] * 0.72 * scale / 60) + 1


#: GPU seconds per iteration, batch 8 at 256 px, with margin
SEG_SECONDS_PER_ITER = {"bisenetv2": 0.15, "upernet": 0.45, "lfd": 0.1, "draem_unet": 0.3}


def _train_seg_minutes(cfg: Mapping[str, Any], model: str = "lfd", **_) -> int:
    """draem_unet (epochs of samples_per_epoch, one checkpoint-choice pass per epoch): its steps + 30 % for the
    per-epoch selection passes."""
    t = cfg["downstream"]["train"][model]
    scale = (cfg["downstream"]["image_size"] / 256) ** 2 * t["batch_size"] / 8
    iters = t["iterations"] if "iterations" in t else 1.3 * t["epochs"] * -(-t["samples_per_epoch"] // t["batch_size"])
    return int(20 + 1.5 * iters * SEG_SECONDS_PER_ITER.get(model, 0.5) * scale / 60) + 1


def _prior_minutes(cfg: Mapping[str, Any], **_) -> int:
    """The tiny prior (seas.models.train_prior), measured on one CPU core at 128 px (priors/tiny_prior.json: 80 CPU-s
    for 300 VAE steps, 592 for 700 U-Net steps: ~0.27 and ~0.85 s/step); x2 margin, +10 min; scales with
    (resolution/128)^2."""
    p = cfg["model"]["prior"]
    scale = (cfg["model"]["resolution"] / 128) ** 2
    return int(10 + 2 * (0.27 * p["vae_steps"] + 0.85 * p["unet_steps"]) * scale / 60) + 1


#: GPU seconds per training iteration of a detector (batch 8 at 256 px, with margin); PatchCore: per normal image
DETECTOR_SECONDS_PER_ITER = {"patchcore": 0.5, "stfpm": 0.1, "draem": 0.3, "draem_pairs": 0.3}
# GLASS: 20 gradient-ascent steps per batch (an estimate, not measured on a GPU; CPU: ~56 CPU-s per step at 256 px)
DETECTOR_SECONDS_PER_ITER.update({"glass": 0.6, "glass_pairs": 0.6})


def _train_detector_minutes(cfg: Mapping[str, Any], model: str = "draem", **_) -> int:
    """One detector per product, trained then scored: iterations (PatchCore: 300 normals) x products (15 in MVTec
    AD) at the per-iteration estimate, scaled with (image_size/256)^2; +20 min load/score."""
    t = cfg["downstream"]["detector_train"][model]
    scale = (cfg["downstream"]["image_size"] / 256) ** 2
    iters = t.get("iterations", 300) * 15
    return int(20 + 1.5 * iters * DETECTOR_SECONDS_PER_ITER.get(model, 0.5) * scale / 60) + 1


def _fixed(minutes: int) -> Callable[..., int]:
    return lambda cfg, **_: minutes


# ----------------------------------------------------------------------------- the registry
@dataclass(frozen=True)
class Stage:
    name: str
    module: str
    config_keys: tuple[str, ...]
    upstream: tuple[str, ...] = ()
    folder: str | None = None
    parts: tuple[str, ...] = ()
    gpu: bool = False
    minutes: Callable[..., int] = field(default=_fixed(15), compare=False)
    resume_free: frozenset = frozenset()
    cost_stage: str | None = None
    record: str | None = None
    for_method: str | None = None

    def keys(self, **fields: str) -> tuple[str, ...]:
        """:attr:`config_keys` with ``{model}`` filled from ``fields``."""
        return tuple(k.format(**fields) for k in self.config_keys) if fields else self.config_keys


_RUN_WIDE = ("seed", "device", "dataset", "split", "augmentation", "model", "generator", "rmp", "generation",
             "gen_metrics", "downstream", "resources")

_ENTRIES = (
    # setup stages (not keyed: the demo tree and the tiny model are paths of the config)
    Stage("demo_data", "seas.data.demo_data", ("dataset.demo",), minutes=_fixed(15)),
    Stage("tiny_sd", "seas.models.tiny_sd", ("seed", "model.resolution", "model.tiny_prior"), minutes=_fixed(15)),
    # the method
    Stage("split", "seas.data.split", ("dataset.root", "split"), folder="split", parts=("k", "product"),
          minutes=_fixed(10)),
    # the tiny prior pretrained on the run's own train/good images (model.tiny_prior: auto on products the committed
    # demo prior never saw: seas.models.prior_choice); the tiny model (tiny_sd) is then assembled from it
    Stage("train_prior", "seas.models.train_prior",
          ("seed", "device", "dataset.image_policy", "dataset.products", "model.resolution", "model.prior"),
          upstream=("split",), folder="prior", parts=("k",), gpu=True, minutes=_prior_minutes,
          for_method="seas"),
    Stage("train_generator", "seas.method.train_generator",
          ("seed", "device", "dataset.image_policy", "augmentation", "model", "generator"),
          upstream=("split",), folder="generator", parts=("k", "product", "group"), gpu=True,
          minutes=_generator_minutes, resume_free=frozenset({"steps_per_type"}), cost_stage="generator", record="{product}/{group}", for_method="seas"),
    Stage("train_rmp", "seas.method.train_rmp",
          ("seed", "device", "dataset.image_policy", "augmentation", "model.resolution", "model.mixed_precision",
           "rmp.steps_per_type", "rmp.batch_abnormal", "rmp.batch_normal", "rmp.gradient_accumulation", "rmp.lr",
           "rmp.optimizer",
           "rmp.focal_gamma", "rmp.mrm", "rmp.mrm_variant", "rmp.progressive", "rmp.coarse_supervision",
           "rmp.coarse_target", "rmp.normal_supervision", "rmp.vae_features", "rmp.unet_features",
           "rmp.reduce_channels", "rmp.num_heads", "rmp.head_dim", "rmp.num_layers", "rmp.norm_num_groups",
           "rmp.checkpoint_every", "rmp.log_every"),  # not rmp.bn_train_mode_at_inference: generate reads it
          upstream=("train_generator",), folder="rmp", parts=("k", "product", "group"), gpu=True,
          minutes=_rmp_minutes, cost_stage="rmp", record="{product}/{group}", for_method="seas"),
    Stage("generate", "seas.method.generate",
          ("seed", "device", "dataset.image_policy", "model.resolution", "model.mixed_precision", "generation",
           "rmp.bn_train_mode_at_inference"),
          upstream=("train_rmp",), folder="methods/seas", parts=("k", "product", "atype"), gpu=True,
          minutes=_generate_minutes, cost_stage="generation", record="{product}/{atype}", for_method="seas"),
    # what measures the pairs
    Stage("gen_metrics", "downstream.gen_metrics", ("seed", "device", "dataset.image_policy", "gen_metrics",
                                                    "downstream.leakage.threshold"),
          upstream=("pairs", "split"), folder="gen_metrics/{method}", parts=("method", "k", "product"), gpu=True,
          minutes=_fixed(60), cost_stage="gen_metrics"),
    Stage("baselines", "downstream.baselines",
          ("seed", "dataset.image_policy", "augmentation", "downstream.image_size",
           "downstream.num_baseline_images_per_type", "downstream.dtd_root"),
          upstream=("split",), folder="methods/{method}", parts=("method", "k", "product"), minutes=_fixed(60),
          cost_stage="baselines"),
    # an external folder (external:<path>, a peer's released or generated pairs) in the pairs layout, per product
    Stage("import_pairs", "seas.data.import_pairs",
          ("dataset.image_policy", "downstream.image_size", "gen_metrics.image_size",
           "downstream.external_mask_threshold"),
          folder="methods/{method}", parts=("method", "k", "product"), minutes=_fixed(30)),
    Stage("train_seg", "downstream.train_seg",
          ("seed", "device", "dataset.image_policy", "model.mixed_precision", "downstream.image_size",
           "downstream.include_real_anomalies", "downstream.normal_images", "downstream.pretrained_backbones",
           "downstream.train.{model}", "downstream.leakage.threshold", "downstream.peer_unet"),
          upstream=("pairs", "split"), folder="segmentation/{model}/{method}", parts=("model", "method", "k", "scope"),
          gpu=True, minutes=_train_seg_minutes, cost_stage="segmentation", record="{scope}"),
    Stage("evaluate", "downstream.evaluate",
          ("device", "dataset.image_policy", "downstream.image_size", "downstream.iou_threshold",
           "downstream.evaluation"),
          upstream=("train_seg",), folder="evaluation/{model}/{method}", parts=("model", "method", "k", "scope"),
          gpu=True, minutes=_fixed(60), cost_stage="evaluation"),
    # the anomaly detectors (anomalib; paper Tab. 11, 12, 33): trained per product on the normals (+ a method's
    # pairs: draem_pairs) and scored on the held-out test split; method "none" for the unsupervised ones
    Stage("train_detector", "downstream.train_detector",
          ("seed", "device", "dataset.image_policy", "downstream.image_size", "downstream.normal_images",
           "downstream.iou_threshold", "downstream.evaluation", "downstream.detector_backbones",
           "downstream.detector_train.{model}"),
          upstream=("pairs", "split"), folder="detection/{model}/{method}", parts=("model", "method", "k"),
          gpu=True, minutes=_train_detector_minutes, cost_stage="detection", record="."),
    # tables (read everything: run-wide keys)
    Stage("tables", "downstream.report.tables", _RUN_WIDE, minutes=_fixed(10)),
    Stage("study", "downstream.report.study", ("run_name", "results_dir") + _RUN_WIDE + ("studies",),
          parts=("study",), minutes=_fixed(10)),
    Stage("sample_grid", "downstream.report.sample_grid", (), parts=("method", "product"), minutes=_fixed(10)),
    # the report's pages (snakemake --report): tables as HTML, plots, the front page, real-vs-generated grids
    Stage("html_table", "downstream.report.html_table", (), minutes=_fixed(10)),
    Stage("plots", "downstream.report.plots", (), minutes=_fixed(10)),
    Stage("front_page", "downstream.report.front_page",
          ("run_name", "dataset", "split", "downstream", "gen_metrics", "studies"), minutes=_fixed(10)),
    Stage("compare_grid", "downstream.report.compare_grid", (), parts=("product",), minutes=_fixed(10)),
)

#: name -> Stage, in pipeline order
STAGES: dict[str, Stage] = {s.name: s for s in _ENTRIES}
#: the rows of cost.csv, in registry order (paper Tab. 6 / 7)
COST_ORDER = tuple(s.cost_stage for s in _ENTRIES if s.cost_stage)


def stage(name: str) -> Stage:
    try:
        return STAGES[name]
    except KeyError:
        raise KeyError(f"unknown stage {name!r} (seas.run.stages.STAGES: {', '.join(STAGES)})") from None


def stage_of_module(module: str) -> Stage:
    """The stage whose CLI is ``module`` (``"__main__"`` resolved by the caller)."""
    for s in STAGES.values():
        if s.module == module:
            return s
    raise KeyError(f"no stage runs module {module!r}")


def stage_keys(name: str, **fields: str) -> tuple[str, ...]:
    """The config keys stage ``name`` reads (``{model}`` filled from ``fields``)."""
    return stage(name).keys(**fields)


def gpu_rules() -> tuple[str, ...]:
    """The rules that ask for GPUs."""
    return tuple(s.name for s in STAGES.values() if s.gpu)


def _get(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _strip(value: Any, drop: frozenset) -> Any:
    if isinstance(value, Mapping):
        return {k: _strip(v, drop) for k, v in value.items() if k not in drop}
    return copy.deepcopy(value)


def stage_values(cfg: Mapping[str, Any], name: str, _drop: frozenset = RESULT_FREE, **fields: str) -> dict:
    """``{key: value}`` of the config keys stage ``name`` reads, without the :data:`RESULT_FREE` leaves: what its
    output folder's key hashes."""
    return {k: _strip(_get(cfg, k), _drop) for k in stage_keys(name, **fields) if k.rsplit(".", 1)[-1] not in _drop}


def fingerprint(cfg: Mapping[str, Any], name: str, fields: Mapping[str, str] | None = None, **inputs: Any) -> dict:
    """The resume fingerprint of stage ``name``: the values of its declared config keys (less the result-free
    leaves and the stage's ``resume_free`` ones) plus what identifies its inputs (``inputs``: split, product,
    upstream folder, ...). An interrupted run resumes only under an equal fingerprint (seas.run.resume)."""
    s = stage(name)
    return {"stage": name, "config": stage_values(cfg, name, RESULT_FREE | s.resume_free, **dict(fields or {})),
            "inputs": inputs}

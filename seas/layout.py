"""Where a run's stage outputs live: one folder per stage *instance*, named by a key of the config values that
stage reads, so two configurations that agree on a stage's inputs share its output (studies, reruns).

    <run>/split/<k>/<product>.json
    <run>/generator/<k>/<product>/<group>/            group: all | type-<T> (generator.scope)
    <run>/rmp/<k>/<product>/<group>/
    <run>/methods/seas/<k>/<product>/<type>/          the pairs layout (seas.pairs) under a pairs root
    <run>/methods/<baseline>/<k>/<product>/
    <run>/gen_metrics/<method>/<k>/<product>.json
    <run>/segmentation/<model>/<method>/<k>/<scope>/  model.safetensors, train.json   scope: all | product-<P>
    <run>/evaluation/<model>/<method>/<k>/<scope>/scores.csv
    <run>/benchmarks/<rule>/<the same relative path>.tsv, <run>/logs/<rule>/<...>.log

The key ``<k>`` of a stage (10 hex digits) hashes the stage's name, the values of the config keys its CLI declares
(``CONFIG_KEYS``, :func:`seas.config.stage_keys`; a stage reads nothing else, tests/seas/test_config_keys.py) and the
keys of the stages it reads from (generator <- split, rmp <- generator, generation <- rmp, a segmentation model <-
its method's pairs + split, ...). Leaves that do not change a result (:data:`RESULT_FREE`: checkpoint_every,
log_every, num_workers) are left out, so changing them resumes instead of restarting.

Consequences: a changed parameter writes a new folder next to the old one (switching back reuses the old one);
a study's variants share every stage whose inputs they do not change (seas.studies). The Snakefile
(workflow/rules/common.smk), downstream.tables and downstream.cost all find outputs through :class:`Layout`: the
one place that knows the paths. Pure Python (no torch): the Snakefile imports it.

    python -m seas.layout --config results/demo/config.yaml      # the run's stage folders and what they hold
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from .config import stage_keys
from .pairs import BASELINE_METHODS, external_path, is_external, method_dir
from .runtime import cli

__all__ = ["STAGE_MODULES", "RESULT_FREE", "KEY_LEN", "JOB_PARTS", "stage_values", "Layout", "pattern", "job_file",
           "seg_scopes", "scope_product", "group_of", "main"]

#: stage -> the module whose CONFIG_KEYS it reads (``{model}`` filled per segmentation model)
STAGE_MODULES = {
    "split": "seas.data",
    "generator": "seas.train",
    "rmp": "seas.train_rmp",
    "generation": "seas.generate",
    "baselines": "downstream.baselines",
    "gen_metrics": "seas.gen_metrics",
    "segmentation": "downstream.train",
    "evaluation": "downstream.evaluate",
}
#: the config keys the CLI (``python -m seas.layout``) reads: every stage's, through their CONFIG_KEYS
CONFIG_KEYS = ("run_name", "results_dir", "seed", "device", "dataset", "split", "augmentation", "model", "generator",
               "rmp", "generation", "gen_metrics", "downstream", "resources")
#: config leaves that change how a stage runs, never what it produces: not part of any key
RESULT_FREE = frozenset({"checkpoint_every", "log_every", "num_workers"})
KEY_LEN = 10
#: the rules' benchmark / log files: <run>/<benchmarks|logs>/<rule>/<parts>.<tsv|log> (the wildcards of the job)
JOB_PARTS = {
    "split": ("{k}", "{product}"),
    "train_generator": ("{k}", "{product}", "{group}"),
    "train_rmp": ("{k}", "{product}", "{group}"),
    "generate": ("{k}", "{product}", "{atype}"),
    "baselines": ("{method}", "{k}", "{product}"),
    "gen_metrics": ("{method}", "{k}", "{product}"),
    "train_seg": ("{model}", "{method}", "{k}", "{scope}"),
    "evaluate": ("{model}", "{method}", "{k}", "{scope}"),
}


def _get(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


def _strip(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _strip(v) for k, v in value.items() if k not in RESULT_FREE}
    return value


def stage_values(cfg: Mapping[str, Any], stage: str, **fields: str) -> dict:
    """The values of the config keys ``stage`` reads, without the :data:`RESULT_FREE` leaves."""
    return {k: _strip(_get(cfg, k)) for k in stage_keys(STAGE_MODULES[stage], **fields)
            if k.rsplit(".", 1)[-1] not in RESULT_FREE}


def _hash(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LEN]


def group_of(cfg: Mapping[str, Any], atype: str) -> str:
    """The generator (and RMP) folder of an anomaly type: ``all`` (one per product, SeaS) or ``type-<T>``
    (``generator.scope: type``, the paper's 'w/o Mixed')."""
    return f"type-{atype}" if cfg["generator"]["scope"] == "type" else "all"


def seg_scopes(cfg: Mapping[str, Any], products: Sequence[str]) -> list[str]:
    """The segmentation models of one (model, method): ``["all"]`` (one for every product, ``downstream.protocol:
    unified``, the paper) or ``["product-<P>", ...]`` (one per product, Tab. 19)."""
    if cfg["downstream"]["protocol"] == "per_product":
        return [f"product-{p}" for p in products]
    return ["all"]


def scope_product(scope: str) -> str | None:
    """``product-<P>`` -> ``<P>``; ``all`` -> None."""
    return scope[len("product-"):] if scope.startswith("product-") else None


def job_file(run: str, kind: str, rule: str, **values: str) -> str:
    """``<run>/benchmarks/<rule>/<parts>.tsv`` (kind ``benchmarks``) or ``<run>/logs/<rule>/<parts>.log``; parts not
    given in ``values`` stay wildcards (``{product}``), which is how the rules use it."""
    suffix = {"benchmarks": "tsv", "logs": "log"}[kind]
    parts = [p.format_map(_Keep(values)) for p in JOB_PARTS[rule]]
    rel = f"{kind}/{rule}/{'/'.join(parts)}.{suffix}"
    return f"{run}/{rel}" if run else rel


class _Keep(dict):
    def __missing__(self, key):
        return "{" + key + "}"


class Layout:
    """The stage folders of one configuration inside run directory ``run`` (str paths, as Snakemake uses them).

    Key methods (``*_key``) give the folder key of a stage instance; path methods give the paths. Methods are
    method specs as configured (``seas``, ``cutpaste``, ``external:/data/pairs``); folder names come from
    :func:`seas.pairs.method_dir`.
    """

    def __init__(self, run: str | Path, cfg: Mapping[str, Any] | None):
        self.run = str(run)
        self.cfg = cfg

    def _p(self, rel: str) -> str:
        return f"{self.run}/{rel}" if self.run else rel

    # ------------------------------------------------------------------ keys
    @functools.cached_property
    def split_key(self) -> str:
        return _hash({"stage": "split", "values": stage_values(self.cfg, "split")})

    @functools.cached_property
    def generator_key(self) -> str:
        return _hash({"stage": "generator", "values": stage_values(self.cfg, "generator"), "split": self.split_key})

    @functools.cached_property
    def rmp_key(self) -> str:
        return _hash({"stage": "rmp", "values": stage_values(self.cfg, "rmp"), "generator": self.generator_key})

    @functools.cached_property
    def generation_key(self) -> str:
        return _hash({"stage": "generation", "values": stage_values(self.cfg, "generation"), "rmp": self.rmp_key})

    @functools.lru_cache(maxsize=None)
    def baselines_key(self, method: str) -> str:
        return _hash({"stage": "baselines", "method": method, "values": stage_values(self.cfg, "baselines"),
                      "split": self.split_key})

    @functools.lru_cache(maxsize=None)
    def pairs_key(self, method: str) -> str:
        """The key of a method's pairs: its generation / baselines instance, or its external folder."""
        if method == "seas":
            return self.generation_key
        if method in BASELINE_METHODS:
            return self.baselines_key(method)
        if is_external(method):
            return _hash({"stage": "external", "path": external_path(method)})
        raise ValueError(f"unknown method {method!r}")

    @functools.lru_cache(maxsize=None)
    def gen_metrics_key(self, method: str) -> str:
        return _hash({"stage": "gen_metrics", "values": stage_values(self.cfg, "gen_metrics"),
                      "pairs": self.pairs_key(method), "split": self.split_key})

    @functools.lru_cache(maxsize=None)
    def seg_key(self, model: str, method: str) -> str:
        return _hash({"stage": "segmentation", "model": model,
                      "values": stage_values(self.cfg, "segmentation", model=model),
                      "pairs": self.pairs_key(method), "split": self.split_key})

    @functools.lru_cache(maxsize=None)
    def eval_key(self, model: str, method: str) -> str:
        return _hash({"stage": "evaluation", "values": stage_values(self.cfg, "evaluation"),
                      "segmentation": self.seg_key(model, method)})

    # ------------------------------------------------------------------ paths
    def split(self, product: str) -> str:
        return self._p(f"split/{self.split_key}/{product}.json")

    def split_dir(self) -> str:
        return self._p(f"split/{self.split_key}")

    def generator(self, product: str, group: str) -> str:
        return self._p(f"generator/{self.generator_key}/{product}/{group}")

    def rmp(self, product: str, group: str) -> str:
        return self._p(f"rmp/{self.rmp_key}/{product}/{group}")

    def pairs_root(self, method: str) -> str:
        """The folder holding a method's ``<product>/<type>/`` pairs."""
        if is_external(method):
            return external_path(method)
        return self._p(f"methods/{method_dir(method)}/{self.pairs_key(method)}")

    def generation_manifest(self, product: str, atype: str) -> str:
        return f"{self.pairs_root('seas')}/{product}/{atype}/manifest.csv"

    def pairs_dir(self, method: str, product: str) -> str:
        """A method's pairs of one product (its ``<type>/`` folders; a baseline job's output)."""
        return f"{self.pairs_root(method)}/{product}"


    def gen_metrics(self, method: str, product: str) -> str:
        return self._p(f"gen_metrics/{method_dir(method)}/{self.gen_metrics_key(method)}/{product}.json")

    def seg_dir(self, model: str, method: str, scope: str = "all") -> str:
        return self._p(f"segmentation/{model}/{method_dir(method)}/{self.seg_key(model, method)}/{scope}")

    def seg_model(self, model: str, method: str, scope: str = "all") -> str:
        return f"{self.seg_dir(model, method, scope)}/model.safetensors"

    def seg_info(self, model: str, method: str, scope: str = "all") -> str:
        return f"{self.seg_dir(model, method, scope)}/train.json"

    def scores(self, model: str, method: str, scope: str = "all") -> str:
        return self._p(f"evaluation/{model}/{method_dir(method)}/{self.eval_key(model, method)}/{scope}/scores.csv")

    # ------------------------------------------------------------------ what a run holds
    def gen_metrics_methods(self) -> list[str]:
        """The configured methods that get generation metrics: all but ``real`` (the real images)."""
        return [m for m in self.cfg["downstream"]["methods"] if m != "real"]

    def instance_keys(self, stage: str) -> list[str]:
        """The keys of every instance of ``stage`` this configuration has (the workflow's jobs by key)."""
        d = self.cfg["downstream"]
        if stage == "split":
            return [self.split_key]
        if stage in ("generator", "rmp", "generation"):
            return [getattr(self, f"{stage}_key")] if "seas" in d["methods"] else []
        if stage == "baselines":
            return [self.baselines_key(m) for m in d["methods"] if m in BASELINE_METHODS]
        if stage == "gen_metrics":
            return [self.gen_metrics_key(m) for m in self.gen_metrics_methods()]
        fn = {"segmentation": self.seg_key, "evaluation": self.eval_key}[stage]
        return [fn(model, m) for model in d["models"] for m in d["methods"]]

    def stage_folders(self) -> Iterator[tuple[str, str, str]]:
        """``(stage, description, folder)`` of every stage instance of this configuration (folders above the
        per-product outputs)."""
        d = self.cfg["downstream"]
        yield "split", "", self._p(f"split/{self.split_key}")
        if "seas" in d["methods"]:
            yield "generator", "", self._p(f"generator/{self.generator_key}")
            yield "rmp", "", self._p(f"rmp/{self.rmp_key}")
            yield "generation", "", self.pairs_root("seas")
        for m in d["methods"]:
            if m in BASELINE_METHODS:
                yield "baselines", m, self.pairs_root(m)
        if self.cfg["gen_metrics"]["enabled"]:
            for m in self.gen_metrics_methods():
                yield "gen_metrics", m, self._p(f"gen_metrics/{method_dir(m)}/{self.gen_metrics_key(m)}")
        for model in d["models"]:
            for m in d["methods"]:
                yield "segmentation", f"{model}/{m}", str(Path(self.seg_dir(model, m)).parent)
                yield "evaluation", f"{model}/{m}", str(Path(self.scores(model, m)).parent.parent)


class _Pattern(Layout):
    """Every key is the wildcard ``{k}``: the rules' output patterns come from the same path methods."""

    split_key = generator_key = rmp_key = generation_key = "{k}"

    def baselines_key(self, method):
        return "{k}"

    def pairs_key(self, method):
        return "{k}"

    def gen_metrics_key(self, method):
        return "{k}"

    def seg_key(self, model, method):
        return "{k}"

    def eval_key(self, model, method):
        return "{k}"


def pattern(run: str) -> Layout:
    """The Snakemake output patterns: ``pattern(RUN).generator("{product}", "{group}")`` is
    ``<run>/generator/{k}/{product}/{group}``."""
    return _Pattern(run, None)


# ----------------------------------------------------------------------------- CLI
PATH_METHODS = ("split", "generator", "rmp", "pairs_root", "pairs_dir", "generation_manifest", "gen_metrics",
                "seg_dir", "seg_model", "seg_info", "scores")


@cli
def main(argv: Sequence[str] | None = None) -> int:
    from .config import load_config, run_dir

    p = argparse.ArgumentParser(
        prog="python -m seas.layout",
        description="Print the stage folders of a configuration (each keyed by the config values its stage reads; "
                    "folders of other keys in the run directory are earlier configurations' outputs, kept as a "
                    "cache: delete them to free space), or with --path one output path (for scripts).")
    p.add_argument("--config", required=True, help="a run configuration (e.g. results/<run>/config.yaml)")
    p.add_argument("-v", "--verbose", action="store_true", help="(no extra output; the common CLI option)")
    p.add_argument("--path", nargs="+", metavar=("WHAT", "ARG"),
                   help=f"print one path: WHAT in {', '.join(PATH_METHODS)} and its arguments, e.g. "
                        "--path seg_model bisenetv2 seas")
    args = p.parse_args(argv)
    cfg = load_config(args.config)
    layout = Layout(run_dir(cfg), cfg)
    if args.path:
        what, *rest = args.path
        if what not in PATH_METHODS:
            p.error(f"--path {what}: choose one of {', '.join(PATH_METHODS)}")
        try:
            print(getattr(layout, what)(*rest))
        except TypeError as e:
            p.error(f"--path {what}: {e}")
        return 0
    for stage, what, folder in layout.stage_folders():
        state = "exists" if Path(folder).exists() else "not built"
        print(f"{stage:<13} {what:<22} {folder}  ({state})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

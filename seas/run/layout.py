"""Where a run's stage outputs live: one folder per stage *instance*, named by a key of the config values that
stage reads, so two configurations that agree on a stage's inputs share its output (studies, reruns).

    <run>/split/<k>/<product>.json
    <run>/prior/<k>/tiny_prior.safetensors            + tiny_prior.json (model.tiny_prior auto: seas.models.train_prior)
    <run>/generator/<k>/<product>/<group>/            group: all | type-<T> (generator.scope)
    <run>/rmp/<k>/<product>/<group>/
    <run>/methods/seas/<k>/<product>/<type>/          the pairs layout (seas.data.pairs) under a pairs root
    <run>/methods/<baseline>/<k>/<product>/
    <run>/methods/external-<name>/<k>/<product>/      an external folder imported (seas.data.import_pairs)
    <run>/gen_metrics/<method>/<k>/<product>.json
    <run>/segmentation/<model>/<method>/<k>/<scope>/  model.safetensors, train.json   scope: all | product-<P>
    <run>/evaluation/<model>/<method>/<k>/<scope>/scores.csv
    <run>/benchmarks/<rule>/<the same relative path>.tsv, <run>/logs/<rule>/<...>.log

The key ``<k>`` of a stage (10 hex digits) hashes the stage's registry name, the values of the config keys the stage
registry declares for it (seas.run.stages; a stage reads nothing else, tests/seas/run/test_config_keys.py), its
identity fields (method, model) and the keys of its upstream stages (train_generator <- split, train_rmp <-
train_generator, generate <- train_rmp, train_seg <- its method's pairs + split, ...). Leaves that do not change a
result (seas.run.stages.RESULT_FREE: checkpoint_every, log_every, num_workers) are left out, so changing them
resumes instead of restarting.

Consequences: a changed parameter writes a new folder next to the old one (switching back reuses the old one);
a study's variants share every stage whose inputs they do not change (seas.run.studies). The Snakefile
(workflow/rules/common.smk), downstream.report.tables and downstream.report.cost all find outputs through :class:`Layout`: the
one place that knows the paths. Pure Python (no torch): the Snakefile imports it.

    python -m seas.run.layout --config results/demo/config.yaml      # the run's stage folders and what they hold
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from seas.run.labels import BASELINE_METHODS, all_methods, is_external, method_dir
from seas.run.runtime import cli
from seas.run.stages import STAGES, stage, stage_values

__all__ = ["KEY_LEN", "NO_METHOD", "stage_values", "Layout", "pattern", "job_file", "seg_scopes", "scope_product",
           "group_of", "detector_instances", "main"]

#: the config keys the CLI (``python -m seas.run.layout``) reads: every stage's
CONFIG_KEYS = ("run_name", "results_dir", "seed", "device", "dataset", "split", "augmentation", "model", "generator",
               "rmp", "generation", "gen_metrics", "downstream", "resources")
KEY_LEN = 10
#: the {method} of an unsupervised detector (train_detector: trained on normal images only, no pairs)
NO_METHOD = "none"


def _hash(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LEN]


def group_of(cfg: Mapping[str, Any], atype: str) -> str:
    """The generator (and RMP) folder of an anomaly type: ``all`` (one per product, SeaS) or ``type-<T>``
    (``generator.scope: type``, the paper's 'w/o Mixed')."""
    return f"type-{atype}" if cfg["generator"]["scope"] == "type" else "all"


def seg_scopes(cfg: Mapping[str, Any], products: Sequence[str]) -> list[str]:
    """The segmentation models of one (model, method): ``["all"]`` (one for every product, ``downstream.protocol:
    unified``, the paper) or ``["product-<P>", ...]`` (one per product: ``per_product``, Tab. 19, and the peers'
    ``peer_per_product_unet``)."""
    if cfg["downstream"]["protocol"] in ("per_product", "peer_per_product_unet"):
        return [f"product-{p}" for p in products]
    return ["all"]


def scope_product(scope: str) -> str | None:
    """``product-<P>`` -> ``<P>``; ``all`` -> None."""
    return scope[len("product-"):] if scope.startswith("product-") else None


def job_file(run: str, kind: str, rule: str, **values: str) -> str:
    """``<run>/benchmarks/<rule>/<parts>.tsv`` (kind ``benchmarks``) or ``<run>/logs/<rule>/<parts>.log``, the parts
    being the stage's job wildcards (seas.run.stages); parts not given in ``values`` stay wildcards
    (``{product}``), which is how the rules use it."""
    suffix = {"benchmarks": "tsv", "logs": "log"}[kind]
    parts = [str(values.get(p, "{" + p + "}")) for p in stage(rule).parts]
    rel = f"{kind}/{rule}/{'/'.join(parts)}.{suffix}" if parts else f"{kind}/{rule}.{suffix}"
    return f"{run}/{rel}" if run else rel


class Layout:
    """The stage folders of one configuration inside run directory ``run`` (str paths, as Snakemake uses them).

    :meth:`key` gives the folder key of a stage instance, from the registry (seas.run.stages): the stage's name,
    the values of its config keys, its identity fields (``method``, ``model``) and its upstream stages' keys.
    Path methods give the paths. Methods are method specs as configured (``seas``, ``cutpaste``,
    ``external:/data/pairs``); folder names come from :func:`seas.run.labels.method_dir`.
    """

    def __init__(self, run: str | Path, cfg: Mapping[str, Any] | None):
        self.run = str(run)
        self.cfg = cfg

    def _p(self, rel: str) -> str:
        return f"{self.run}/{rel}" if self.run else rel

    # ------------------------------------------------------------------ keys
    @functools.lru_cache(maxsize=None)
    def key(self, name: str, method: str | None = None, model: str | None = None) -> str:
        """The key of stage ``name``'s instance (``method`` / ``model`` for the stages that have them)."""
        s = stage(name)
        payload: dict[str, Any] = {"stage": name}
        if model is not None and "{model}" in (s.folder or ""):
            payload["model"] = model
        if method is not None and "{method}" in (s.folder or "") and "pairs" not in s.upstream:
            payload["method"] = method
        payload["values"] = stage_values(self.cfg, name, **({"model": model} if model is not None else {}))
        for up in s.upstream:
            if up == "pairs":
                payload["pairs"] = self.pairs_key(method)
            else:
                payload[up] = self.key(up, method=method, model=model)
        return _hash(payload)

    @functools.lru_cache(maxsize=None)
    def pairs_key(self, method: str) -> str:
        """The key of a method's pairs: its generation / baselines instance, or its external folder."""
        if method == NO_METHOD:  # an unsupervised detector (train_detector): no pairs
            return NO_METHOD
        if method == "seas":
            return self.key("generate")
        if method in BASELINE_METHODS:
            return self.key("baselines", method=method)
        if is_external(method):  # its import (seas.data.import_pairs; the folder's content is a param of the rule)
            return self.key("import_pairs", method=method)
        raise ValueError(f"unknown method {method!r}")

    def _folder(self, name: str, **fields: str) -> str:
        """``<run>/<the stage's folder>/<k>``."""
        s = stage(name)
        key = self.key(name, method=fields.get("method"), model=fields.get("model"))
        names = {"method": method_dir(fields["method"])} if "method" in fields else {}
        if "model" in fields:
            names["model"] = fields["model"]
        return self._p(f"{s.folder.format(**names)}/{key}")

    # ------------------------------------------------------------------ paths
    def split(self, product: str) -> str:
        return f"{self._folder('split')}/{product}.json"

    def split_dir(self) -> str:
        return self._folder("split")

    def generator(self, product: str, group: str) -> str:
        return f"{self._folder('train_generator')}/{product}/{group}"

    def prior(self) -> str:
        """The weights file of the prior the stage train_prior pretrains (its manifest: ``.json`` beside it)."""
        return f"{self._folder('train_prior')}/tiny_prior.safetensors"

    def prior_manifest(self) -> str:
        return f"{self._folder('train_prior')}/tiny_prior.json"

    def rmp(self, product: str, group: str) -> str:
        return f"{self._folder('train_rmp')}/{product}/{group}"

    def pairs_root(self, method: str) -> str:
        """The folder holding a method's ``<product>/<type>/`` pairs."""
        if is_external(method):
            return self._folder("import_pairs", method=method)
        return self._folder("generate") if method == "seas" else self._folder("baselines", method=method)

    def generation_manifest(self, product: str, atype: str) -> str:
        return f"{self.pairs_root('seas')}/{product}/{atype}/manifest.csv"

    def pairs_dir(self, method: str, product: str) -> str:
        """A method's pairs of one product (its ``<type>/`` folders; a baseline job's output)."""
        return f"{self.pairs_root(method)}/{product}"


    def gen_metrics(self, method: str, product: str) -> str:
        return f"{self._folder('gen_metrics', method=method)}/{product}.json"

    def seg_dir(self, model: str, method: str, scope: str = "all") -> str:
        return f"{self._folder('train_seg', model=model, method=method)}/{scope}"

    def seg_model(self, model: str, method: str, scope: str = "all") -> str:
        return f"{self.seg_dir(model, method, scope)}/model.safetensors"

    def seg_info(self, model: str, method: str, scope: str = "all") -> str:
        return f"{self.seg_dir(model, method, scope)}/train.json"

    def scores(self, model: str, method: str, scope: str = "all") -> str:
        return f"{self._folder('evaluate', model=model, method=method)}/{scope}/scores.csv"

    def detector_dir(self, model: str, method: str = NO_METHOD) -> str:
        """A detector's folder (downstream.train_detector): scores.csv, train.json, run_record.json."""
        return self._folder("train_detector", model=model, method=method)

    def detector_scores(self, model: str, method: str = NO_METHOD) -> str:
        return f"{self.detector_dir(model, method)}/scores.csv"

    # ------------------------------------------------------------------ what a run holds
    def gen_metrics_methods(self) -> list[str]:
        """The configured methods that get generation metrics: all but ``real`` (the real images), the
        ``downstream.generation_only`` ones included."""
        return [m for m in all_methods(self.cfg) if m != "real"]

    def instances(self, name: str) -> list[dict]:
        """The identity fields (``method``, ``model``) of every instance of stage ``name`` in this configuration."""
        d = self.cfg["downstream"]
        s = stage(name)
        if s.folder is None:
            return [{}]
        if name == "train_detector":
            return detector_instances(self.cfg)
        if "{model}" in s.folder:
            return [{"model": model, "method": m} for model in d["models"] for m in d["methods"]]
        if name == "baselines":
            return [{"method": m} for m in all_methods(self.cfg) if m in BASELINE_METHODS]
        if name == "import_pairs":
            return [{"method": m} for m in all_methods(self.cfg) if is_external(m)]
        if "{method}" in s.folder:
            return [{"method": m} for m in self.gen_metrics_methods()]
        if name == "train_prior" and not (self.cfg["model"].get("tiny") and self.cfg["model"].get("tiny_prior") == "auto"):
            return []  # only model.tiny_prior auto may train a prior (whether it does: seas.models.prior_choice)
        return [{}] if s.for_method is None or s.for_method in all_methods(self.cfg) else []

    def instance_keys(self, name: str) -> list[str]:
        """The keys of every instance of stage ``name`` this configuration has (the workflow's jobs by key)."""
        return [self.key(name, **f) for f in self.instances(name)]

    def stage_folders(self) -> Iterator[tuple[str, str, str]]:
        """``(stage, description, folder)`` of every keyed stage instance of this configuration (folders above
        the per-product outputs)."""
        for s in STAGES.values():
            if s.folder is None or (s.name == "gen_metrics" and not self.cfg["gen_metrics"]["enabled"]):
                continue
            for f in self.instances(s.name):
                yield s.name, "/".join(f[k] for k in ("model", "method") if k in f), self._folder(s.name, **f)


def detector_instances(cfg: Mapping[str, Any]) -> list[dict]:
    """``downstream.detectors``' jobs: an unsupervised detector once (method ``none``), a ``+ pairs`` one
    (``draem_pairs``) per ``downstream.methods`` entry with pairs (not ``real``)."""
    d = cfg["downstream"]
    out = []
    for det in d.get("detectors") or []:
        if det.endswith("_pairs"):
            out += [{"model": det, "method": m} for m in d["methods"] if m != "real"]
        else:
            out.append({"model": det, "method": NO_METHOD})
    return out


class _Pattern(Layout):
    """Every key is the wildcard ``{k}``: the rules' output patterns come from the same path methods."""

    def key(self, name, method=None, model=None):
        return "{k}"

    def pairs_key(self, method):
        return "{k}"


def pattern(run: str) -> Layout:
    """The Snakemake output patterns: ``pattern(RUN).generator("{product}", "{group}")`` is
    ``<run>/generator/{k}/{product}/{group}``."""
    return _Pattern(run, None)


# ----------------------------------------------------------------------------- CLI
PATH_METHODS = ("split", "prior", "generator", "rmp", "pairs_root", "pairs_dir", "generation_manifest", "gen_metrics",
                "seg_dir", "seg_model", "seg_info", "scores")


@cli
def main(argv: Sequence[str] | None = None) -> int:
    from seas.run.config import load_config, run_dir

    p = argparse.ArgumentParser(
        prog="python -m seas.run.layout",
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
    for name, what, folder in layout.stage_folders():
        state = "exists" if Path(folder).exists() else "not built"
        print(f"{name:<13} {what:<22} {folder}  ({state})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

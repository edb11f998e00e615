"""One study's table (seas.run.studies): a row per variant x method, shaped like the paper's ablation tables.

    python -m downstream.report.study --config results/<run>/config.yaml --run-dir results/<run> --study NAME \\
        --out results/<run>/tables/study_NAME.csv

Each variant's configuration is rebuilt from the run config (seas.run.studies.variant_config) and its files are found
through its :class:`seas.run.layout.Layout`, so the rows read exactly the stage folders the workflow computed for that
variant (shared folders included). Columns:

``study``, ``paper_table``, ``variant`` (the paper's name), ``overrides`` (the variant's config overrides, JSON),
``dataset``, ``generator_model``, ``protocol`` (as in every table), ``method``, ``models`` (the segmentation
model(s) behind the scores: one name, or ``a+b+c (mean)``; a study with ``per_model: true``, Tab. 19, has a row
per model and one ``average`` row per variant x method), ``is``, ``ic_lpips``, ``kid`` (mean over products;
``n/a (...)`` without the networks' weights, empty for the method ``real``), the pixel columns of
``segmentation.csv`` and the image columns of ``detection.csv`` (mean over products, then over the models).
Numbers are rounded to the study's ``digits`` (as the paper prints that table; Tab. 22: 3).

The CLI reads the whole run config (it rebuilds every variant's configuration); the workflow reruns it when a
variant's score files change (their paths carry the stage keys) or the study's definition does.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from seas.run.config import add_config_arguments, config_from_args
from seas.run.errors import ConfigError
from seas.run.labels import method_label
from seas.run.runtime import cli, setup_logging
from seas.run.studies import Study, load_studies, variant_configs

from downstream.report.tables import (AVERAGE, DET_COLUMNS, DETECTOR, SEGMENTATION, GEN_COLUMNS, PRO_COLUMN, PRO_DATASETS, SEG_COLUMNS, _load_scores, _products, generation_table, summary_table, write_tables)
from seas.run.layout import Layout
from seas.run.stages import STAGES

log = logging.getLogger(__name__)

#: the config keys this stage reads: declared once, in the stage registry (seas.run.stages)
CONFIG_KEYS = STAGES["study"].config_keys

__all__ = ["LEAD_COLUMNS", "variant_rows", "study_table", "main"]

#: the columns a study with detectors adds after LEAD_COLUMNS
DETECTOR_COLUMNS = ["family", "parameters", "backbone_init"]
LEAD_COLUMNS = ["study", "paper_table", "variant", "overrides", "dataset", "generator_model", "protocol", "method",
                "models"]


def _models_label(models: Sequence[str]) -> str:
    return models[0] if len(models) == 1 else "+".join(models) + " (mean)"


def variant_rows(study: Study, variant: str, cfg: Mapping, run_dir: Path) -> list[dict]:
    """The rows of one variant: one per method."""
    d = cfg["downstream"]
    models, methods = list(d["models"]), list(d["methods"])
    with_pro = cfg["dataset"]["name"] in PRO_DATASETS
    seg_cols = SEG_COLUMNS + ([PRO_COLUMN] if with_pro else [])
    loaded = _load_scores(run_dir, models, methods, cfg)
    seg = summary_table(cfg, loaded, models, methods, seg_cols)
    det = summary_table(cfg, loaded, models, methods, DET_COLUMNS)
    gen = None
    lay = Layout(run_dir, cfg)
    if cfg["gen_metrics"]["enabled"] and lay.gen_metrics_methods():
        gen = generation_table(cfg, run_dir, lay.gen_metrics_methods(), _products(lay))
    rows = []
    # per_model (Tab. 19): a row per segmentation model, then the models' average; else the average alone
    per = [(mod, mod) for mod in models] + [(AVERAGE, AVERAGE)] if study.per_model else [(AVERAGE, _models_label(models))]
    for m in methods:
        label = method_label(m, cfg)
        for key, models_cell in per:
            s = seg[(seg["model"] == key) & (seg["method"] == label)].iloc[0]
            t = det[(det["model"] == key) & (det["method"] == label)].iloc[0]
            row = {"study": study.name, "paper_table": study.paper_table, "variant": variant,
                   "overrides": json.dumps(study.variants[variant], sort_keys=True),
                   "dataset": s["dataset"], "generator_model": s["generator_model"], "protocol": s["protocol"],
                   "method": label, "models": models_cell}
            if gen is not None and m != "real":
                g = gen[(gen["method"] == label) & (gen["product"] == "mean")].iloc[0]
                row.update({c: g[c] for c in GEN_COLUMNS})
            else:
                row.update({c: "" for c in GEN_COLUMNS})
            row.update({c: s[c] for c in seg_cols})
            row.update({c: t[c] for c in DET_COLUMNS})
            rows.append(row)
    # the variant's anomaly detectors (downstream.detectors; Tab. 11, 12, 33): a row each, models = the detector
    dets = (seg[seg["family"] == DETECTOR], det[det["family"] == DETECTOR]) if "family" in seg.columns else ([], [])
    for s, t in zip(*(getattr(d, "itertuples", lambda **_: [])(index=False) for d in dets)):
        row = {"study": study.name, "paper_table": study.paper_table, "variant": variant,
               "overrides": json.dumps(study.variants[variant], sort_keys=True), "dataset": s.dataset,
               "generator_model": s.generator_model, "protocol": s.protocol, "method": s.method, "models": s.model,
               "family": DETECTOR, "parameters": s.parameters, "backbone_init": s.backbone_init}
        row.update({c: "" for c in GEN_COLUMNS})
        row.update({c: getattr(s, c) for c in seg_cols})
        row.update({c: getattr(t, c) for c in DET_COLUMNS})
        rows.append(row)
    return rows


def study_table(base_cfg: Mapping, study: Study, run_dir: str | Path) -> pd.DataFrame:
    run_dir = Path(run_dir)
    rows = []
    for variant, cfg in variant_configs(base_cfg, study).items():
        rows += variant_rows(study, variant, cfg, run_dir)
    metric_cols = [c for c in GEN_COLUMNS + SEG_COLUMNS + [PRO_COLUMN] + list(DET_COLUMNS) if any(c in r for r in rows)]
    if any(r.get("family") == DETECTOR for r in rows):  # a study with detectors: which family and its size
        for r in rows:
            r.setdefault("family", SEGMENTATION)
            r.setdefault("parameters", "")
            r.setdefault("backbone_init", "")
        metric_cols = DETECTOR_COLUMNS + metric_cols
    return pd.DataFrame(rows, columns=LEAD_COLUMNS + metric_cols)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m downstream.report.study",
        description="Write one study's table (a row per variant x method: IS, IC-LPIPS, KID, pixel and image "
                    "scores averaged over the study's segmentation models) from a run's stage folders. Studies: "
                    "the run config's `studies:` and config/studies/*.yaml.")
    add_config_arguments(p)
    p.add_argument("--run-dir", required=True, help="results/<run_name>")
    p.add_argument("--study", required=True, help="the study's name")
    p.add_argument("--out", required=True, help="the CSV to write (the workflow: <results_dir>/<run_name>/tables/study_<name>.csv)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


@cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.verbose)
    cfg = config_from_args(args)
    studies = load_studies(cfg)
    if args.study not in studies:
        raise ConfigError(f"--study {args.study!r}: no such study; known: {', '.join(sorted(studies)) or 'none'} "
                          "(the config's `studies:` and config/studies/*.yaml)")
    table = study_table(cfg, studies[args.study], args.run_dir)
    out = Path(args.out)
    for path in write_tables({out.name: table}, out.parent, digits=studies[args.study].digits):
        log.info("wrote %s (%d rows)", path, len(table))
    from downstream.report.paper import write_vs_paper  # the paper's numbers beside ours

    log.info("wrote %s", write_vs_paper(out, cfg["dataset"]["name"], paper_table=studies[args.study].paper_table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The report's front page, written from the run's own records (nothing in it comes from a sentence that may be stale).

    python -m downstream.report.front_page --config results/demo/config.yaml --run-dir results/demo \\
        --tables-dir results/demo/tables --out results/demo/report/front_page.html

What it says, and where each fact comes from:

* dataset: the tables' ``dataset`` column and the config's ``dataset.root``; products and anomaly types: the run's
  split manifests (``split/<k>/<product>.json``: ``anomaly_types``, training anomalies, test images);
* the generator model as loaded: the generator checkpoints' ``tokens.json`` (``base``: the model folder or hub id
  it trained from, tiny or not, its weights -- ``tiny-pretrained`` with the prior file and its sha256,
  ``tiny-random``, or the Stable Diffusion checkpoint path/id), never the config's ``model.tiny`` flag; several
  different bases (a study varying the model) are all listed;
* the resolved protocol: the ``protocol`` column of segmentation.csv (the split rule and every departure from the
  authors' settings); the segmentation backbones' initialisation: its ``backbone_init`` column;
* whether the IS / LPIPS networks had real weights: generation.csv's ``inception_weights`` / ``lpips_weights``;
* total wall time and GPU-hours: cost.csv's ``total`` row (and the machines the run records name);
* the report's categories (the Snakemake report links them from its own front text, workflow/report/workflow.rst).

The page is the report's *Run* item, and its body is also shown on the report's first screen: workflow.rst reads
it back (the report's ``files`` records) into a raw-HTML block, so the front text itself states the run's facts.

Rendered with a jinja2 template (autoescaped).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Mapping, Sequence

import jinja2
import pandas as pd

from seas.run.config import add_config_arguments, config_from_args
from seas.run.errors import DataError
from seas.run.labels import TINY_PRETRAINED_LABEL, TINY_RANDOM_LABEL, method_label
from seas.run.layout import Layout
from seas.run.runtime import atomic_write_text, cli, setup_logging
from seas.run.stages import STAGES

from downstream.report.html_table import read_table

log = logging.getLogger(__name__)

#: the config keys this stage reads: declared once, in the stage registry (seas.run.stages)
CONFIG_KEYS = STAGES["front_page"].config_keys

__all__ = ["CATEGORIES", "products_types", "generator_bases", "model_description", "run_facts", "render", "main"]

#: the report's categories, in the order the front page lists them (rules/*.smk's report(category=...))
CATEGORIES = {"Run": "what was run (this summary, as its own page)",
              "Tables": "every table of the run (and the paper's values beside ours, the studies) as a page, numbers "
                        "rounded like the paper, best values bold",
              "Plots": "the tables drawn: methods x segmentation models, per-product heat map, generation metrics "
                       "with the mask-defect agreement beside its random-mask baseline, studies, cost",
              "Samples": "per product: the real training defects beside each method's pairs; per method and product: "
                         "sample grids",
              "CSV": "the machine-readable tables (downloads)"}


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON: {e}") from None


def products_types(lay: Layout) -> dict[str, dict]:
    """``{product: {"types": [...], "train": {type: n}, "test": n}}`` from the run's split manifests."""
    split_dir = Path(lay.split_dir())
    out = {}
    for f in sorted(split_dir.glob("*.json")) if split_dir.is_dir() else []:
        d = _json(f)
        types = list(d.get("anomaly_types", []))
        out[d.get("product", f.stem)] = {"types": types,
                                         "train": {t: len(d.get("train_anomalies", {}).get(t, [])) for t in types},
                                         "test": len(d.get("test", []))}
    if not out:
        raise DataError(f"no split manifest in {split_dir}: the run has not split its dataset yet")
    return out


def generator_bases(run_dir: str | Path) -> list[dict]:
    """The distinct ``base`` records of every generator checkpoint of the run (``generator/*/*/*/tokens.json``;
    the run's own and its studies' variants): what the generators actually trained from."""
    seen, out = set(), []
    for f in sorted((Path(run_dir) / "generator").glob("*/*/*/tokens.json")):
        if f.parent.name.endswith(".work") or ".tmp" in f.parent.name:  # an unfinished job's state
            continue
        base = _json(f).get("base")
        if not isinstance(base, dict):
            raise DataError(f"{f} lacks its 'base' record (a checkpoint of an older version: retrain the generator)")
        key = json.dumps(base, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(base)
    return out


def model_description(base: Mapping) -> dict:
    """``{"label", "detail"}`` of one generator base record: ``tiny-pretrained`` + prior file and sha256 (recorded at
    training time; older records: the model folder's marker, if it still says the same), ``tiny-random``, or the SD
    checkpoint (path / hub id, resolved folder, revision)."""
    if not base.get("tiny"):
        detail = f"Stable Diffusion checkpoint {base.get('pretrained')}"
        if base.get("resolved") and base.get("resolved") != base.get("pretrained"):
            detail += f" (folder {base['resolved']})"
        if base.get("revision"):
            detail += f", revision {base['revision']}"
        return {"label": str(base.get("pretrained")), "detail": detail}
    weights = base.get("tiny_weights", "random")
    if weights != "pretrained":
        return {"label": TINY_RANDOM_LABEL, "detail": f"tiny model with random weights ({base.get('pretrained')}): "
                "Stable Diffusion v1-4's structure, NOT Stable Diffusion; every number is a plumbing check"}
    prior, sha = base.get("tiny_prior"), base.get("tiny_prior_sha256")
    if not sha and base.get("resolved"):
        from seas.models.tiny_sd import read_marker

        marker = read_marker(base["resolved"]) if Path(base["resolved"]).is_dir() else None
        if marker and marker.get("weights") == "pretrained":
            prior, sha = marker.get("prior"), marker.get("prior_sha256")
    return {"label": TINY_PRETRAINED_LABEL,
            "detail": f"tiny model from the pretrained prior {prior or '(file not recorded)'}"
                      f" (sha256 {sha or 'not recorded'}) at {base.get('pretrained')}: Stable Diffusion v1-4's "
                      "structure at CPU widths, NOT Stable Diffusion; tiny-model numbers"}


def _unique(df: pd.DataFrame | None, col: str) -> list[str]:
    if df is None or col not in df.columns:
        return []
    return [str(v) for v in dict.fromkeys(df[col].dropna())]


def _count(v) -> str:
    try:
        return str(int(float(v)))
    except (TypeError, ValueError):
        return "?"


def _table(tables_dir: Path, name: str) -> pd.DataFrame | None:
    return read_table(tables_dir / name) if (tables_dir / name).is_file() else None


def run_facts(cfg: Mapping, run_dir: str | Path, tables_dir: str | Path) -> dict:
    """Everything the front page says, as plain data (the tests read it)."""
    run_dir, tables_dir = Path(run_dir), Path(tables_dir)
    lay = Layout(run_dir, cfg)
    seg = _table(tables_dir, "segmentation.csv")
    gen = _table(tables_dir, "generation.csv")
    cost = _table(tables_dir, "cost.csv")
    bases = generator_bases(run_dir)
    methods = [method_label(m) for m in cfg["downstream"]["methods"]]
    backbones = []
    if seg is not None and "backbone_init" in seg.columns:
        backbones = [f"{m}: {b}" for m, b in dict.fromkeys(
            zip(seg["model"].astype(str), seg["backbone_init"].astype(str))) if m != "average"]
    weights = {}
    if gen is not None:
        mean = gen[gen["product"].astype(str) == "mean"]
        for col, what in (("inception_weights", "Inception (IS, KID)"), ("lpips_weights", "LPIPS (IC-LPIPS)")):
            if col in mean.columns:
                weights[what] = "; ".join(
                    f"{m}: " + ("random network, no number reported" if str(w) == "random" else f"weights {w}")
                    for m, w in zip(mean["method"].astype(str), mean[col].astype(str)))
    total = None
    if cost is not None and (cost["stage"].astype(str) == "total").any():
        r = cost[cost["stage"].astype(str) == "total"].iloc[0]
        total = {"wall_h": float(r["seconds_total"]) / 3600 if pd.notna(r["seconds_total"]) else None,
                 "gpu_hours": float(r["gpu_hours"]) if pd.notna(r["gpu_hours"]) else None,
                 "machine": str(r.get("machine", "")), "jobs": f"{_count(r.get('measured_jobs'))} of {_count(r.get('jobs'))}"}
    return {
        "run_name": cfg["run_name"],
        "dataset": (_unique(seg, "dataset") or [cfg["dataset"]["name"]])[0],
        "dataset_root": str(cfg["dataset"]["root"]),
        "products": products_types(lay),
        "methods": methods,
        "seg_models": list(cfg["downstream"]["models"]),
        "models": [model_description(b) for b in bases] or (
            [] if "seas" not in cfg["downstream"]["methods"] else
            [{"label": "not trained yet", "detail": "no generator checkpoint in the run"}]),
        "generator_labels": _unique(seg, "generator_model"),
        "protocols": _unique(seg, "protocol"),
        "backbones": backbones,
        "weights": weights if cfg["gen_metrics"]["enabled"] else {"generation metrics": "not computed "
                                                                   "(gen_metrics.enabled: false)"},
        "total": total,
        "studies": list(cfg.get("studies") or []),
        "categories": dict(CATEGORIES),
    }


_TEMPLATE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string("""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Run {{ f.run_name }}</title>
<style>body {font-family: sans-serif; font-size: 14px; margin: 1em; max-width: 60em;} th {text-align: left;
padding-right: 1em; vertical-align: top;} td {vertical-align: top;}</style></head><body>
<h2>What run {{ f.run_name }} did</h2>
<p>Written from the run's own records (split manifests, the generators' tokens.json, the tables, cost.csv).</p>
<table class="facts">
<tr><th>dataset</th><td>{{ f.dataset }} (root {{ f.dataset_root }})</td></tr>
<tr><th>products and anomaly types</th><td>{% for p, d in f.products.items() %}<b>{{ p }}</b>:
 {% for t in d.types %}{{ t }} ({{ d.train[t] }} training){% if not loop.last %}, {% endif %}{% endfor %};
 {{ d.test }} test images<br>{% endfor %}</td></tr>
<tr><th>generator model as loaded</th><td>{% for m in f.models %}<b class="model">{{ m.label }}</b>: {{ m.detail }}<br>
{% else %}no generator (method seas not run){% endfor %}</td></tr>
<tr><th>methods</th><td>{{ f.methods | join(", ") }}</td></tr>
<tr><th>segmentation models</th><td>{{ f.seg_models | join(", ") }}{% if f.backbones %}<br>backbones:
 {{ f.backbones | join("; ") }}{% endif %}</td></tr>
<tr><th>protocol</th><td>{% for p in f.protocols %}<code>{{ p }}</code><br>{% else %}no table yet{% endfor %}</td></tr>
<tr><th>generation-metric networks</th><td>{% for k, v in f.weights.items() %}{{ k }}: {{ v }}<br>{% endfor %}</td></tr>
<tr><th>cost of the run</th><td>{% if f.total %}{{ fmt(f.total.wall_h) }} h wall time (sum of the jobs), {{ fmt(f.total.gpu_hours) }} GPU-hours; {{ f.total.jobs }} jobs measured; machine {{ f.total.machine }}{% else %}cost.csv not written{% endif %}</td></tr>
{% if f.studies %}<tr><th>studies</th><td>{{ f.studies | join(", ") }}</td></tr>{% endif %}
</table>
<h3>Categories of this report</h3><ul>
{% for k, v in f.categories.items() %}<li><b>{{ k }}</b>: {{ v }}</li>{% endfor %}
</ul></body></html>
""")


def _fmt(x) -> str:
    return "?" if x is None else f"{x:.3g}"


def render(facts: Mapping) -> str:
    return _TEMPLATE.render(f=facts, fmt=_fmt)


@cli
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m downstream.report.front_page", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(ap)
    ap.add_argument("--run-dir", required=True, help="results/<run_name>")
    ap.add_argument("--tables-dir", required=True, help="<run>/tables")
    ap.add_argument("--out", required=True, help="the HTML page to write (atomically)")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    cfg = config_from_args(args)
    out = atomic_write_text(args.out, render(run_facts(cfg, args.run_dir, args.tables_dir)))
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

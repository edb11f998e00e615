"""The paper's tables as CSVs, from one run's per-model scores and per-method generation metrics.

    python -m downstream.report.tables --config C --run-dir results/<run> --out-dir results/<run>/tables

Reads, in the run's stage folders of this configuration (:class:`seas.run.layout.Layout`: each keyed by the config
values its stage reads), the segmentation models' ``scores.csv`` (downstream.evaluate; one per product with
``downstream.protocol: per_product``), ``train.json`` (its ``backbone_init`` field), the generation metrics
``<product>.json`` (downstream.gen_metrics) and the product list from the split manifests. Writes:

``generation.csv``                Tab. 1: dataset, generator_model, protocol, method, product, is, ic_lpips, kid,
                                  inception_weights, lpips_weights; one row per method x product + a ``mean`` row
                                  per method. ``is``/``kid`` read ``n/a (no Inception weights)`` and ``ic_lpips``
                                  ``n/a (no LPIPS weights)`` when computed with random networks (weights not
                                  configured): plumbing, never a number to report.
``segmentation.csv``              Tab. 2: dataset, generator_model, protocol, model, backbone_init, method, pixel_auroc,
                                  pixel_ap, pixel_f1max, pixel_iou_best (the paper's IoU), pixel_iou_pooled, pixel_iou_fixed (+ pixel_pro for VisA);
                                  one row per model x method (the products' mean) + ``model = average`` rows
                                  (mean over models, per method, like Tab. 2's "average").
``detection.csv``                 Tab. 3: the same rows with image_auroc, image_ap, image_f1max.
``segmentation_per_product.csv``  Tab. 13-18: dataset, generator_model, protocol, product, metric, then one column per
``detection_per_product.csv``     ``<model>/<method>``; rows product x metric, products' ``mean`` last.

``cost.csv``, ``cost_per_job.csv`` Tab. 6/7, measured on this run (Snakemake benchmark files + the stage CLIs'
                                  run_record.json): see downstream.report.cost.

``protocol`` (every table) names the evaluation protocol: ``seas-unified`` (one segmentation model per dataset,
trained on a method's pairs of every product, tested on each product's held-out 2/3 of the real anomalies + its
good test images; ``seas-per-product`` with ``downstream.protocol: per_product``, Tab. 19) with the split rule
and every departure from the authors' training settings, e.g. ``seas-unified (split floor 1/3)`` (the paper's
setting) or ``seas-unified (split floor 1/3; bf16 autocast; generator accumulation 1)`` (:func:`protocol_label`).

Metrics are in percent (downstream.metrics.SCALE); IS, IC-LPIPS and KID as computed; the CSVs round every number
to 2 decimals like the paper (:func:`round_paper`; a non-zero value below 0.005, e.g. a KID, keeps 2 significant
digits), still plain numbers. generation.csv also has the mask-defect agreement (``agreement_ap``,
``agreement_iou`` and their ``*_random_mask`` chance baselines, percent; downstream.gen_metrics) or ``not computed``. ``generator_model`` names the
diffusion model behind the ``seas`` method of this run — ``tiny-random (not SD v1-4)`` for the tiny random
model (``model.tiny`` or a ``seas_tiny.json`` marker in the model folder), else ``model.pretrained``.
Method ``external:<path>`` is labelled ``external:<basename>`` and lives in the folder ``external-<basename>``
(:func:`seas.run.labels.method_dir`).
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from seas.run.config import add_config_arguments, config_from_args
from seas.run.errors import ConfigError, DataError
from seas.run.layout import NO_METHOD, Layout, detector_instances, seg_scopes
from seas.run.labels import PEER_UNET_TEST_SELECTION, all_methods, method_dir, method_label, setting_deviations, \
    test_copies_label, tiny_label

from downstream.evaluate import MEAN_ROW, add_mean_row, read_scores
from downstream.metrics import IMAGE_COLUMNS
from seas.models.tiny_sd import read_marker
from seas.run.runtime import RUN_RECORD, atomic_write_text, cli, setup_logging
from seas.run.stages import STAGES

log = logging.getLogger(__name__)

#: the config keys this stage reads: declared once, in the stage registry (seas.run.stages)
CONFIG_KEYS = STAGES["tables"].config_keys

__all__ = ["AVERAGE", "SEG_COLUMNS", "DET_COLUMNS", "NA_INCEPTION", "NA_LPIPS", "NOT_COMPUTED",
           "PROTOCOL", "generator_label", "protocol_label", "build_tables", "write_tables", "main"]

AVERAGE = "average"
#: the ``family`` column of segmentation.csv / detection.csv
SEGMENTATION, DETECTOR = "segmentation", "detector"
#: the ``method`` cell of an unsupervised detector's row
NO_METHOD_LABEL = "none (unsupervised)"
SEG_COLUMNS = ["pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_iou_best", "pixel_iou_pooled", "pixel_iou_fixed"]
PRO_COLUMN = "pixel_pro"
DET_COLUMNS = list(IMAGE_COLUMNS)
NOT_RECORDED = "not recorded"
PRO_DATASETS = ("visa",)
NA_INCEPTION = "n/a (no Inception weights)"
NA_LPIPS = "n/a (no LPIPS weights)"
NOT_COMPUTED = "not computed"
PROTOCOL = "seas-unified"
PROTOCOLS = {"unified": PROTOCOL, "per_product": "seas-per-product", "peer_per_product_unet": "peer-per-product-unet"}
PAPER_DIGITS = 2  # written CSVs round like the paper (round_paper)
#: decimals of each main table as the paper prints it (Tab. 1-3, 8-10, 13-18, 30-32: 2). cost.csv keeps 2 although
#: Tab. 7 prints whole hours and ms: a small run's GPU hours would round to 0. Study tables: their YAML's ``digits``.
TABLE_DIGITS = {"generation.csv": 2, "segmentation.csv": 2, "detection.csv": 2, "segmentation_per_product.csv": 2,
                "detection_per_product.csv": 2, "cost.csv": 2, "cost_per_job.csv": 2}



def generator_label(cfg: Mapping, run_dir: str | Path | None = None) -> str:
    """``tiny-pretrained (...)`` (a tiny model built from a pretrained prior: its ``seas_tiny.json`` says
    ``weights: pretrained``, or model.tiny_prior is set; what the prior saw from the marker's ``prior_data``:
    :func:`seas.run.labels.prior_label`, with ``; never saw: X`` for the run's products it never saw, checked against
    the run's split manifests in ``run_dir``), ``tiny-random (not SD v1-4)``, else model.pretrained."""
    m = cfg["model"]
    marker = read_marker(m["pretrained"]) if Path(m["pretrained"]).is_dir() else None
    if marker is None and m["tiny"]:
        marker = {"weights": "pretrained" if m["tiny_prior"] else "random"}
    if marker is None:
        return str(m["pretrained"])
    return tiny_label(marker, prior_unseen(cfg, marker, run_dir))


def prior_unseen(cfg: Mapping, marker: Mapping, run_dir: str | Path | None) -> list[str]:
    """The run's products whose train/good images the tiny model's prior never saw (seas.models.prior_choice), from
    the marker's ``prior_data`` and the hashes of the run's split manifests (``all_train_normals``)."""
    from seas.data.split import Split
    from seas.models.prior_choice import unseen_products

    data = marker.get("prior_data")
    if marker.get("weights") != "pretrained" or not data or run_dir is None:
        return []
    split_dir = Path(Layout(run_dir, cfg).split_dir())
    want = cfg["dataset"]["products"]
    files = sorted(split_dir.glob("*.json")) if split_dir.is_dir() else []
    hashes: dict[str, list[str] | None] = {}
    for f in files:
        s = Split.load(f)
        if want != "all" and s.product not in want:
            continue
        normals = s.all_train_normals if s.all_train_normals is not None else s.train_normals
        hashes[s.product] = [s.sha256[n] for n in normals] if all(n in s.sha256 for n in normals) else None
    manifest = {"resolution": marker.get("sample_size", cfg["model"]["resolution"]), "data": data}
    return unseen_products(manifest, cfg, list(hashes), hashes.get)


def protocol_label(cfg: Mapping, run_dir: str | Path | None = None) -> str:
    """``seas-unified (split floor 1/3)`` (or ``(split 2-shot)`` for an integer split.shots), followed by every way
    the run departs from the authors' training settings (:func:`seas.run.labels.setting_deviations`, e.g.
    ``seas-unified (split floor 1/3; bf16 autocast; generator accumulation 1)``), so a faster run is never read as
    the paper's setting. The run's split manifests, where they record ``shots``/``rule``, must agree with the
    config (else: rerun the split)."""
    shots, rule = cfg["split"]["shots"], cfg["split"]["rule"]
    split_dir = Path(Layout(run_dir, cfg).split_dir()) if run_dir is not None else None
    if split_dir is not None and split_dir.is_dir():
        for f in sorted(split_dir.glob("*.json")):
            try:
                d = json.loads(f.read_text())
            except json.JSONDecodeError as e:
                raise DataError(f"{f} is not valid JSON: {e}") from None
            got = (d.get("shots", shots), d.get("rule", "floor") if "shots" in d else rule)
            if got != (shots, rule) and not (isinstance(shots, int) and got[0] == shots):
                raise DataError(f"split manifest {f} was built with shots={got[0]!r} rule={got[1]!r} but the config "
                                f"says shots={shots!r} rule={rule!r}; rebuild the split (python -m seas.data.split split)")
    split = f"{rule} 1/3" if shots == "1/3" else f"{shots}-shot, " + (
        f"test set of the {rule} 1/3 split" if cfg["split"]["test_set"] == "one_third" else "test set the rest")
    lay = Layout(run_dir, cfg) if run_dir is not None else None
    records = _stage_records(lay.generator("p", "g")) if lay else []
    rmp_records = _stage_records(lay.rmp("p", "g")) if lay else []
    deviations = setting_deviations(cfg, records, rmp_records)
    d = cfg["downstream"]
    if d["protocol"] == "peer_per_product_unet" and d["peer_unet"]["select_on"] == "test":
        deviations.append(PEER_UNET_TEST_SELECTION)
    deviations += [test_copies_label(m, n) for m, n in _allowed_copies(lay, cfg).items()]
    return f"{PROTOCOLS[d['protocol']]} ({'; '.join([f'split {split}', *deviations])})"


def _allowed_copies(lay: Layout | None, cfg: Mapping) -> dict[str, int | None]:
    """``{method: test copies}`` of the methods in downstream.leakage.allow that were trained with copies, from
    their train.json files (``test_copies``, downstream.train_seg); a method allowed but not yet trained: None."""
    out: dict[str, int | None] = {}
    for m in cfg["downstream"]["leakage"]["allow"]:
        per_scope: dict[str, int] = {}  # every model of a scope trains on the same pairs
        for model in cfg["downstream"]["models"] if lay is not None else []:
            for f in sorted(Path(lay.seg_dir(model, m)).parent.glob("*/train.json")):
                try:
                    n = int(json.loads(f.read_text()).get("test_copies") or 0)
                except json.JSONDecodeError as e:
                    raise DataError(f"{f} is not valid JSON: {e}") from None
                per_scope[f.parent.name] = max(n, per_scope.get(f.parent.name, 0))
        if not per_scope:
            out[m] = None
        elif sum(per_scope.values()):
            out[m] = sum(per_scope.values())
    return out


def _stage_records(one_job_dir: str | Path) -> list[dict]:
    """The run records of every job of this config's generator (or RMP) stage, found from one job's folder
    (``<stage>/<k>/<product>/<group>``): the optimizer and precision they used."""
    root = Path(one_job_dir).parents[1]
    out = []
    for f in sorted(root.rglob(RUN_RECORD)) if root.is_dir() else []:
        try:
            out.append(json.loads(f.read_text()))
        except json.JSONDecodeError as e:
            raise DataError(f"{f} is not valid JSON: {e}") from None
    return out


def _check_unique(methods: Sequence[str]) -> None:
    dirs = [method_dir(m) for m in methods]
    dup = sorted({d for d in dirs if dirs.count(d) > 1})
    if dup:
        raise ConfigError(f"downstream.methods: several methods map to the same folder {dup}; "
                          "give external folders distinct names")


def _products(lay: Layout) -> list[str]:
    split_dir = Path(lay.split_dir())
    products = sorted(p.stem for p in split_dir.glob("*.json")) if split_dir.is_dir() else []
    if not products:
        raise DataError(f"no split manifest in {split_dir} (the product list of the run)")
    return products


def _backbone_init(folder: Path) -> str:
    meta = folder / "train.json"
    if not meta.is_file():
        return NOT_RECORDED
    try:
        value = json.loads(meta.read_text()).get("backbone_init")
    except json.JSONDecodeError as e:
        raise DataError(f"{meta} is not valid JSON: {e}") from None
    if value is None:
        return NOT_RECORDED
    value = str(value)
    if value.startswith("pretrained:"):  # downstream.train_seg writes "pretrained:<weights path>"
        return "pretrained:" + Path(value.split(":", 1)[1]).name
    return value


def _train_info(folder: Path) -> dict:
    meta = folder / "train.json"
    if not meta.is_file():
        return {}
    try:
        return json.loads(meta.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{meta} is not valid JSON: {e}") from None


def parameters_label(n) -> str:
    """The ``parameters`` cell: millions as the paper prints them (``24.86M``), or ``not recorded``."""
    if isinstance(n, list):
        return "/".join(parameters_label(v) for v in n)
    return NOT_RECORDED if n is None else f"{int(n) / 1e6:.2f}M"


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DataError(f"generation metrics file {path} does not exist (run `python -m downstream.gen_metrics` first)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON: {e}") from None
    missing = [k for k in ("is", "ic_lpips") if k not in data]
    if missing:
        raise DataError(f"{path} lacks keys: {', '.join(missing)}")
    return data


def _weights_label(value) -> str:
    if value in (None, "", "random"):
        return "random"
    return Path(str(value)).name


def _mean(values) -> float:
    return float(np.mean([float(v) for v in values])) if len(values) else math.nan


def _mean_or_label(values):
    """Mean of numbers; a row holding a label (n/a ..., not computed) makes the mean that label."""
    labels = sorted({v for v in values if isinstance(v, str)})
    return " / ".join(labels) if labels else _mean(values)


def _gen_values(d: Mapping) -> dict:
    """IS / IC-LPIPS / KID cells of one gen_metrics JSON: numbers only with real weights; the mask-defect agreement
    (AP / IoU of the generated masks against where the image departs from its normal twin, and against a randomly
    placed mask of the same shape) where it was computed."""
    random_inception = _weights_label(d.get("inception")) == "random"
    kid = d.get("kid")
    agree = d.get("agreement") or {}
    return {"is": NA_INCEPTION if random_inception else float(d["is"]),
            "ic_lpips": NA_LPIPS if _weights_label(d.get("lpips")) == "random" else float(d["ic_lpips"]),
            "kid": NOT_COMPUTED if kid is None else NA_INCEPTION if random_inception else float(kid),
            **{col: float(agree[key]) if key in agree else NOT_COMPUTED for col, key in AGREEMENT_COLUMNS.items()}}


# ----------------------------------------------------------------------------- tables
BASE_COLUMNS = ["dataset", "generator_model", "protocol"]
#: generation.csv column -> gen_metrics "agreement" key (downstream.gen_metrics.mask_defect_agreement, percent)
AGREEMENT_COLUMNS = {"agreement_ap": "ap", "agreement_ap_random_mask": "random_ap", "agreement_iou": "iou",
                     "agreement_iou_random_mask": "random_iou"}
GEN_COLUMNS = ["is", "ic_lpips", "kid", *AGREEMENT_COLUMNS]


def _base(cfg: Mapping, run_dir: Path | None) -> dict:
    """The columns every table starts with."""
    return {"dataset": cfg["dataset"]["name"], "generator_model": generator_label(cfg, run_dir),
            "protocol": protocol_label(cfg, run_dir)}


def generation_table(cfg: Mapping, run_dir: Path, methods: Sequence[str], products: Sequence[str]):
    base = _base(cfg, run_dir)
    lay = Layout(run_dir, cfg)
    rows = []
    for m in methods:
        per = []
        for p in products:
            d = _read_json(Path(lay.gen_metrics(m, p)))
            per.append({**base, "method": method_label(m, cfg), "product": p, **_gen_values(d),
                        "test_copies": d.get("test_copies", NOT_COMPUTED),
                        "inception_weights": _weights_label(d.get("inception")),
                        "lpips_weights": _weights_label(d.get("lpips"))})
        rows += per
        rows.append({**base, "method": method_label(m, cfg), "product": MEAN_ROW,
                     **{k: _mean_or_label([r[k] for r in per]) for k in GEN_COLUMNS},
                     "test_copies": _sum_or_label([r["test_copies"] for r in per]),
                     "inception_weights": "+".join(sorted({r["inception_weights"] for r in per})),
                     "lpips_weights": "+".join(sorted({r["lpips_weights"] for r in per}))})
    return pd.DataFrame(rows, columns=BASE_COLUMNS + ["method", "product"] + GEN_COLUMNS
                        + ["test_copies", "inception_weights", "lpips_weights"])


def _sum_or_label(values):
    """The products' total of test copies (the mean row of generation.csv); a product without a count: that label."""
    labels = sorted({v for v in values if isinstance(v, str)})
    return " / ".join(labels) if labels else int(sum(int(v) for v in values))


def _read_model_scores(lay: Layout, model: str, method: str, products: Sequence[str]) -> tuple[list[dict], list, str]:
    """The per-product rows + mean row of one (model, method): its one scores.csv (unified protocol) or the product
    rows of its per-product models' files, with the mean recomputed over them (per_product protocol)."""
    scopes = seg_scopes(lay.cfg, products)
    if scopes == ["all"]:
        path = Path(lay.scores(model, method))
        return read_scores(path), [path], _backbone_init(Path(lay.seg_dir(model, method)))
    rows, paths, inits = [], [], set()
    for scope, product in zip(scopes, products):
        path = Path(lay.scores(model, method, scope))
        mine = [r for r in read_scores(path) if r["product"] == product]
        if not mine:
            raise DataError(f"{path} has no row for product {product!r} (the product its model was trained on)")
        rows += mine
        paths.append(path)
        inits.add(_backbone_init(Path(lay.seg_dir(model, method, scope))))
    return add_mean_row(rows), paths, ";".join(sorted(inits))


def _load_scores(run_dir: Path, models: Sequence[str], methods: Sequence[str], cfg: Mapping) -> dict:
    lay = Layout(run_dir, cfg)
    all_products = _products(lay) if cfg["downstream"]["protocol"] != "unified" else []
    scores, products = {}, None
    for model in models:
        for m in methods:
            rows, paths, init = _read_model_scores(lay, model, m, all_products)
            prods = [r["product"] for r in rows if r["product"] != MEAN_ROW]
            if products is None:
                products = prods
            elif sorted(prods) != sorted(products):
                raise DataError(f"{', '.join(map(str, paths))} cover products {sorted(prods)}, "
                                f"other score files cover {sorted(products)}")
            scopes = seg_scopes(cfg, all_products) if all_products else ["all"]
            params = _train_info(Path(lay.seg_dir(model, m, scopes[0]))).get("parameters")
            scores[model, m] = {"rows": {r["product"]: r for r in rows}, "backbone_init": init,
                                "parameters": parameters_label(params)}
    detectors = {}
    for inst in detector_instances(cfg):
        det, m = inst["model"], inst["method"]
        path = Path(lay.detector_scores(det, m))
        rows = read_scores(path)
        prods = [r["product"] for r in rows if r["product"] != MEAN_ROW]
        if products is not None and sorted(prods) != sorted(products):
            raise DataError(f"{path} covers products {sorted(prods)}, the segmenters' score files {sorted(products)}")
        products = prods if products is None else products
        info = _train_info(path.parent)
        detectors[det, m] = {"rows": {r["product"]: r for r in rows},
                             "backbone_init": str(info.get("backbone_init", NOT_RECORDED)),
                             "parameters": parameters_label(info.get("parameters")),
                             "target": info.get("target")}
    return {"scores": scores, "detectors": detectors, "products": sorted(products or []), "run_dir": run_dir}


def detector_method_label(method: str) -> str:
    """The ``method`` cell of a detector row: ``none (unsupervised)`` or the pairs' method."""
    return NO_METHOD_LABEL if method == NO_METHOD else method_label(method)


def summary_table(cfg: Mapping, loaded: dict, models, methods, columns):
    """Tab. 2 / Tab. 3 layout: the products' mean per model x method, then the average over models."""
    base = _base(cfg, loaded.get("run_dir"))
    rows = []
    for model in models:
        for m in methods:
            s = loaded["scores"][model, m]
            mean = s["rows"][MEAN_ROW]
            rows.append({**base, "model": model, "family": SEGMENTATION, "parameters": s.get("parameters", NOT_RECORDED),
                         "backbone_init": s["backbone_init"], "method": method_label(m, cfg),
                         **{c: mean[c] for c in columns}})
    for m in methods:  # always present (with one model it repeats that model), so the layout is fixed
        mine = [r for r in rows if r["method"] == method_label(m, cfg)]
        inits = sorted({f"{r['model']}={r['backbone_init']}" for r in mine})
        rows.append({**base, "model": AVERAGE, "family": SEGMENTATION, "parameters": "",
                     "backbone_init": ";".join(inits), "method": method_label(m, cfg),
                     **{c: _mean([r[c] for r in mine]) for c in columns}})
    # the anomaly detectors (downstream.detectors): their own rows, never in the segmenters' average
    for (det, m), s in loaded.get("detectors", {}).items():
        mean = s["rows"][MEAN_ROW]
        proto = base["protocol"] + (f" [{s['target']}]" if s.get("target") else "")
        rows.append({**base, "protocol": proto, "model": det, "family": DETECTOR, "parameters": s["parameters"],
                     "backbone_init": s["backbone_init"], "method": detector_method_label(m),
                     **{c: mean[c] for c in columns}})
    return pd.DataFrame(rows, columns=BASE_COLUMNS + ["model", "family", "parameters", "backbone_init", "method"]
                        + list(columns))


def per_product_table(cfg: Mapping, loaded: dict, models, methods, columns):
    """Tab. 13-18 layout: rows product x metric, one column per ``<model>/<method>``."""
    base = _base(cfg, loaded.get("run_dir"))
    keys = [(model, m) for model in models for m in methods]
    names = [f"{model}/{method_label(m, cfg)}" for model, m in keys]
    dets = list(loaded.get("detectors", {}))
    det_names = [f"{det}/{detector_method_label(m)}" for det, m in dets]
    rows = []
    for product in list(loaded["products"]) + [MEAN_ROW]:
        for c in columns:
            row = {**base, "product": product, "metric": c}
            for (model, m), name in zip(keys, names):
                row[name] = loaded["scores"][model, m]["rows"][product][c]
            for key, name in zip(dets, det_names):
                row[name] = loaded["detectors"][key]["rows"][product][c]
            rows.append(row)
    names = names + det_names
    return pd.DataFrame(rows, columns=BASE_COLUMNS + ["product", "metric"] + names)


def _products_types(lay: Layout) -> dict[str, list[str]]:
    """``{product: anomaly types}`` from the run's split manifests (the cost table's expected jobs)."""
    out = {}
    for p in _products(lay):
        f = Path(lay.split(p))
        try:
            out[p] = list(json.loads(f.read_text()).get("anomaly_types", []))
        except json.JSONDecodeError as e:
            raise DataError(f"{f} is not valid JSON: {e}") from None
    return out


def build_tables(cfg: Mapping, run_dir: str | Path, *, generation: bool | None = None,
                 gen_methods: Sequence[str] | None = None, with_pro: bool | None = None, cost: bool = True) -> dict:
    """All tables as DataFrames keyed by file name. ``generation`` defaults to ``gen_metrics.enabled``;
    ``gen_methods`` to every configured method; ``with_pro`` to ``dataset.name == visa``; ``cost``: cost.csv and
    cost_per_job.csv from the run's benchmark files and run records (downstream.report.cost)."""
    run_dir = Path(run_dir)
    d = cfg["downstream"]
    models, methods = list(d["models"]), list(d["methods"])
    _check_unique(methods)
    with_pro = cfg["dataset"]["name"] in PRO_DATASETS if with_pro is None else with_pro
    seg_cols = SEG_COLUMNS + ([PRO_COLUMN] if with_pro else [])
    loaded = _load_scores(run_dir, models, methods, cfg)
    lay = Layout(run_dir, cfg)
    tables = {
        "segmentation.csv": summary_table(cfg, loaded, models, methods, seg_cols),
        "detection.csv": summary_table(cfg, loaded, models, methods, DET_COLUMNS),
        "segmentation_per_product.csv": per_product_table(cfg, loaded, models, methods, seg_cols),
        "detection_per_product.csv": per_product_table(cfg, loaded, models, methods, DET_COLUMNS),
    }
    if generation is None:
        generation = bool(cfg["gen_metrics"]["enabled"])
    if generation:
        gm = list(gen_methods) if gen_methods is not None else all_methods(cfg)  # + downstream.generation_only
        tables["generation.csv"] = generation_table(cfg, run_dir, gm, _products(lay))
    if cost:
        from downstream.report.cost import cost_tables

        tables["cost.csv"], tables["cost_per_job.csv"] = cost_tables(cfg, run_dir, _products_types(lay),
                                                                     _base(cfg, run_dir))
    return tables


def round_paper(value, digits: int = PAPER_DIGITS):
    """A number rounded to ``digits`` decimals like the paper; a non-zero number that would round to 0 (a KID of
    0.0012) keeps ``digits`` significant digits instead; anything else (a label, NaN, an integer) unchanged."""
    if isinstance(value, bool) or not isinstance(value, (float, np.floating)) or not math.isfinite(value):
        return value
    if value != 0 and abs(value) < 0.5 * 10 ** -digits:
        return float(f"{value:.{digits}g}")
    return round(float(value), digits)


def paper_rounding(df: pd.DataFrame, digits: int = PAPER_DIGITS) -> pd.DataFrame:
    """Every float cell through :func:`round_paper` (cells stay plain numbers: machine-readable)."""
    out = df.copy()
    for c in out.columns:
        if out[c].dtype.kind == "f" or out[c].dtype == object:
            out[c] = [round_paper(v, digits) for v in out[c]]
    return out


def write_tables(tables: Mapping, out_dir: str | Path, digits: int | None = None) -> list[Path]:
    """Each table rounded to ``digits`` decimals (default: its :data:`TABLE_DIGITS`, else :data:`PAPER_DIGITS`)."""
    out_dir = Path(out_dir)
    written = []
    for name, df in tables.items():
        buf = io.StringIO()
        paper_rounding(df, TABLE_DIGITS.get(name, PAPER_DIGITS) if digits is None else digits).to_csv(
            buf, index=False, lineterminator="\n")
        written.append(atomic_write_text(out_dir / name, buf.getvalue()))
    return written


# ----------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m downstream.report.tables",
        description="Collect a run's scores.csv and gen_metrics JSON files into the paper's tables "
                    "(generation.csv, segmentation.csv, detection.csv, *_per_product.csv) for the configured "
                    "downstream.models x downstream.methods, and its benchmark files + run records into "
                    "cost.csv / cost_per_job.csv. Metrics in percent.",
    )
    add_config_arguments(p)
    p.add_argument("--run-dir", required=True, help="results/<run_name>")
    p.add_argument("--out-dir", required=True, help="where the CSVs go (the workflow: <results_dir>/<run_name>/tables)")
    p.add_argument("--gen-methods", nargs="*", default=None,
                   help="methods with generation metrics (default: every configured method)")
    p.add_argument("--no-generation", action="store_true", help="skip generation.csv (default: gen_metrics.enabled)")
    p.add_argument("--pro", choices=["auto", "yes", "no"], default="auto",
                   help="add pixel_pro to the segmentation tables (auto: VisA only, as in the paper)")
    p.add_argument("-v", "--verbose", action="store_true")
    return p


@cli
def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setup_logging(args.verbose)
    cfg = config_from_args(args)
    tables = build_tables(cfg, args.run_dir, generation=False if args.no_generation else None,
                          gen_methods=args.gen_methods, with_pro={"auto": None, "yes": True, "no": False}[args.pro])
    written = write_tables(tables, args.out_dir)
    from downstream.report.paper import write_all_vs_paper  # the paper's numbers beside ours

    for path in written + write_all_vs_paper(written, cfg["dataset"]["name"]):
        log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The paper's numbers beside ours: ``<table>_vs_paper.csv`` for every regenerated table.

The paper's published values live in ``downstream/report/paper_values/`` (one CSV per paper table, cells copied
verbatim from the paper's text; ``index.yaml`` says which of our tables each one compares with, on which dataset,
by which key columns). :func:`write_vs_paper` reads one of our written CSVs (``segmentation.csv``, ...,
``study_<name>.csv``) back from disk and writes beside it ``<stem>_vs_paper.csv``, one row per (paper row or row of
ours) x metric:

``paper_table``  the source table (``Tab. 2``, ``Tab. R10``), ``paper_row`` its row label as printed
``variant``, ``model``, ``models``, ``method``, ``product``  our row's keys (empty where the table has none)
``metric``       our column name (``pixel_iou_best`` is the paper's IoU: downstream/metrics.py)
``ours``, ``paper``, ``diff``  ``diff = ours - paper`` where both are numbers (ours as written: rounded)
``note``         the paper-value file's note (contradictions, cells lost in the text), or why a side is empty

A paper row matches one of our rows when every key of its entry agrees: ``model`` / ``models`` / ``product``
equal (a blank paper cell matches any), ``method`` equal after normalising (``Ours`` = ``seas``;
``external:AnomalyDiffusion`` = ``AnomalyDiffusion``; case and punctuation ignored), ``variant`` equal to the
paper file's ``variant`` or ``paper_row`` or, for the paper's own setting (``default`` = 1), the study variant
without overrides. Rows of ours that no paper row matches are kept with an empty ``paper``; paper rows with no
row of ours keep an empty ``ours``: nothing is dropped silently. A dataset or study without a paper table writes
the header only.
"""
from __future__ import annotations

import io
import json
import math
import re
from functools import lru_cache
from pathlib import Path
from typing import Mapping

import pandas as pd
import yaml

from seas.run.errors import ConfigError, DataError
from seas.run.runtime import atomic_write_text

__all__ = ["PAPER_DIR", "VS_COLUMNS", "COMPARED_TABLES", "write_all_vs_paper", "load_index", "entries_for", "paper_values", "compare", "vs_paper_path",
           "write_vs_paper"]

PAPER_DIR = Path(__file__).with_name("paper_values")
VS_COLUMNS = ["paper_table", "paper_row", "variant", "model", "models", "method", "product", "metric", "ours",
              "paper", "diff", "note"]
KEY_COLUMNS = ["variant", "model", "models", "method", "product"]
#: columns of a paper-value file that are not metrics
_NON_METRIC = {"paper_row", "variant", "default", "models", "model", "method", "product", "note", "parameters",
               "anomaly_type", "lighting", "background", "stage"}
_LEAD = {"dataset", "generator_model", "protocol", "backbone_init", "study", "paper_table", "overrides"}
_PER_PRODUCT = ("segmentation_per_product.csv", "detection_per_product.csv")
#: the tables of downstream.report.tables that get a ``_vs_paper`` companion (always written: header only where
#: the dataset has no paper table, so the workflow can declare them)
COMPARED_TABLES = ("generation.csv", "segmentation.csv", "detection.csv", *_PER_PRODUCT)


@lru_cache(maxsize=None)
def _index(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"paper-value index {p} does not exist")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{p} is not valid YAML: {e}") from None
    tables = raw.get("tables")
    if not isinstance(tables, dict) or not tables:
        raise DataError(f"{p}: no `tables:` mapping")
    for key, e in tables.items():
        for field in ("file", "dataset", "target"):
            if field not in (e or {}):
                raise DataError(f"{p}: entry {key!r} lacks `{field}`")
        if e["target"] is not None and not e.get("keys"):
            raise DataError(f"{p}: entry {key!r} has a target but no `keys`")
        if not (p.parent / e["file"]).is_file():
            raise DataError(f"{p}: entry {key!r} names {e['file']}, which is not in {p.parent}")
    return tables


def load_index(directory: str | Path = PAPER_DIR) -> dict:
    """``{"Tab. 2": {file, dataset, target, keys, ...}, ...}`` from ``<directory>/index.yaml``."""
    return _index(str(Path(directory) / "index.yaml"))


def entries_for(table: str, dataset: str, paper_table: str | None = None, directory=PAPER_DIR) -> list[tuple]:
    """``[(key, entry), ...]`` comparing with our ``table`` (a CSV name, or ``study`` with ``paper_table``)."""
    out = []
    for key, e in load_index(directory).items():
        if e["target"] is None or e["dataset"] != dataset:
            continue
        if paper_table is not None:
            if e["target"] == "study" and key == paper_table.strip():
                out.append((key, e))
        elif e["target"] != "study" and table in e["target"]:
            out.append((key, e))
    return out


def paper_values(key: str, directory=PAPER_DIR) -> pd.DataFrame:
    """The paper-value file of table ``key`` (cells as text: empty = not printed / not legible)."""
    e = load_index(directory).get(key)
    if e is None:
        raise ConfigError(f"no paper values for {key!r} in {Path(directory) / 'index.yaml'}")
    path = Path(directory) / e["file"]
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _norm_method(m: str) -> str:
    m = str(m).strip()
    if m.lower().startswith("external:"):
        m = m.split(":", 1)[1]
    m = re.sub(r"\s*\(.*\)$", "", m)  # a label's qualifier: "draem (procedural textures, not DTD)" is DRAEM's column
    m = re.sub(r"[^0-9a-z]", "", m.lower())
    return "seas" if m == "ours" else m


def _num(v):
    if v is None or (isinstance(v, str) and not v.strip()):
        return math.nan
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x


def _ours_long(name: str, df: pd.DataFrame) -> list[dict]:
    """Our table as records ``{keys..., metric, ours, is_default}``."""
    recs = []
    if name in _PER_PRODUCT:
        cols = [c for c in df.columns if "/" in c]
        for _, r in df.iterrows():
            for c in cols:
                model, method = c.split("/", 1)
                recs.append({"model": model, "method": method, "product": r["product"], "metric": r["metric"],
                             "ours": r[c], "is_default": False})
        return recs
    keys = [k for k in KEY_COLUMNS if k in df.columns]
    metrics = [c for c in df.columns if c not in _LEAD and c not in keys]
    for _, r in df.iterrows():
        base = {k: r[k] for k in keys}
        default = "overrides" in df.columns and json.loads(str(r["overrides"]) or "{}") == {}
        for m in metrics:
            recs.append({**base, "metric": m, "ours": r[m], "is_default": default})
    return recs


def _matches(p: Mapping, o: Mapping, keys) -> bool:
    for k in keys:
        pv = str(p.get(k, "")).strip()
        if k == "variant":
            if o.get("variant") not in {pv, str(p.get("paper_row", "")).strip()} and not (
                    str(p.get("default", "0")).strip() == "1" and o.get("is_default")):
                return False
        elif k == "method":
            if _norm_method(pv) != _norm_method(o.get("method", "")):
                return False
        elif pv and k in o and str(o[k]) != pv:
            return False
        elif pv and k not in o:
            return False
    return True


def compare(name: str, ours: pd.DataFrame, dataset: str, paper_table: str | None = None,
            directory=PAPER_DIR) -> pd.DataFrame:
    """The ``<name>_vs_paper`` rows of our table ``name`` (its DataFrame as written) on ``dataset``."""
    recs = _ours_long(name, ours)
    rows = []
    for key, e in entries_for(name, dataset, paper_table, directory):
        used = set()
        pv = paper_values(key, directory)
        metrics = [c for c in pv.columns if c not in _NON_METRIC and c in {r["metric"] for r in recs}]
        for _, p in pv.iterrows():
            mine = [i for i, o in enumerate(recs) if _matches(p, o, e["keys"])]
            for metric in metrics:
                hit = [i for i in mine if recs[i]["metric"] == metric]
                o = recs[hit[0]] if hit else {}
                used.update(hit[:1])
                ours_v, paper_v = o.get("ours", ""), p[metric]
                d = _num(ours_v) - _num(paper_v)
                note = p.get("note", "") or ("" if hit else "no row of ours matches this paper row")
                if not str(paper_v).strip():
                    note = note or "not printed"
                rows.append({"paper_table": key, "paper_row": p["paper_row"],
                             **{k: o.get(k, p.get(k, "")) for k in KEY_COLUMNS},
                             "metric": metric, "ours": ours_v, "paper": paper_v,
                             "diff": round(d, 4) if math.isfinite(d) else "", "note": note})
        # a key the whole paper table fixes (Tab. 13: model = bisenetv2) limits which rows of ours it lists
        fixed = {k: pv[k].iloc[0] for k in e["keys"] if k in pv and k != "variant" and pv[k].nunique() == 1
                 and pv[k].iloc[0].strip()}
        for i, o in enumerate(recs):  # ours without a paper counterpart (on the metrics this paper table has)
            if i in used or o["metric"] not in metrics or _matches_any(o, pv, e["keys"]) or \
                    not _matches(fixed, o, list(fixed)):
                continue
            rows.append({"paper_table": key, "paper_row": "", **{k: o.get(k, "") for k in KEY_COLUMNS},
                             "metric": o["metric"], "ours": o["ours"], "paper": "", "diff": "",
                             "note": "no paper value for this row"})
    return pd.DataFrame(rows, columns=VS_COLUMNS)


def _matches_any(o: Mapping, pv: pd.DataFrame, keys) -> bool:
    return any(_matches(p, o, keys) for _, p in pv.iterrows())


def vs_paper_path(csv_path: str | Path) -> Path:
    p = Path(csv_path)
    return p.with_name(f"{p.stem}_vs_paper.csv")


def write_vs_paper(csv_path: str | Path, dataset: str, paper_table: str | None = None,
                   directory=PAPER_DIR) -> Path:
    """Read our written table ``csv_path`` back and write ``<stem>_vs_paper.csv`` beside it; returns its path."""
    path = Path(csv_path)
    if not path.is_file():
        raise DataError(f"table {path} does not exist (write it before comparing it with the paper)")
    ours = pd.read_csv(path, dtype=str, keep_default_na=False)
    table = compare(path.name, ours, dataset, paper_table, directory)
    buf = io.StringIO()
    table.to_csv(buf, index=False, lineterminator="\n")
    return atomic_write_text(vs_paper_path(path), buf.getvalue())


def write_all_vs_paper(written, dataset: str, directory=PAPER_DIR) -> list[Path]:
    """:func:`write_vs_paper` for each written table of :data:`COMPARED_TABLES` (the tables CLI's outputs)."""
    return [write_vs_paper(p, dataset, directory=directory) for p in written if Path(p).name in COMPARED_TABLES]

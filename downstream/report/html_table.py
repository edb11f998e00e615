"""Each table CSV of a run as a readable HTML page for the Snakemake report (pandas' Styler, rendered by jinja2).

    python -m downstream.report.html_table --tables results/demo/tables/segmentation.csv ... \\
        --out-dir results/demo/report/tables [--digits study_tab29_tau=2]

One ``<stem>.html`` per CSV. Numbers are printed like the paper: fixed decimals per table (the digits the CSVs are
written with -- :data:`downstream.report.tables.TABLE_DIGITS`, a study's ``digits`` through ``--digits``, else
:data:`~downstream.report.tables.PAPER_DIGITS`; a non-zero value that would print as 0, e.g. a KID, keeps that many
significant digits). The best value is bold, as in the paper, where "best" is well defined: per column among the
methods of one segmentation model (segmentation / detection), of one product (generation), among the variants of
one method (studies); per row among the ``<model>/<method>`` columns (``*_per_product``); higher or lower is better
per metric from :data:`METRIC_SENSE` (the one place; the plots read it too). Label cells (``n/a (no Inception
weights)``) stay as they are and never count as best. Every column is shown -- ``protocol``, ``generator_model`` and
``backbone_init`` included -- and the columns the whole table shares are also named above it. The CSVs stay the
machine-readable output. Reads no run config: the rule passes the files.
"""
from __future__ import annotations

import argparse
import html
import logging
import math
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from seas.run.cli_types import nonneg_int
from seas.run.errors import DataError
from seas.run.runtime import atomic_write_text, cli, setup_logging

from downstream.report.tables import PAPER_DIGITS, TABLE_DIGITS

log = logging.getLogger(__name__)

__all__ = ["METRIC_SENSE", "better", "table_digits", "format_cell", "best_cells", "styled", "render_html",
           "read_table", "main"]

#: higher or lower is better, per metric column of the tables (the one place: html_table bolds, plots say it)
METRIC_SENSE: dict[str, str] = {
    **{c: "higher" for c in ("pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_iou_best", "pixel_iou_pooled",
                             "pixel_iou_fixed", "pixel_pro", "image_auroc", "image_ap", "image_f1max",
                             "is", "ic_lpips", "agreement_ap", "agreement_iou")},
    "kid": "lower",
}
#: columns that group the rows among which one value is best (first present set wins), per table kind
_GROUPS = {"study": ("method", "models"), "generation": ("product",), "summary": ("model",)}
#: columns the table's rows share, named above the table as well
_SHARED = ("dataset", "generator_model", "protocol")


def better(metric: str) -> str | None:
    """``higher`` / ``lower`` (which is better), or None (not a score: a baseline, a weight name, a cost)."""
    return METRIC_SENSE.get(str(metric))


def table_digits(name: str, extra: Mapping[str, int] | None = None) -> int:
    """The decimals of table ``name`` (``segmentation.csv`` / ``segmentation``): ``extra`` (a study's digits), else
    the CSVs' :data:`TABLE_DIGITS`, else :data:`PAPER_DIGITS`; a ``_vs_paper`` table follows its table's."""
    stem = Path(str(name)).name.removesuffix(".csv").removesuffix(".html")
    base = stem.removesuffix("_vs_paper")
    for key in (stem, base):
        if extra and key in extra:
            return int(extra[key])
        if f"{key}.csv" in TABLE_DIGITS:
            return TABLE_DIGITS[f"{key}.csv"]
    return PAPER_DIGITS


def _number(v) -> float | None:
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    try:
        return float(str(v))
    except ValueError:
        return None


def format_cell(v, digits: int = PAPER_DIGITS) -> str:
    """A number with ``digits`` decimals (``45.3`` -> ``45.30``; ``0.0012`` -> ``0.0012``: significant digits where
    the decimals would print 0); an integer as it is; NaN / empty as ``–``; a label unchanged."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    x = _number(v)
    if x is None:
        return str(v)
    if math.isnan(x):
        return "–"
    if isinstance(v, (int, np.integer)) or (isinstance(v, str) and v.strip().lstrip("-").isdigit()):
        return str(int(x))
    if x != 0 and abs(x) < 0.5 * 10 ** -digits:
        return f"{x:.{digits}g}"
    return f"{x:.{digits}f}"


def _kind(name: str, df: pd.DataFrame) -> str | None:
    stem = Path(name).stem
    if stem.endswith("_vs_paper") or stem.startswith("cost"):
        return None
    if stem.endswith("_per_product") and "metric" in df.columns:
        return "per_product"
    if stem.startswith("study_"):
        return "study"
    if stem == "generation":
        return "generation"
    return "summary"


def best_cells(name: str, df: pd.DataFrame) -> pd.DataFrame:
    """A boolean frame like ``df``: True where a cell holds the best value of its group (see the module doc);
    ties are all marked; a group of one row marks nothing (nothing was compared)."""
    best = pd.DataFrame(False, index=df.index, columns=df.columns)
    kind = _kind(name, df)
    if kind is None:
        return best
    nums = df.map(_number)
    if kind == "per_product":
        lead = {"dataset", "generator_model", "protocol", "product", "metric"}
        cols = [c for c in df.columns if c not in lead]
        for i in df.index:
            sense = better(df.at[i, "metric"])
            vals = {c: nums.at[i, c] for c in cols if nums.at[i, c] is not None and not math.isnan(nums.at[i, c])}
            if sense and len(vals) > 1:
                top = (max if sense == "higher" else min)(vals.values())
                for c, v in vals.items():
                    best.at[i, c] = v == top
        return best
    keys = [c for c in _GROUPS[kind] if c in df.columns]
    groups = df.groupby(keys if len(keys) > 1 else keys[0], sort=False).groups.values() if keys else [df.index]
    for col in df.columns:
        sense = better(col)
        if not sense:
            continue
        for idx in groups:
            vals = {i: nums.at[i, col] for i in idx if nums.at[i, col] is not None and not math.isnan(nums.at[i, col])}
            if len(vals) > 1:
                top = (max if sense == "higher" else min)(vals.values())
                for i, v in vals.items():
                    best.at[i, col] = v == top
    return best


def styled(name: str, df: pd.DataFrame, digits: int):
    """The table as a pandas Styler: paper-like numbers, best values bold, no index."""
    marks = best_cells(name, df)
    return (df.style.format(lambda v: format_cell(v, digits))
            .apply(lambda _: marks.map(lambda b: "font-weight: bold" if b else ""), axis=None)
            .hide(axis="index")
            .set_table_attributes('class="seas-table"')
            .set_table_styles([{"selector": "th", "props": "text-align: left; border-bottom: 1px solid #444;"},
                               {"selector": "td", "props": "padding: 2px 8px; border-bottom: 1px solid #ddd;"}]))


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body {{font-family: sans-serif; font-size: 13px; margin: 1em;}} table.seas-table {{border-collapse: collapse;}}
td {{white-space: nowrap;}} p.shared {{color: #333;}}</style></head>
<body><h2>{title}</h2>{shared}<p>{note}</p>
{table}
</body></html>
"""


def render_html(name: str, df: pd.DataFrame, digits: int) -> str:
    """One table as a whole HTML page: title, the columns every row shares, the note on bold values, the table."""
    shared = []
    for c in _SHARED:
        if c in df.columns and df[c].nunique(dropna=False) == 1 and len(df):
            shared.append(f"<b>{html.escape(c)}</b>: {html.escape(str(df[c].iloc[0]))}")
    note = (f"Numbers as written to {html.escape(Path(name).name)} ({digits} decimals). "
            + ("Bold: the best value of its group (higher is better; KID: lower)." if _kind(name, df) else
               "No value is marked: the rows are not alternatives to one another."))
    if df.empty:
        note += " The table has no rows (for a _vs_paper table: the paper has no table for this dataset or study)."
    return _PAGE.format(title=html.escape(Path(name).stem), note=note,
                        shared="<p class='shared'>" + "<br>".join(shared) + "</p>" if shared else "",
                        table=styled(name, df, digits).to_html())


def read_table(path: str | Path) -> pd.DataFrame:
    """A table CSV as written (strings where a column holds labels; empty cells as NaN)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"table {p} does not exist (run the tables rule first)")
    try:
        return pd.read_csv(p, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise DataError(f"{p} is empty (not even a header): rerun the tables rule") from None
    except pd.errors.ParserError as e:
        raise DataError(f"{p} is not a valid CSV: {e}") from None


def _digits_arg(text: str) -> tuple[str, int]:
    name, sep, d = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected TABLE=DIGITS, got {text!r}")
    return name, nonneg_int(d)


@cli
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m downstream.report.html_table", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables", nargs="+", required=True, help="table CSVs (<run>/tables/*.csv)")
    ap.add_argument("--out-dir", required=True, help="where <stem>.html go")
    ap.add_argument("--digits", action="append", type=_digits_arg, default=[], metavar="TABLE=DIGITS",
                    help="decimals of one table (a study's `digits`; the others: as their CSVs are written)")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    extra = dict(args.digits)
    for path in args.tables:
        out = Path(args.out_dir) / f"{Path(path).stem}.html"
        atomic_write_text(out, render_html(path, read_table(path), table_digits(path, extra)))
        print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The report's plots (matplotlib, Agg backend, PNG), drawn from a run's table CSVs.

    python -m downstream.report.plots --tables-dir results/demo/tables --out-dir results/demo/report/plots \\
        [--only segmentation_methods generation ...]

Which plot reads which table: :mod:`downstream.report.plot_specs` (one :class:`PlotSpec` per PNG). Every bar is a
number of the table as written (rounded like the paper); a black diamond is the paper's value for the same row and
metric from the ``<table>_vs_paper.csv`` companion, where it holds one (the demo dataset has none). A panel whose
column holds labels instead of numbers (``n/a (no Inception weights)``) says so in the panel rather than drawing
zeros. Which direction is better comes from :data:`downstream.report.html_table.METRIC_SENSE` and is printed in
each panel's title. Reads no run config.
"""
from __future__ import annotations

import argparse
import io
import logging
import math
import sys
from pathlib import Path
from typing import Callable, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from seas.run.errors import DataError  # noqa: E402
from seas.run.runtime import atomic_write_bytes, cli, setup_logging  # noqa: E402

from downstream.report.html_table import better, format_cell, read_table  # noqa: E402
from downstream.report.plot_specs import PlotSpec, specs_for  # noqa: E402

log = logging.getLogger(__name__)

__all__ = ["DRAWERS", "numeric", "paper_points", "draw", "write_plots", "main"]

PAPER_MARKER = {"marker": "D", "color": "black", "s": 28, "zorder": 5, "label": "paper"}
MEAN = "mean"
AVERAGE = "average"


def numeric(values) -> list[float | None]:
    """Cells as floats; a label (``n/a (...)``, ``not computed``) or an empty cell as None."""
    out = []
    for v in values:
        try:
            x = float(v)
        except (TypeError, ValueError):
            x = None
        out.append(None if x is None or math.isnan(x) else x)
    return out


def _labels(values) -> str:
    return " / ".join(sorted({str(v) for v, x in zip(values, numeric(values)) if x is None and str(v) != "nan"}))


def paper_points(vs: pd.DataFrame | None, metric: str, keys: Sequence[str]) -> dict[tuple, float]:
    """``{our row's key values: paper value}`` of one metric from a ``_vs_paper`` table (numbers only)."""
    if vs is None or vs.empty:
        return {}
    out = {}
    for _, r in vs[vs["metric"] == metric].iterrows():
        p = numeric([r.get("paper")])[0]
        if p is not None:
            out[tuple("" if pd.isna(r.get(k)) else str(r.get(k)) for k in keys)] = p
    return out


def _sense(metric: str) -> str:
    s = better(metric)
    return f" ({s} is better)" if s else ""


def _grouped_bars(ax, groups: Sequence[str], series: Sequence[str], value: Callable, paper: Callable | None,
                  metric: str) -> None:
    """Bars: x = groups, one colour per series; ``value(group, series)`` -> float | None; paper markers."""
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    drew_paper = False
    for j, s in enumerate(series):
        vals = [value(g, s) for g in groups]
        pos = x - 0.4 + width * (j + 0.5)
        ax.bar(pos, [np.nan if v is None else v for v in vals], width, label=s)
        for p, v in zip(pos, vals):  # the table's number on its bar; a missing one says so
            ax.annotate("n/a" if v is None else format_cell(v), (p, 0 if v is None else v), ha="center",
                        va="bottom", fontsize=6, color="grey" if v is None else "black")
        if paper is not None:
            pts = [(p, paper(g, s)) for p, g in zip(pos, groups)]
            pts = [(p, y) for p, y in pts if y is not None]
            if pts:
                ax.scatter(*zip(*pts), **{**PAPER_MARKER, "label": None if drew_paper else "paper"})
                drew_paper = True
    ax.set_xticks(x, groups, rotation=20 if max(map(len, groups), default=0) > 10 else 0, fontsize=7)
    ax.set_title(metric + _sense(metric), fontsize=9)
    ax.grid(axis="y", alpha=0.3)


def _no_numbers(ax, metric: str, text: str) -> None:
    ax.text(0.5, 0.5, text or "no value", ha="center", va="center", wrap=True, fontsize=8, transform=ax.transAxes)
    ax.set_title(metric, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _figure(n_panels: int, title: str, width: float = 4.2, height: float = 3.4):
    fig, axes = plt.subplots(1, n_panels, figsize=(width * n_panels, height), squeeze=False)
    fig.suptitle(title, fontsize=10)
    return fig, list(axes[0])


def _cell(df: pd.DataFrame, cond: Mapping[str, str], col: str) -> float | None:
    m = np.ones(len(df), dtype=bool)
    for k, v in cond.items():
        m &= df[k].astype(str).to_numpy() == v
    vals = numeric(df.loc[m, col]) if col in df.columns else []
    return vals[0] if vals else None


def _legend(fig, axes) -> None:
    handles, labels = {}, []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in handles:
                handles[lab] = h
                labels.append(lab)
    if handles:
        fig.legend([handles[lab] for lab in labels], labels, loc="lower center", ncol=min(len(labels), 6), fontsize=7,
                   frameon=False)


# ----------------------------------------------------------------------------- drawers: (spec, table, vs) -> Figure
def draw_methods(spec: PlotSpec, df: pd.DataFrame, vs: pd.DataFrame | None):
    models = list(dict.fromkeys(df["model"].astype(str)))
    methods = list(dict.fromkeys(df["method"].astype(str)))
    fig, axes = _figure(len(spec.metrics), spec.title)
    for ax, metric in zip(axes, spec.metrics):
        pts = paper_points(vs, metric, ("model", "method"))
        _grouped_bars(ax, models, methods, lambda g, s: _cell(df, {"model": g, "method": s}, metric),
                      lambda g, s: pts.get((g, s)), metric)
        ax.set_xlabel("segmentation model", fontsize=8)
    _legend(fig, axes)
    return fig


def draw_heatmap(spec: PlotSpec, df: pd.DataFrame, vs: pd.DataFrame | None):
    metric = spec.metrics[0]
    rows = df[df["metric"].astype(str) == metric]
    lead = {"dataset", "generator_model", "protocol", "product", "metric"}
    cols = [c for c in df.columns if c not in lead]
    products = rows["product"].astype(str).tolist()
    mat = np.array([[np.nan if v is None else v for v in numeric(rows[c])] for c in cols], dtype=float).T
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(cols), 1.0 + 0.45 * len(products)))
    # colours span the values shown (a tiny run's few percent would all be one colour on 0-100); numbers on the cells
    im = ax.imshow(mat, cmap="viridis", aspect="auto")
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            if not math.isnan(mat[i, j]):
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if mat[i, j] < np.nanmean(mat) else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=35, ha="right", fontsize=7)
    ax.set_yticks(range(len(products)), products, fontsize=7)
    ax.set_title(f"{spec.title}{_sense(metric)}", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.05)
    return fig


def draw_generation(spec: PlotSpec, df: pd.DataFrame, vs: pd.DataFrame | None):
    mean = df[df["product"].astype(str) == MEAN]
    methods = list(dict.fromkeys(mean["method"].astype(str)))
    fig, axes = _figure(len(spec.metrics), spec.title, width=3.4)
    for ax, metric in zip(axes, spec.metrics):
        if metric not in mean.columns:
            _no_numbers(ax, metric, "not in the table")
            continue
        baseline = f"{metric}_random_mask"
        vals = numeric(mean[metric])
        if all(v is None for v in vals):
            _no_numbers(ax, metric, _labels(mean[metric]))
            continue
        pts = paper_points(vs, metric, ("method",))
        if baseline in mean.columns:  # the agreement beside its chance level
            series = ["generated mask", "random mask"]

            def value(g, s, metric=metric, baseline=baseline):
                return _cell(mean, {"method": g}, metric if s == series[0] else baseline)

            _grouped_bars(ax, methods, series, value, None, metric)
        else:
            _grouped_bars(ax, methods, ["ours"], lambda g, s, metric=metric: _cell(mean, {"method": g}, metric),
                          lambda g, s: pts.get((g,)), metric)
    _legend(fig, axes)
    return fig


def draw_study(spec: PlotSpec, df: pd.DataFrame, vs: pd.DataFrame | None):
    if "models" in df.columns and (df["models"].astype(str) == AVERAGE).any():
        df = df[df["models"].astype(str) == AVERAGE]  # per_model studies (Tab. 19): the models' average
    variants = list(dict.fromkeys(df["variant"].astype(str)))
    methods = list(dict.fromkeys(df["method"].astype(str)))
    fig, axes = _figure(len(spec.metrics), spec.title + (f" ({df['paper_table'].iloc[0]})" if
                                                          "paper_table" in df.columns and len(df) else ""))
    for ax, metric in zip(axes, spec.metrics):
        pts = paper_points(vs, metric, ("variant", "method"))
        _grouped_bars(ax, variants, methods, lambda g, s: _cell(df, {"variant": g, "method": s}, metric),
                      lambda g, s: pts.get((g, s)), metric)
        ax.set_xlabel("variant", fontsize=8)
    _legend(fig, axes)
    return fig


def draw_cost(spec: PlotSpec, df: pd.DataFrame, vs: pd.DataFrame | None):
    rows = df[df["stage"].astype(str) != "total"]
    names = [f"{s} ({m})" if isinstance(m, str) and m and m != "nan" else str(s)
             for s, m in zip(rows["stage"], rows["model"])]
    hours = [np.nan if v is None else v / 3600 for v in numeric(rows["seconds_total"])]
    gpu = [np.nan if v is None else v for v in numeric(rows["gpu_hours"])]
    total = df[df["stage"].astype(str) == "total"]
    wall = numeric(total["seconds_total"])[0] if len(total) else None
    gh = numeric(total["gpu_hours"])[0] if len(total) else None
    fig, ax = plt.subplots(figsize=(1.5 + 0.8 * len(names), 3.6))
    x = np.arange(len(names))
    ax.bar(x - 0.2, hours, 0.4, label="wall hours (sum of jobs)")
    ax.bar(x + 0.2, gpu, 0.4, label="GPU-hours")
    ax.set_xticks(x, names, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("hours", fontsize=8)
    ax.set_title(spec.title + (f": total {wall / 3600:.3g} h wall, {gh:.3g} GPU-h" if wall is not None and gh is not None
                               else ""), fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(axis="y", alpha=0.3)
    return fig


DRAWERS: dict[str, Callable] = {"methods": draw_methods, "heatmap": draw_heatmap, "generation": draw_generation,
                                "study": draw_study, "cost": draw_cost}


def draw(spec: PlotSpec, tables_dir: str | Path) -> bytes:
    """The PNG of one plot from the tables in ``tables_dir`` (its ``_vs_paper`` companion when it exists)."""
    tables_dir = Path(tables_dir)
    df = read_table(tables_dir / spec.table)
    vs_path = tables_dir / f"{Path(spec.table).stem}_vs_paper.csv"
    vs = read_table(vs_path) if vs_path.is_file() else None
    missing = [c for c in {"methods": ("model", "method"), "heatmap": ("product", "metric"),
                           "generation": ("method", "product"), "study": ("variant", "method"),
                           "cost": ("stage", "model", "seconds_total", "gpu_hours")}[spec.kind] if c not in df.columns]
    if missing:
        raise DataError(f"{tables_dir / spec.table} lacks the columns {missing} the plot {spec.name} reads")
    fig = DRAWERS[spec.kind](spec, df, vs)
    fig.tight_layout(rect=(0, 0.08, 1, 1) if fig.legends else None)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def write_plots(tables_dir: str | Path, out_dir: str | Path, only: Sequence[str] | None = None) -> list[Path]:
    """Every plot whose table exists in ``tables_dir`` (or the named ``only``) as ``<out_dir>/<name>.png``."""
    tables = sorted(p.name for p in Path(tables_dir).glob("*.csv"))
    specs = specs_for(tables)
    if only:
        unknown = sorted(set(only) - {s.name for s in specs})
        if unknown:
            raise DataError(f"no plot named {unknown} for the tables in {tables_dir} "
                            f"(known: {[s.name for s in specs]})")
        specs = [s for s in specs if s.name in only]
    written = []
    for spec in specs:
        written.append(atomic_write_bytes(Path(out_dir) / f"{spec.name}.png", draw(spec, tables_dir)))
    return written


@cli
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m downstream.report.plots", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tables-dir", required=True, help="<run>/tables (the CSVs of downstream.report.tables/study)")
    ap.add_argument("--out-dir", required=True, help="where <name>.png go")
    ap.add_argument("--only", nargs="*", default=None, help="these plots only (names of downstream.report.plot_specs)")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    for p in write_plots(args.tables_dir, args.out_dir, args.only):
        print(f"wrote {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

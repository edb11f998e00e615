"""Which plot of the report is drawn from which table (pure Python: the Snakefile reads it to name the outputs).

A :class:`PlotSpec` names the PNG (``<name>.png`` under ``<run>/report/plots/``), the table it reads from
``<run>/tables/``, how it is drawn (``kind``, a drawer of :mod:`downstream.report.plots`) and the metrics it shows.
The paper's values, where the ``<table>_vs_paper.csv`` companion holds some, are drawn as markers beside ours.

``methods``   segmentation.csv / detection.csv: bars per method, grouped by segmentation model, one panel per metric
``heatmap``   segmentation_per_product.csv: product x ``<model>/<method>`` of the main metric (pixel AP)
``generation`` generation.csv (mean rows): IS, IC-LPIPS, KID per method; the mask-defect agreement (AP, IoU) beside
              its random-mask baseline
``study``     study_<name>.csv: one bar per variant (x), one series per method, one panel per metric
``cost``      cost.csv: wall hours per stage (GPU-hours beside them)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

__all__ = ["PlotSpec", "SPECS", "STUDY_METRICS", "specs_for", "plot_names"]


@dataclass(frozen=True)
class PlotSpec:
    name: str
    table: str
    kind: str
    metrics: tuple[str, ...]
    title: str


#: the main metric of the heat map and the studies: the paper's headline segmentation scores
STUDY_METRICS = ("pixel_ap", "pixel_iou_best")

SPECS = (
    PlotSpec("segmentation_methods", "segmentation.csv", "methods", ("pixel_ap", "pixel_iou_best"),
             "Segmentation: methods x segmentation models (pixel AP, IoU)"),
    PlotSpec("detection_methods", "detection.csv", "methods", ("image_auroc", "image_ap"),
             "Detection: methods x segmentation models (image AUROC, AP)"),
    PlotSpec("segmentation_heatmap", "segmentation_per_product.csv", "heatmap", ("pixel_ap",),
             "Pixel AP per product and model/method"),
    PlotSpec("generation", "generation.csv", "generation",
             ("is", "ic_lpips", "kid", "agreement_ap", "agreement_iou"),
             "Generation metrics per method (mean over products)"),
    PlotSpec("cost", "cost.csv", "cost", ("seconds_total", "gpu_hours"), "Measured cost per stage"),
)


def specs_for(table_names: Iterable[str]) -> list[PlotSpec]:
    """The plots of a run whose tables are ``table_names`` (``segmentation.csv`` or ``segmentation``; studies as
    ``study_<name>``): the fixed ones whose table exists, then one per study table, in that order."""
    names = {Path(str(n)).stem for n in table_names}
    out = [s for s in SPECS if Path(s.table).stem in names]
    for n in sorted(names):
        if n.startswith("study_") and not n.endswith("_vs_paper"):
            out.append(PlotSpec(n, f"{n}.csv", "study", STUDY_METRICS, f"Study {n.removeprefix('study_')}"))
    return out


def plot_names(table_names: Iterable[str]) -> list[str]:
    """The PNG stems of :func:`specs_for` (the Snakefile's outputs)."""
    return [s.name for s in specs_for(table_names)]

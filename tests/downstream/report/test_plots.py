"""downstream.report.plots: the report's PNGs from the tables (bars = the tables' numbers, paper markers, labels)."""
from __future__ import annotations

import io

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from test_tables import _cfg, fabricate  # noqa: E402 (pytest puts this folder on sys.path)

from downstream.report import plots, tables
from downstream.report.html_table import read_table
from downstream.report.plot_specs import PlotSpec, specs_for


@pytest.fixture
def written(tmp_path):
    cfg = _cfg(tmp_path)
    run = fabricate(tmp_path / "results" / "r", cfg)
    out = tmp_path / "tables"
    tables.write_tables(tables.build_tables(cfg, run), out)
    return out


def _spec(table):
    return next(s for s in specs_for([table]) if s.table == table)


def _bars(ax) -> list[float]:
    return [p.get_height() for p in ax.patches]


def test_methods_bars_are_the_tables_numbers_and_paper_values_are_markers(written):
    seg = read_table(written / "segmentation.csv")
    spec = _spec("segmentation.csv")
    vs = pd.DataFrame([{"paper_table": "Tab. 2", "model": "lfd", "method": "seas", "metric": "pixel_ap",
                        "ours": 1.0, "paper": 55.5, "diff": 0.0}])
    fig = plots.draw_methods(spec, seg, vs)
    ax_ap, ax_iou = fig.axes[:2]
    models = list(dict.fromkeys(seg.model))
    methods = list(dict.fromkeys(seg.method))
    # bars: per method (series) the models in order
    want = [float(seg[(seg.model == g) & (seg.method == m)].pixel_ap.iloc[0]) for m in methods for g in models]
    assert np.allclose(_bars(ax_ap), want)
    assert "higher is better" in ax_ap.get_title()
    paper = [c for c in ax_ap.collections if c.get_label() == "paper"]
    assert len(paper) == 1 and np.allclose(paper[0].get_offsets()[:, 1], [55.5])
    assert not [c for c in ax_iou.collections if c.get_label() == "paper"]  # no paper value for IoU here
    plt.close(fig)


def test_heatmap_holds_the_per_product_values(written):
    per = read_table(written / "segmentation_per_product.csv")
    fig = plots.draw_heatmap(_spec("segmentation_per_product.csv"), per, None)
    arr = fig.axes[0].images[0].get_array()
    rows = per[per.metric == "pixel_ap"]
    assert arr.shape == (len(rows), len(per.columns) - 5)
    assert np.allclose(arr[:, 0], rows.iloc[:, 5].astype(float))
    plt.close(fig)


def test_generation_agreement_beside_its_random_baseline_and_labels_in_words(written):
    gen = read_table(written / "generation.csv")
    spec = _spec("generation.csv")
    fig = plots.draw_generation(spec, gen, None)
    axes = dict(zip(spec.metrics, fig.axes))
    mean = gen[gen["product"] == "mean"].set_index("method")
    # agreement AP: per method the generated mask, then the random-mask baseline (only seas has it: NaN bars else)
    ap = _bars(axes["agreement_ap"])
    n = len(mean)
    assert ap[list(mean.index).index("seas")] == pytest.approx(float(mean.loc["seas", "agreement_ap"]))
    assert ap[n + list(mean.index).index("seas")] == pytest.approx(float(mean.loc["seas", "agreement_ap_random_mask"]))
    plt.close(fig)
    # a column of labels only: the panel says why there is no number
    gen.loc[:, "ic_lpips"] = "n/a (no LPIPS weights)"
    fig = plots.draw_generation(spec, gen, None)
    ax = fig.axes[spec.metrics.index("ic_lpips")]
    assert [t.get_text() for t in ax.texts] == ["n/a (no LPIPS weights)"] and not ax.patches
    plt.close(fig)


def test_study_one_group_per_variant():
    df = pd.DataFrame([{"study": "s", "paper_table": "Tab. 29", "variant": v, "method": "seas", "models": "lfd",
                        "pixel_ap": ap, "pixel_iou_best": ap / 2} for v, ap in (("tau=0.2", 40.0), ("tau=0.5", 30.0))])
    vs = pd.DataFrame([{"variant": "tau=0.2", "method": "seas", "metric": "pixel_ap", "paper": 58.1}])
    spec = PlotSpec("study_s", "study_s.csv", "study", ("pixel_ap", "pixel_iou_best"), "Study s")
    fig = plots.draw_study(spec, df, vs)
    assert _bars(fig.axes[0]) == [40.0, 30.0]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["tau=0.2", "tau=0.5"]
    assert "Tab. 29" in fig._suptitle.get_text()  # the figure title names the paper table
    paper = [c for c in fig.axes[0].collections if c.get_label() == "paper"]
    assert np.allclose(paper[0].get_offsets(), [[-0.0, 58.1]])
    plt.close(fig)


def test_cli_writes_every_plot_as_png(written, tmp_path, capsys):
    out = tmp_path / "plots"
    assert plots.main(["--tables-dir", str(written), "--out-dir", str(out)]) == 0
    names = [s.name for s in specs_for(p.name for p in written.glob("*.csv"))]
    assert sorted(p.stem for p in out.glob("*.png")) == sorted(names) and "generation" in names
    for p in out.glob("*.png"):
        with Image.open(io.BytesIO(p.read_bytes())) as im:
            assert im.format == "PNG" and im.width > 200
    assert plots.main(["--tables-dir", str(written), "--out-dir", str(out), "--only", "nope"]) == 2
    assert "no plot named ['nope']" in capsys.readouterr().err

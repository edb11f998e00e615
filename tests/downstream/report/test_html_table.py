"""downstream.report.html_table: every table CSV as an HTML page (Styler), paper-like numbers, best values bold."""
from __future__ import annotations

import math
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from test_tables import _cfg, fabricate  # noqa: E402 (pytest puts this folder on sys.path)

from downstream.report import html_table, tables  # noqa: E402
from downstream.report.html_table import best_cells, format_cell, table_digits  # noqa: E402


class Cells(HTMLParser):
    """The text of every <td> and <th> of a page, and which <td> ids the page's CSS makes bold."""

    def __init__(self, text: str):
        super().__init__()
        self.td, self.th, self.bold_ids, self._in, self._style, self._id = [], [], set(), None, False, None
        self.ids = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag in ("td", "th"):
            self._in, self._id = tag, dict(attrs).get("id")
            getattr(self, tag).append("")
            if tag == "td":
                self.ids.append(self._id)
        self._style = self._style or tag == "style"

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._in = None
        if tag == "style":
            self._style = False

    def handle_data(self, data):
        if self._in:
            getattr(self, self._in)[-1] += data
        elif self._style:
            import re

            for block in re.findall(r"([^{}]+)\{([^}]*)\}", data):
                if "font-weight: bold" in block[1]:
                    self.bold_ids |= {s.strip().lstrip("#") for s in block[0].split(",")}

    def bold(self) -> list[str]:
        return [t.strip() for t, i in zip(self.td, self.ids) if i in self.bold_ids]


@pytest.fixture
def written(tmp_path):
    cfg = _cfg(tmp_path)
    run = fabricate(tmp_path / "results" / "r", cfg)
    out = tmp_path / "tables"
    tables.write_tables(tables.build_tables(cfg, run), out)
    return out


def test_format_cell_known_answers():
    assert format_cell(45.3, 2) == "45.30" and format_cell(45.678, 1) == "45.7"
    assert format_cell(0.0012, 2) == "0.0012"  # a KID: significant digits where the decimals would print 0
    assert format_cell("n/a (no Inception weights)") == "n/a (no Inception weights)"
    assert format_cell(3) == "3" and format_cell("7") == "7" and format_cell(math.nan) == "–"
    assert format_cell(0.0) == "0.00"


def test_digits_are_the_csvs_own():
    assert table_digits("segmentation.csv") == tables.TABLE_DIGITS["segmentation.csv"]
    assert table_digits("results/x/tables/segmentation_vs_paper.csv") == tables.TABLE_DIGITS["segmentation.csv"]
    assert table_digits("study_tab22_shots.csv", {"study_tab22_shots": 3}) == 3
    assert table_digits("study_other.csv") == tables.PAPER_DIGITS


def test_every_number_is_a_cell_and_the_best_is_bold(written):
    seg = html_table.read_table(written / "segmentation.csv")
    page = html_table.render_html("segmentation.csv", seg, 2)
    cells = Cells(page)
    # every cell of the CSV is a table cell of the page, as the paper prints it (2 decimals)
    for _, row in seg.iterrows():
        for c in seg.columns:
            assert format_cell(row[c], 2) in [t.strip() for t in cells.td], (c, row[c])
    assert {"protocol", "generator_model", "backbone_init"} <= {t.strip() for t in cells.th}
    # the best method per segmentation model and metric: external (fabricated: +3 per method index), bold
    best = best_cells("segmentation.csv", seg)
    lfd = seg[seg.model == "lfd"]
    top = lfd.loc[lfd.pixel_ap.idxmax()]
    assert top.method == "external:anomalydiffusion" and best.at[top.name, "pixel_ap"]
    assert best["pixel_ap"].sum() == 3  # one per model: bisenetv2, lfd, average
    assert not best["method"].any() and not best["protocol"].any()
    assert format_cell(top.pixel_ap, 2) in cells.bold()
    assert len(cells.bold()) == int(best.to_numpy().sum())


def test_kid_lower_is_better_and_labels_never_win(written):
    gen = html_table.read_table(written / "generation.csv")
    best = best_cells("generation.csv", gen)
    mean = gen[gen["product"] == "mean"]
    kid = {r.method: best.at[i, "kid"] for i, r in mean.iterrows()}
    # seas 0.00125 < external 0.00325; cutpaste has no KID (a label): never marked
    assert kid == {"seas": True, "cutpaste": False, "external:anomalydiffusion": False}
    # IS: seas and external have numbers, cutpaste's is a label -> the larger number of the two
    is_best = {r.method: best.at[i, "is"] for i, r in mean.iterrows()}
    assert is_best == {"seas": False, "cutpaste": False, "external:anomalydiffusion": True}
    assert not best["agreement_ap_random_mask"].any()  # a chance baseline is not a score


def test_per_product_best_is_per_row(written):
    per = html_table.read_table(written / "segmentation_per_product.csv")
    best = best_cells("segmentation_per_product.csv", per)
    # lfd/external has the largest value of every row (fabricated: +10 per model, +3 per method)
    assert best["lfd/external:anomalydiffusion"].all() and best.to_numpy().sum() == len(per)


def test_no_bold_where_rows_are_not_alternatives(written):
    from downstream.report.paper import write_all_vs_paper

    vs = write_all_vs_paper([written / "segmentation.csv"], "mvtec_ad")[0]
    for name in (vs, written / "cost.csv"):
        df = html_table.read_table(name)
        assert not best_cells(Path(name).name, df).to_numpy().any()


def test_cli_writes_one_page_per_table(written, tmp_path, capsys):
    csvs = sorted(str(p) for p in written.glob("*.csv"))
    out = tmp_path / "pages"
    assert html_table.main(["--tables", *csvs, "--out-dir", str(out), "--digits", "detection=1"]) == 0
    assert sorted(p.stem for p in out.glob("*.html")) == sorted(Path(p).stem for p in csvs)
    det = pd.read_csv(written / "detection.csv")
    cells = [t.strip() for t in Cells((out / "detection.html").read_text()).td]
    assert format_cell(det.image_auroc.iloc[0], 1) in cells  # --digits applies
    assert html_table.main(["--tables", str(tmp_path / "missing.csv"), "--out-dir", str(out)]) == 2
    assert "missing.csv does not exist" in capsys.readouterr().err

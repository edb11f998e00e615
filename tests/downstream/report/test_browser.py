"""The report's table pages in a real browser: headless Chromium's DOM dump of segmentation.html shows a known
number of segmentation.csv as visible text (a table cell, not only markup or an attachment).

Skips, saying why, where no Chromium is installed; ``SEAS_REQUIRE_BROWSER=1`` (set by .ci/run when it installed
Debian's chromium) turns that skip into a failure, so CI never passes without having looked.
"""
from __future__ import annotations

import re
from html.parser import HTMLParser

from test_tables import _cfg, fabricate  # noqa: E402 (pytest puts this folder on sys.path)

from browser import browser, dump_dom  # tests/browser.py
from downstream.report import html_table, tables


class VisibleCells(HTMLParser):
    """The text of the <td> cells of a DOM (what the browser lays out as the table)."""

    def __init__(self, text):
        super().__init__()
        self.cells, self._in = [], False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "td":
            self._in = True
            self.cells.append("")

    def handle_endtag(self, tag):
        if tag == "td":
            self._in = False

    def handle_data(self, data):
        if self._in:
            self.cells[-1] += data


def test_a_known_number_is_visible_in_the_tables_page(tmp_path):
    exe = browser()
    cfg = _cfg(tmp_path)
    run = fabricate(tmp_path / "results" / "r", cfg)
    out = tmp_path / "tables"
    tables.write_tables(tables.build_tables(cfg, run, cost=False), out)
    seg = html_table.read_table(out / "segmentation.csv")
    lfd_seas = seg[(seg.model == "lfd") & (seg.method == "seas")].iloc[0]
    known = html_table.format_cell(lfd_seas.pixel_ap, 2)
    page = tmp_path / "segmentation.html"
    page.write_text(html_table.render_html("segmentation.csv", seg, 2))
    dom = dump_dom(exe, page.as_uri(), tmp_path)
    assert "<table" in dom and re.search(r"<td[^>]*>\s*" + re.escape(known) + r"\s*</td>", dom)
    assert known in [c.strip() for c in VisibleCells(dom).cells]
    assert "seas-unified" in dom  # the protocol column is visible too

"""downstream.report.paper: the paper's values (downstream/report/paper_values) and the <table>_vs_paper.csv files."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from downstream.report import paper, tables
from downstream.report.study import LEAD_COLUMNS
from seas.run.studies import load_studies

from test_tables import _cfg, fabricate  # noqa: E402 (pytest puts this folder on sys.path)

ROOT = Path(__file__).resolve().parents[3]
KNOWN_METRICS = set(tables.SEG_COLUMNS) | {tables.PRO_COLUMN} | set(tables.DET_COLUMNS) | set(tables.GEN_COLUMNS)


def test_every_shipped_study_and_main_table_has_paper_values():
    index = paper.load_index()
    for f in sorted((ROOT / "config" / "studies").glob("*.yaml")):
        key = yaml.safe_load(f.read_text())["paper_table"]
        if f.stem.endswith("_extra"):  # variants the paper does not print: nothing to compare with, said in the label
            assert "not in the paper" in key and key not in index, f
            continue
        assert key in index and index[key]["target"] == "study", f
        assert paper.entries_for("study", index[key]["dataset"], paper_table=key), f
    for dataset in ("mvtec_ad", "mvtec_3d", "visa"):
        for table in ("generation.csv", "segmentation.csv", "detection.csv"):
            assert paper.entries_for(table, dataset), (dataset, table)
    assert {k for k, _ in paper.entries_for("segmentation_per_product.csv", "mvtec_ad")} == {"Tab. 13", "Tab. 15", "Tab. 17"}
    assert {k for k, _ in paper.entries_for("detection_per_product.csv", "mvtec_ad")} == {"Tab. 14", "Tab. 16", "Tab. 18"}
    assert {f"Tab. {i}" for i in range(1, 34)} <= set(index)  # every numbered table is recorded


def test_paper_value_files_use_our_column_names_and_are_all_indexed():
    index = paper.load_index()
    assert sorted(e["file"] for e in index.values()) == sorted(p.name for p in paper.PAPER_DIR.glob("*.csv"))
    for key, e in index.items():
        pv = paper.paper_values(key)
        if e["target"] is not None:
            metrics = [c for c in pv.columns if c not in paper._NON_METRIC]
            assert metrics and set(metrics) <= KNOWN_METRICS, (key, metrics)
            assert set(e["keys"]) <= set(pv.columns) | {"variant"}, key
        for c in pv.columns:
            if c not in paper._NON_METRIC and c not in {"training_hours", "inference_ms_per_image",
                                                        "minutes_per_product", "overall_time"}:
                assert all(v == "" or float(v) >= 0 for v in pv[c]), (key, c)


def test_the_paper_disagreeing_with_itself_is_recorded_both_ways():
    t2 = paper.paper_values("Tab. 2").set_index(["model", "method"])
    t17 = paper.paper_values("Tab. 17").set_index(["model", "method", "product"])
    assert t2.loc[("lfd", "Ours"), "pixel_iou_best"] == "56.47"
    assert t17.loc[("lfd", "Ours", "mean"), "pixel_iou_best"] == "57.62"
    assert "Tab. 2" in t17.loc[("lfd", "Ours", "mean"), "note"]
    t3 = paper.paper_values("Tab. 3").set_index(["model", "method"])
    t18 = paper.paper_values("Tab. 18").set_index(["model", "method", "product"])
    assert (t3.loc[("lfd", "Ours"), "image_auroc"], t18.loc[("lfd", "Ours", "mean"), "image_auroc"]) == ("95.88", "96.70")
    t4, t27 = paper.paper_values("Tab. 4"), paper.paper_values("Tab. 27")
    cols = ["pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_iou_best"]
    assert t4.loc[t4.paper_row == "(c) w/o NA", cols].values.tolist() == t27.loc[t27.paper_row == "w/o NIA", cols].values.tolist()
    assert "Tab. 4" in t27.loc[t27.paper_row == "w/o NIA", "note"].item()


def _vs(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def test_vs_paper_is_computed_from_the_written_csv(tmp_path):
    """tables CLI on an MVTec AD-labelled run: segmentation_vs_paper.csv compares the written segmentation.csv with
    Tab. 2 (seas = Ours, external:anomalydiffusion = AnomalyDiffusion); editing ours on disk changes the diff."""
    cfg = _cfg(tmp_path, dataset="mvtec_ad")
    run_dir = fabricate(tmp_path / "results" / "r", cfg)
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "tables"
    assert tables.main(["--config", str(cfg_path), "--run-dir", str(run_dir), "--out-dir", str(out)]) == 0
    seg = pd.read_csv(out / "segmentation.csv")
    vs = _vs(out / "segmentation_vs_paper.csv")
    assert list(vs.columns) == paper.VS_COLUMNS

    def cell(df, model, method, metric):
        r = df[(df.paper_table == "Tab. 2") & (df.model == model) & (df.method == method) & (df.metric == metric)]
        assert len(r) == 1, (model, method, metric)
        return r.iloc[0]

    ours = seg[(seg.model == "bisenetv2") & (seg.method == "seas")].pixel_iou_best.item()
    r = cell(vs, "bisenetv2", "seas", "pixel_iou_best")
    assert (r.paper_row, r.paper) == ("BiSeNet V2", "55.28")
    assert float(r.ours) == ours and float(r["diff"]) == pytest.approx(ours - 55.28)
    ad = cell(vs, "lfd", "external:anomalydiffusion", "pixel_auroc")
    assert ad.paper == "96.30" and float(ad["diff"]) == pytest.approx(float(ad.ours) - 96.30)
    # a paper row without a row of ours (UPerNet is not in this run) keeps an empty `ours`
    assert (vs[(vs.paper_row == "UPerNet") & (vs.metric == "pixel_ap")].ours == "").all()
    # a row of ours the paper does not have (cutpaste) keeps an empty `paper`
    assert (vs[vs.method == "cutpaste"].paper == "").all() and (vs.method == "cutpaste").any()
    # change one of ours on disk: the difference follows
    seg.loc[(seg.model == "bisenetv2") & (seg.method == "seas"), "pixel_iou_best"] = 60.0
    seg.to_csv(out / "segmentation.csv", index=False)
    paper.write_vs_paper(out / "segmentation.csv", "mvtec_ad")
    assert float(cell(_vs(out / "segmentation_vs_paper.csv"), "bisenetv2", "seas", "pixel_iou_best")["diff"]) \
        == pytest.approx(60.0 - 55.28)
    # per-product tables: the `mean` row against Tab. 13's Average row
    pp = _vs(out / "segmentation_per_product_vs_paper.csv")
    r = pp[(pp.paper_table == "Tab. 13") & (pp["product"] == "mean") & (pp.method == "seas") & (pp.metric == "pixel_ap")]
    assert r.paper.item() == "69.21" and r.ours.item() != ""
    # a dataset without a paper table: the header only
    empty = tables.write_tables({"segmentation.csv": seg}, tmp_path / "demo")
    assert _vs(paper.write_vs_paper(empty[0], "demo")).empty


def test_study_rows_match_by_name_or_as_the_default(tmp_path):
    """A study table (downstream.report.study's columns): the paper's own setting matches the variant without
    overrides whatever its name; other rows by variant name; an extra variant keeps an empty `paper`."""
    rows = []
    for variant, ov, iou in [("SeaS renamed", {}, 50.0), ("w/o NA", {"generator": {"na_loss": False}}, 49.0),
                             ("extra", {"generator": {"num_df_tokens": 8}}, 48.0)]:
        rows.append({"study": "tab4_components", "paper_table": "Tab. 4", "variant": variant,
                     "overrides": json.dumps(ov), "dataset": "mvtec_ad", "generator_model": "m", "protocol": "p",
                     "method": "seas", "models": "bisenetv2", "is": "n/a (no Inception weights)", "ic_lpips": 0.3,
                     "pixel_auroc": 90.0, "pixel_ap": 60.0, "pixel_f1max": 55.0, "pixel_iou_best": iou})
    path = tmp_path / "study_tab4_components.csv"
    pd.DataFrame(rows, columns=LEAD_COLUMNS + list(rows[0])[len(LEAD_COLUMNS):]).to_csv(path, index=False)
    vs = _vs(paper.write_vs_paper(path, "mvtec_ad", paper_table="Tab. 4"))
    iou = vs[vs.metric == "pixel_iou_best"].set_index("paper_row")
    assert (iou.loc["(e) All (Ours)", "variant"], iou.loc["(e) All (Ours)", "diff"]) == ("SeaS renamed", "-5.28")
    assert float(iou.loc["(c) w/o NA", "diff"]) == pytest.approx(49.0 - 53.97)
    assert iou.loc["(a) with TP", "ours"] == ""  # not run here
    assert vs[(vs.variant == "extra") & (vs.metric == "pixel_iou_best")].paper.item() == ""
    is_row = vs[(vs.paper_row == "(e) All (Ours)") & (vs.metric == "is")].iloc[0]
    assert (is_row.ours, is_row.paper, is_row["diff"]) == ("n/a (no Inception weights)", "1.88", "")
    # a study whose paper table has no values: the header only
    assert _vs(paper.write_vs_paper(path, "mvtec_ad", paper_table="")).empty


def test_shipped_studies_load_with_paper_tables_that_exist(tmp_path):
    studies = load_studies(_cfg(tmp_path, dataset="mvtec_ad"))
    index = paper.load_index()
    shipped = [s for s in studies.values() if s.source != "config"]
    assert studies and all(s.paper_table in index for s in shipped if not s.name.endswith("_extra"))
    assert all("not in the paper" in s.paper_table for s in shipped if s.name.endswith("_extra"))


def test_the_workflow_declares_the_same_companions():
    text = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    block = text[text.index("COMPARED_TABLES = ["):]
    block = block[:block.index("]") + 1]
    assert eval(block.split("=", 1)[1]) == list(paper.COMPARED_TABLES)

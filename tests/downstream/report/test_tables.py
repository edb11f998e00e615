"""downstream.report.tables + downstream.report.md_table on fabricated scores.csv / gen_metrics JSON files."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from downstream.report import md_table, tables
from downstream.evaluate import write_scores
from downstream.metrics import METRIC_COLUMNS
from seas.run.config import validate_config
from seas.run.errors import DataError
from seas.run.labels import TINY_PRETRAINED_LABEL, TINY_RANDOM_LABEL
from seas.run.layout import Layout
from seas.run.labels import method_dir, method_label

MODELS = ["bisenetv2", "lfd"]
METHODS = ["seas", "cutpaste", "external:/data/other/anomalydiffusion/"]
PRODUCTS = ["washer", "weave"]


def _value(model: str, method: str, product: str, metric: str) -> float:
    """A distinct, recomputable number per cell."""
    return (10 * MODELS.index(model) + 3 * [m for m in METHODS].index(method) + PRODUCTS.index(product)
            + METRIC_COLUMNS.index(metric) / 10)


def _cfg(tmp_path, dataset="demo", tiny=True, **downstream):
    raw = {
        "results_dir": str(tmp_path / "results"), "run_name": "r",
        "dataset": {"name": dataset, "root": str(tmp_path / "data")},
        # the authors' training settings: the protocol label names no departure (test_protocol_names_each_...)
        "model": {"pretrained": str(tmp_path / "sd"), "tiny": tiny, "mixed_precision": "no"},
        "generator": {"gradient_accumulation": 2, "optimizer": "adamw8bit"}, "rmp": {"optimizer": "adamw8bit"},
        "downstream": {"models": MODELS, "methods": METHODS, "include_real_anomalies": True, **downstream},
    }
    return validate_config(raw, source="<test>")


def fabricate(run: Path, cfg) -> Path:
    """A run's outputs for configuration cfg, in its stage folders (seas.run.layout): splits, score files, a train.json
    for lfd, generation metrics."""
    lay = Layout(run, cfg)
    for p in PRODUCTS:
        Path(lay.split(p)).parent.mkdir(parents=True, exist_ok=True)
        Path(lay.split(p)).write_text("{}")
    for model in MODELS:
        for method in METHODS:
            rows = []
            for p in PRODUCTS:
                rows.append({"product": p, **{c: _value(model, method, p, c) for c in METRIC_COLUMNS},
                             "n_images": 5, "n_anomalous": 3, "n_regions": 4, "n_pixels": 320, "pixel_mode": "exact"})
            mean = {"product": "mean", **{c: sum(r[c] for r in rows) / 2 for c in METRIC_COLUMNS},
                    "n_images": 10, "n_anomalous": 6, "n_regions": 8, "n_pixels": 640, "pixel_mode": "exact"}
            write_scores(rows + [mean], lay.scores(model, method))
            if model == "lfd":
                folder = Path(lay.seg_dir(model, method))
                folder.mkdir(parents=True, exist_ok=True)
                (folder / "train.json").write_text(json.dumps({"model": "lfd", "backbone_init": "random-init",
                                                               "parameters": 936_000}))
    for i, method in enumerate(METHODS):
        for j, p in enumerate(PRODUCTS):
            # seas: real Inception weights, random LPIPS; cutpaste: the reverse, no KID recorded; external: both real
            d = {"product": p, "method": method, "is": 1.0 + i + j / 2, "ic_lpips": 0.1 * (i + 1) + 0.01 * j,
                 "kid": 0.001 * (i + 1) + 0.0005 * j,
                 "per_type": {}, "n_images": 4, "inception": ["/w/pt_inception.pth", "random", "/w/inc.pth"][i],
                 "lpips": ["random", "/w/lpips/vgg.pth", "/w/lpips"][i]}
            if i == 1:
                del d["kid"]
            if i == 0:  # seas: mask-defect agreement (percent)
                d["agreement"] = {"ap": 40.0 + j, "iou": 30.0 + j, "random_ap": 5.0, "random_iou": 2.0 + j}
            out = Path(lay.gen_metrics(method, p))
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(d))
    return run


@pytest.fixture
def run_dir(tmp_path):
    return fabricate(tmp_path / "results" / "r", _cfg(tmp_path))


def test_detector_rows_join_the_tables_labelled_by_family(tmp_path, run_dir):
    """downstream.detectors: a row per detector (x method for draem_pairs) in segmentation.csv / detection.csv and
    a column per detector in the per-product tables, never in the segmenters' average."""
    cfg = _cfg(tmp_path, detectors=["patchcore", "draem_pairs"])
    lay = Layout(run_dir, cfg)
    for i, (det, m) in enumerate([("patchcore", "none"), ("draem_pairs", "seas"), ("draem_pairs", "cutpaste"),
                                  ("draem_pairs", METHODS[2])]):
        rows = [{"product": p, **{c: 50.0 + i + j for c in METRIC_COLUMNS}, "n_images": 5, "n_anomalous": 3,
                 "n_regions": 4, "n_pixels": 320, "pixel_mode": "exact"} for j, p in enumerate(PRODUCTS)]
        mean = {**rows[0], "product": "mean", **{c: 50.5 + i for c in METRIC_COLUMNS}}
        write_scores(rows + [mean], lay.detector_scores(det, m))
        info = {"parameters": 24_860_000 if det == "patchcore" else 97_420_000,
                "backbone_init": "random-init" if det == "patchcore" else "none (trained from scratch)",
                "target": None if det == "patchcore" else "DRAEM target: normal-prompt twin"}
        (Path(lay.detector_dir(det, m)) / "train.json").write_text(json.dumps(info))
    t = tables.build_tables(cfg, run_dir, cost=False)
    seg, det = t["segmentation.csv"], t["detection.csv"]
    d = seg[seg.family == "detector"]
    assert list(zip(d.model, d.method, d.parameters)) == [
        ("patchcore", "none (unsupervised)", "24.86M"), ("draem_pairs", "seas", "97.42M"),
        ("draem_pairs", "cutpaste", "97.42M"), ("draem_pairs", "external:anomalydiffusion", "97.42M")]
    assert d.iloc[0].pixel_auroc == 50.5 and det[det.family == "detector"].iloc[1].image_auroc == 51.5
    assert d.iloc[1].protocol.endswith("[DRAEM target: normal-prompt twin]") and "[" not in d.iloc[0].protocol
    avg = seg[(seg.model == tables.AVERAGE) & (seg.method == "seas")].iloc[0]
    assert avg.pixel_auroc == pytest.approx(seg[seg.model.isin(MODELS) & (seg.method == "seas")].pixel_auroc.mean())
    pp = t["segmentation_per_product.csv"]
    assert pp[(pp["product"] == "weave") & (pp.metric == "pixel_auroc")].iloc[0]["patchcore/none (unsupervised)"] == 51.0


def test_method_names():
    assert method_label("external:/data/x/pairs/") == "external:pairs"
    assert method_dir("external:/data/x/pairs") == "external-pairs"
    assert method_label("seas") == method_dir("seas") == "seas"


def test_segmentation_and_detection_tables(tmp_path, run_dir):
    t = tables.build_tables(_cfg(tmp_path), run_dir)
    seg, det = t["segmentation.csv"], t["detection.csv"]
    assert list(seg.columns) == ["dataset", "generator_model", "protocol", "model", "family", "parameters",
                                 "backbone_init", "method", "pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_iou_best",
                                 "pixel_iou_pooled", "pixel_iou_fixed"]
    assert list(det.columns) == ["dataset", "generator_model", "protocol", "model", "family", "parameters",
                                 "backbone_init", "method", "image_auroc", "image_ap", "image_f1max"]
    assert set(seg.family) == {"segmentation"} and set(seg[seg.model == "lfd"].parameters) == {"0.94M"}
    assert set(seg.protocol) == set(det.protocol) == {"seas-unified (split floor 1/3)"}
    assert len(seg) == len(MODELS) * len(METHODS) + len(METHODS)  # + one average row per method
    assert set(seg["dataset"]) == {"demo"} and set(seg["generator_model"]) == {TINY_RANDOM_LABEL}
    assert set(seg["method"]) == {"seas", "cutpaste", "external:anomalydiffusion"}
    row = seg[(seg.model == "lfd") & (seg.method == "cutpaste")].iloc[0]
    assert row.backbone_init == "random-init"
    assert row.pixel_auroc == pytest.approx((_value("lfd", "cutpaste", "washer", "pixel_auroc")
                                             + _value("lfd", "cutpaste", "weave", "pixel_auroc")) / 2)
    assert seg[(seg.model == "bisenetv2")].iloc[0].backbone_init == tables.NOT_RECORDED
    avg = seg[(seg.model == tables.AVERAGE) & (seg.method == "seas")].iloc[0]
    per_model = seg[(seg.model != tables.AVERAGE) & (seg.method == "seas")]
    assert avg.pixel_iou_best == pytest.approx(per_model.pixel_iou_best.mean())
    assert avg.backbone_init == "bisenetv2=not recorded;lfd=random-init"
    d = det[(det.model == "bisenetv2") & (det.method == "external:anomalydiffusion")].iloc[0]
    assert d.image_f1max == pytest.approx(
        sum(_value("bisenetv2", METHODS[2], p, "image_f1max") for p in PRODUCTS) / 2)


def test_per_product_tables(tmp_path, run_dir):
    t = tables.build_tables(_cfg(tmp_path), run_dir)
    pp = t["segmentation_per_product.csv"]
    names = [f"{m}/{method_label(x)}" for m in MODELS for x in METHODS]
    assert list(pp.columns) == ["dataset", "generator_model", "protocol", "product", "metric"] + names
    assert set(pp.protocol) == {"seas-unified (split floor 1/3)"}
    assert list(pp["product"].unique()) == PRODUCTS + ["mean"]
    assert len(pp) == 3 * 6  # (2 products + mean) x 6 segmentation metrics
    cell = pp[(pp["product"] == "weave") & (pp.metric == "pixel_ap")]["lfd/seas"].iloc[0]
    assert cell == pytest.approx(_value("lfd", "seas", "weave", "pixel_ap"))
    dp = t["detection_per_product.csv"]
    assert set(dp.metric) == {"image_auroc", "image_ap", "image_f1max"}


def test_generation_table(tmp_path, run_dir):
    g = tables.build_tables(_cfg(tmp_path), run_dir)["generation.csv"]
    assert list(g.columns) == ["dataset", "generator_model", "protocol", "method", "product", "is", "ic_lpips", "kid",
                               "agreement_ap", "agreement_ap_random_mask", "agreement_iou",
                               "agreement_iou_random_mask", "test_copies", "inception_weights", "lpips_weights"]
    assert len(g) == len(METHODS) * (len(PRODUCTS) + 1)
    assert set(g.test_copies) == {tables.NOT_COMPUTED}  # gen_metrics JSONs written before the test-copy check
    # random Inception (cutpaste): IS is not a number to print; no KID in its JSON: "not computed"
    mean = g[(g.method == "cutpaste") & (g["product"] == "mean")].iloc[0]
    assert mean["is"] == tables.NA_INCEPTION and mean.ic_lpips == pytest.approx(0.205)
    assert mean.kid == tables.NOT_COMPUTED
    assert mean.inception_weights == "random" and mean.lpips_weights == "vgg.pth"
    # random LPIPS (seas): IC-LPIPS is n/a; IS and KID from real Inception weights are numbers
    seas = g[g.method == "seas"].set_index("product")
    assert set(seas.ic_lpips) == {tables.NA_LPIPS}
    assert seas.loc["weave", "is"] == pytest.approx(1.5) and seas.loc["mean", "kid"] == pytest.approx(0.00125)
    assert seas.loc["mean", "inception_weights"] == "pt_inception.pth" and seas.loc["mean", "lpips_weights"] == "random"
    # the mask-defect agreement and its random-mask baseline, where computed (seas), else "not computed"
    assert seas.loc["mean", "agreement_ap"] == pytest.approx(40.5)
    assert seas.loc["mean", "agreement_iou_random_mask"] == pytest.approx(2.5)
    assert set(g[g.method == "cutpaste"].agreement_ap) == {tables.NOT_COMPUTED}
    ext = g[(g.method == "external:anomalydiffusion") & (g["product"] == "mean")].iloc[0]
    assert ext["is"] == pytest.approx(3.25) and ext.kid == pytest.approx(0.00325)
    assert ext.ic_lpips == pytest.approx(0.305)
    # the CSV rounds like the paper (2 decimals; a KID below 0.005 keeps 2 significant digits), plain numbers, and
    # keeps the n/a labels as strings
    out = tables.write_tables({"generation.csv": g}, tmp_path / "t")[0]
    back = pd.read_csv(out)
    assert tables.NA_INCEPTION in set(back["is"])
    ext_row = back[(back.method == "external:anomalydiffusion") & (back["product"] == "mean")].iloc[0]
    assert float(ext_row.ic_lpips) == 0.3 or float(ext_row.ic_lpips) == 0.31  # 0.305 at 2 decimals
    assert float(ext_row.kid) == pytest.approx(0.0033, abs=1e-4) and "0.00325" not in out.read_text()
    assert "%" not in out.read_text()
    # only the methods given, and none when disabled
    g2 = tables.build_tables(_cfg(tmp_path), run_dir, gen_methods=["seas"])["generation.csv"]
    assert set(g2.method) == {"seas"}
    assert "generation.csv" not in tables.build_tables(_cfg(tmp_path), run_dir, generation=False)


def test_pro_for_visa_and_generator_label(tmp_path, run_dir):
    fabricate(run_dir, _cfg(tmp_path, dataset="visa", tiny=False))  # model.tiny is a generator key: other folders
    seg = tables.build_tables(_cfg(tmp_path, dataset="visa", tiny=False), run_dir)["segmentation.csv"]
    assert seg.columns[-1] == "pixel_pro"
    assert set(seg.generator_model) == {str(tmp_path / "sd")}
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "seas_tiny.json").write_text("{}")  # the tiny model's marker wins over model.tiny=false
    seg = tables.build_tables(_cfg(tmp_path, tiny=False), run_dir)["segmentation.csv"]
    assert set(seg.generator_model) == {TINY_RANDOM_LABEL} and "pixel_pro" not in seg.columns
    # a tiny model built from the pretrained prior says so (marker weights: pretrained, or model.tiny_prior set)
    (tmp_path / "sd" / "seas_tiny.json").write_text(json.dumps({"tiny": True, "weights": "pretrained"}))
    seg = tables.build_tables(_cfg(tmp_path), run_dir)["segmentation.csv"]
    assert set(seg.generator_model) == {TINY_PRETRAINED_LABEL} == {"tiny-pretrained"}
    (tmp_path / "sd" / "seas_tiny.json").unlink()
    (tmp_path / "sd").rmdir()
    cfg = _cfg(tmp_path)
    assert tables.generator_label(cfg) == TINY_RANDOM_LABEL
    cfg["model"]["tiny_prior"] = "priors/tiny_prior.safetensors"  # before the model folder is built
    assert tables.generator_label(cfg) == TINY_PRETRAINED_LABEL


def test_round_paper():
    assert tables.round_paper(93.23456) == 93.23 and tables.round_paper(0.00125) in (0.0012, 0.0013)
    assert tables.round_paper(0.0) == 0.0 and tables.round_paper("n/a (no Inception weights)").startswith("n/a")
    assert tables.round_paper(7) == 7 and tables.round_paper(float("nan")) != tables.round_paper(float("nan"))
    df = tables.paper_rounding(pd.DataFrame({"a": [1.23456, 2.0], "b": ["x", 0.123456]}))
    assert df.a.tolist() == [1.23, 2.0] and df.b.tolist() == ["x", 0.12]


def test_missing_inputs_name_the_file(tmp_path, run_dir):
    missing = Path(Layout(run_dir, _cfg(tmp_path)).scores("lfd", "cutpaste"))
    missing.unlink()
    with pytest.raises(DataError, match=str(missing)):
        tables.build_tables(_cfg(tmp_path), run_dir)
    Path(Layout(run_dir, _cfg(tmp_path)).gen_metrics("seas", "weave")).unlink()
    with pytest.raises(DataError, match="weave.json"):
        tables.build_tables(_cfg(tmp_path, models=["bisenetv2"]), run_dir)


def test_cli_writes_every_table(tmp_path, run_dir, capsys):
    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(yaml.safe_dump(_cfg(tmp_path)))
    out = tmp_path / "tables"
    assert tables.main(["--config", str(cfg_path), "--run-dir", str(run_dir), "--out-dir", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["generation.csv", "segmentation.csv", "detection.csv", "segmentation_per_product.csv",
         "detection_per_product.csv", "cost.csv", "cost_per_job.csv"]
        + [f"{t}_vs_paper.csv" for t in ("generation", "segmentation", "detection", "segmentation_per_product",
                                         "detection_per_product")])
    assert len(pd.read_csv(out / "segmentation.csv")) == 9
    # no benchmark file in this fabricated run: every stage row says "not measured", no number is invented
    c = pd.read_csv(out / "cost.csv")
    assert set(c.source) == {"not measured"} and c.seconds_total.isna().all()
    assert set(c.protocol) == {"seas-unified (split floor 1/3)"}
    # a missing input is an error message + exit 2
    assert tables.main(["--config", str(cfg_path), "--run-dir", str(tmp_path / "nope"), "--out-dir", str(out)]) == 2
    assert "does not exist" in capsys.readouterr().err

    # md_table on a written table
    capsys.readouterr()
    assert md_table.main([str(out / "detection.csv"), "--digits", "1", "--columns", "model", "method", "image_ap"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "| model | method | image_ap |" and lines[1] == "|---|---|---:|"
    assert len(lines) == 2 + 9


def test_md_table_formatting(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("model,method,pixel_auroc,n\nlfd,seas,97.7249,3\nlfd,a|b,nan,12\n")
    assert md_table.csv_to_markdown(f, digits=2) == (
        "| model | method | pixel_auroc | n |\n"
        "|---|---|---:|---:|\n"
        "| lfd | seas | 97.72 | 3 |\n"
        "| lfd | a\\|b | n/a | 12 |\n")
    with pytest.raises(DataError, match="no column"):
        md_table.csv_to_markdown(f, columns=["iou"])
    # 2 decimals like the paper; a tiny KID keeps 2 significant digits; n/a labels stay text in a numeric column
    f.write_text(f"method,is,kid\nseas,{tables.NA_INCEPTION},0.001234\ncutpaste,2.345678,0.0\n")
    assert md_table.csv_to_markdown(f) == (
        "| method | is | kid |\n"
        "|---|---:|---:|\n"
        "| seas | n/a (no Inception weights) | 0.0012 |\n"
        "| cutpaste | 2.35 | 0.00 |\n")


def test_protocol_column_names_the_split_rule(tmp_path, run_dir):
    cfg = _cfg(tmp_path)
    assert tables.protocol_label(cfg) == "seas-unified (split floor 1/3)"
    cfg["split"]["rule"] = "ceil"
    fabricate(run_dir, cfg)  # the split rule is a split key: every stage of the run moves to other folders
    t = tables.build_tables(cfg, run_dir)
    assert all(set(df.protocol) == {"seas-unified (split ceil 1/3)"} for df in t.values())
    cfg["split"]["shots"] = 2
    assert tables.protocol_label(cfg) == "seas-unified (split 2-shot, test set of the ceil 1/3 split)"
    cfg["split"]["test_set"] = "rest"  # the test set is named too: Tab. 22 keeps the 1/3 split's
    assert tables.protocol_label(cfg) == "seas-unified (split 2-shot, test set the rest)"
    cfg["split"]["test_set"] = "one_third"
    # a manifest built with another rule than the config's (written by hand into the folder) is named, not
    # silently labelled
    cfg["split"].update(shots="1/3", rule="ceil")
    Path(Layout(run_dir, cfg).split("weave")).write_text(json.dumps({"shots": "1/3", "rule": "floor"}))
    with pytest.raises(DataError, match="weave.json was built with shots='1/3' rule='floor'"):
        tables.build_tables(cfg, run_dir)
    cfg["split"]["rule"] = "floor"
    assert set(tables.build_tables(cfg, run_dir)["segmentation.csv"].protocol) == {"seas-unified (split floor 1/3)"}
    cfg["downstream"]["protocol"] = "per_product"
    assert tables.protocol_label(cfg) == "seas-per-product (split floor 1/3)"


def test_protocol_names_each_departure_from_the_authors_settings(tmp_path, run_dir):
    cfg = _cfg(tmp_path)
    assert tables.protocol_label(cfg, run_dir) == "seas-unified (split floor 1/3)"  # the paper's setting
    for key, value, words in [
            ("downstream.normal_images", 60, "seg normals 60/product"),
            ("downstream.include_real_anomalies", False, "seg without real anomalies"),
            ("model.mixed_precision", "bf16", "bf16 autocast"),
            ("model.mixed_precision", "auto", "bf16 autocast on CUDA (mixed_precision auto)"),
            ("generator.gradient_accumulation", 1, "generator accumulation 1"),
            ("generator.optimizer", "adamw", "torch AdamW"),
            ("rmp.optimizer", "adamw", "RMP torch AdamW")]:
        sec, leaf = key.split(".")
        one = _cfg(tmp_path)
        one[sec][leaf] = value
        assert tables.protocol_label(one) == f"seas-unified (split floor 1/3; {words})", key
    both = _cfg(tmp_path, include_real_anomalies=False)
    both["generator"]["gradient_accumulation"] = 1
    assert tables.protocol_label(both) == \
        "seas-unified (split floor 1/3; seg without real anomalies; generator accumulation 1)"
    # what the generators used, from their run records: a CPU run of adamw8bit trained with torch's AdamW ...
    cfg["model"]["mixed_precision"] = "auto"
    rec = Path(Layout(run_dir, cfg).generator("weave", "all")) / "run_record.json"
    rec.parent.mkdir(parents=True)
    rec.write_text(json.dumps({"stage": "generator", "optimizer": "adamw", "precision": "fp32"}))
    assert tables.protocol_label(cfg, run_dir) == \
        "seas-unified (split floor 1/3; torch AdamW (8-bit AdamW needs CUDA + bitsandbytes))"
    # ... and a CUDA run under auto in bf16
    rec.write_text(json.dumps({"stage": "generator", "optimizer": "adamw8bit", "precision": "bf16"}))
    assert tables.protocol_label(cfg, run_dir) == "seas-unified (split floor 1/3; bf16 autocast)"
    # the RMP's records speak for the RMP (the authors train it with 8-bit AdamW too)
    rmp_rec = Path(Layout(run_dir, cfg).rmp("weave", "all")) / "run_record.json"
    rmp_rec.parent.mkdir(parents=True)
    rmp_rec.write_text(json.dumps({"stage": "rmp", "optimizer": "adamw"}))
    assert tables.protocol_label(cfg, run_dir) == \
        "seas-unified (split floor 1/3; bf16 autocast; RMP torch AdamW (8-bit AdamW needs CUDA + bitsandbytes))"
    rmp_rec.unlink()
    # the generator's settings do not concern a table without the seas method
    cfg["downstream"]["methods"] = ["cutpaste"]
    assert tables.protocol_label(cfg, run_dir) == "seas-unified (split floor 1/3)"


def test_backbone_init_label(tmp_path):
    assert tables._backbone_init(tmp_path) == tables.NOT_RECORDED
    (tmp_path / "train.json").write_text(json.dumps({"backbone_init": "pretrained:/w/resnet50_v1c-2cccc1ad.pth"}))
    assert tables._backbone_init(tmp_path) == "pretrained:resnet50_v1c-2cccc1ad.pth"
    (tmp_path / "train.json").write_text("{not json")
    with pytest.raises(DataError, match="train.json"):
        tables._backbone_init(tmp_path)


def test_test_copies_in_the_generation_table_and_the_protocol_when_allowed(tmp_path, run_dir):
    """Issue 21 item 4: gen_metrics' count per product (summed in the mean row); a method scored with copies
    (downstream.leakage.allow) is named in every table's protocol with its count from train.json."""
    cfg = _cfg(tmp_path, leakage={"allow": ["cutpaste"]})
    lay = Layout(run_dir, cfg)
    for j, p in enumerate(PRODUCTS):
        f = Path(lay.gen_metrics("cutpaste", p))
        f.write_text(json.dumps({**json.loads(f.read_text()), "test_copies": 2 + j}))
    assert tables.protocol_label(cfg, run_dir) == "seas-unified (split floor 1/3)"  # trained without copies
    info = Path(lay.seg_info("lfd", "cutpaste"))
    info.write_text(json.dumps({**json.loads(info.read_text()), "test_copies": 5, "test_copies_allowed": True}))
    t = tables.build_tables(cfg, run_dir)
    g = t["generation.csv"].set_index(["method", "product"])
    assert g.loc[("cutpaste", "washer"), "test_copies"] == 2 and g.loc[("cutpaste", "mean"), "test_copies"] == 5
    words = "seas-unified (split floor 1/3; cutpaste: 5 test copies allowed (downstream.leakage.allow))"
    assert all(set(df.protocol) == {words} for name, df in t.items() if name != "cost_per_job.csv")


def test_draem_without_dtd_is_labelled_in_every_row(tmp_path):
    methods = ["seas", "draem"]
    cfg = validate_config({"results_dir": str(tmp_path / "results"), "run_name": "r",
                           "dataset": {"name": "demo", "root": str(tmp_path / "data")},
                           "model": {"pretrained": str(tmp_path / "sd"), "tiny": True},
                           "downstream": {"models": ["lfd"], "methods": methods}}, source="<test>")
    run = tmp_path / "results" / "r"
    lay = Layout(run, cfg)
    for p in PRODUCTS:
        Path(lay.split(p)).parent.mkdir(parents=True, exist_ok=True)
        Path(lay.split(p)).write_text("{}")
    for m in methods:
        info = {"n_images": 5, "n_anomalous": 3, "n_regions": 4, "n_pixels": 320, "pixel_mode": "exact"}
        rows = [{"product": p, **{c: 50.0 for c in METRIC_COLUMNS}, **info} for p in PRODUCTS + ["mean"]]
        write_scores(rows, lay.scores("lfd", m))
        for p in PRODUCTS:
            f = Path(lay.gen_metrics(m, p))
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_text(json.dumps({"is": 1.0, "ic_lpips": 0.1, "inception": "random", "lpips": "random"}))
    t = tables.build_tables(cfg, run, cost=False)
    assert {"draem (procedural textures, not DTD)", "seas"} == set(t["segmentation.csv"].method)
    assert set(t["generation.csv"].method) == {"draem (procedural textures, not DTD)", "seas"}
    assert "lfd/draem (procedural textures, not DTD)" in t["segmentation_per_product.csv"].columns


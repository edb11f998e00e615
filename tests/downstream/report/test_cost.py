"""tables/cost.csv (paper Tab. 6/7, measured): benchmark TSVs + run records in a temp run dir -> rows and values."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from downstream.report import cost, tables
from seas.run.config import validate_config
from seas.run.layout import Layout
from seas.run.runtime import RUN_RECORD, run_record

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
TYPES = {"washer": ["hole", "scratch"], "weave": ["scratch", "stain", "tear"]}


def _cfg(tmp_path, scope="product", **extra):
    raw = {"results_dir": str(tmp_path / "results"), "run_name": "r",
           "dataset": {"name": "demo", "root": str(tmp_path / "data")},
           "model": {"pretrained": str(tmp_path / "sd"), "tiny": True},
           "generator": {"scope": scope}, "resources": {"gpus_per_job": 2},
           "downstream": {"models": ["lfd", "bisenetv2"], "methods": ["seas", "cutpaste", "real"]}, **extra}
    return validate_config(raw, source="<test>")


def _bench(path, s, rss="512.25"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{s}\t0:00:{int(s):02d}\t{rss}\t900\t400\t450\t1.0\t2.0\t95.0\t{s}\n")


def _rec(path, **fields):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"device": "NVIDIA H100 80GB HBM3", "gpu_peak_memory_mb": None, **fields}))


def _run(tmp_path, scope="product", skip=()):
    """Every expected job measured: seconds chosen so each aggregate has a distinct known answer."""
    run = tmp_path / "results" / "r"
    for p, types in TYPES.items():
        split = Path(Layout(run, _cfg(tmp_path, scope)).split(p))
        split.parent.mkdir(parents=True, exist_ok=True)
        split.write_text(json.dumps({"anomaly_types": types}))
    for j in cost.expected_jobs(_cfg(tmp_path, scope), TYPES):
        if j.benchmark in skip:
            continue
        s = {"generator": 100.0 * max(j.n_types, 1), "rmp": 50.0 * max(j.n_types, 1), "generation": 8.0,
             "gen_metrics": 3.0, "baselines": 2.0, "segmentation": 60.0 if j.keys.get("model") == "lfd" else 30.0,
             "evaluation": 5.0}[j.stage]
        _bench(run / j.benchmark, s, rss="NA" if j.stage == "evaluation" else f"{1000 + s:.2f}")
        if j.stage == "generator":
            _rec(run / j.record, steps=800 * j.n_types, gpu_peak_memory_mb=20000.0 + j.n_types)
        elif j.stage == "rmp":
            _rec(run / j.record, steps=800 * j.n_types)  # no GPU peak recorded: max_rss is the stage's peak
        elif j.stage == "generation":
            _rec(run / j.record, images=4, new_files=4, gpu_peak_memory_mb=9000.5)
        elif j.stage == "segmentation":
            _rec(run / j.record, steps=10, images=40, device="cpu (4 threads)")
    return run


def test_expected_jobs_both_generator_scopes(tmp_path):
    jobs = cost.expected_jobs(_cfg(tmp_path), TYPES)
    lay = Layout("", _cfg(tmp_path))
    g = lay.key("train_generator")
    gen = [j for j in jobs if j.stage == "generator"]
    assert [j.benchmark for j in gen] == [f"benchmarks/train_generator/{g}/washer/all.tsv",
                                          f"benchmarks/train_generator/{g}/weave/all.tsv"]
    assert [j.n_types for j in gen] == [2, 3] and gen[0].record == f"generator/{g}/washer/all/{RUN_RECORD}"
    per_type = [j for j in cost.expected_jobs(_cfg(tmp_path, "type"), TYPES) if j.stage == "rmp"]
    r = Layout("", _cfg(tmp_path, "type")).key("train_rmp")
    assert [j.benchmark for j in per_type][:2] == [f"benchmarks/train_rmp/{r}/washer/type-hole.tsv",
                                                   f"benchmarks/train_rmp/{r}/washer/type-scratch.tsv"]
    assert len(per_type) == 5 and {j.n_types for j in per_type} == {1}
    stages = [j.stage for j in jobs]
    assert stages.count("generation") == 5 and stages.count("gen_metrics") == 2 * 2  # not for `real`
    assert stages.count("baselines") == 2 * 2 and stages.count("segmentation") == stages.count("evaluation") == 2 * 3
    # the Snakefile's tables rule takes exactly these files as inputs
    files = cost.benchmark_files(_cfg(tmp_path), TYPES, "RUN")
    assert f"RUN/benchmarks/generate/{lay.key('generate')}/weave/tear.tsv" in files
    assert f"RUN/benchmarks/baselines/real/{lay.key('baselines', method='real')}/washer.tsv" in files
    assert f"RUN/benchmarks/train_seg/bisenetv2/real/{lay.key('train_seg', model='bisenetv2', method='real')}/all.tsv" in files
    assert len(files) == len(jobs)


@pytest.mark.parametrize("scope", ["product", "type"])
def test_cost_table_rows_and_values(tmp_path, scope):
    run = _run(tmp_path, scope)
    c, per_job = cost.cost_tables(_cfg(tmp_path, scope), run, TYPES, {"dataset": "demo", "protocol": "p"})
    assert list(c.columns) == ["dataset", "protocol"] + cost.COST_COLUMNS
    assert list(zip(c.stage, c.model)) == [("generator", ""), ("rmp", ""), ("generation", ""), ("gen_metrics", ""),
                                           ("baselines", ""), ("segmentation", "lfd"), ("segmentation", "bisenetv2"),
                                           ("evaluation", "lfd"), ("evaluation", "bisenetv2"), ("total", "")]
    assert set(c.source) == {"measured"}
    r = c.set_index(["stage", "model"])
    g = r.loc[("generator", "")]
    # 100 s per trained type whatever the grouping: 5 types, 2 products
    assert g.seconds_total == pytest.approx(500) and g.seconds_per_type == pytest.approx(100)
    assert g.seconds_per_product == pytest.approx(250) and g.steps == 800 * 5
    assert g.jobs == (2 if scope == "product" else 5) and g.measured_jobs == g.jobs
    assert g.peak_memory_kind == "gpu max_memory_allocated"
    assert g.peak_memory_mb == pytest.approx(20003.0 if scope == "product" else 20001.0)
    assert g.gpu_hours == pytest.approx(500 * 2 / 3600) and g.machine == "NVIDIA H100 80GB HBM3"
    rmp = r.loc[("rmp", "")]
    assert rmp.seconds_per_type == pytest.approx(50) and rmp.seconds_per_product == pytest.approx(125)
    assert rmp.peak_memory_kind == "max_rss"
    assert rmp.peak_memory_mb == pytest.approx(1000 + 50 * (3 if scope == "product" else 1))
    gen = r.loc[("generation", "")]
    assert gen.ms_per_image == pytest.approx(1000 * 8 / 4) and gen.images == 20 and gen.seconds_per_type == 8
    assert gen.peak_memory_mb == pytest.approx(9000.5)
    seg = r.loc[("segmentation", "lfd")]
    assert seg.seconds_per_job == pytest.approx(60) and seg.jobs == 3 and seg.steps == 30 and seg.images == 120
    assert seg.machine == "cpu (4 threads)"
    assert r.loc[("baselines", "")].gpu_hours == 0  # a CPU rule
    ev = r.loc[("evaluation", "bisenetv2")]
    assert pd.isna(ev.peak_memory_mb) and ev.seconds_per_job == pytest.approx(5)  # max_rss "NA": not measured
    assert ev.machine == "NVIDIA H100 80GB HBM3; cpu (4 threads)"  # no CLI record: the run's devices
    total = r.loc[("total", "")]
    gpu_seconds = 500 + 250 + 5 * 8 + 4 * 3 + 3 * 60 + 3 * 30 + 6 * 5
    assert total.gpu_hours == pytest.approx(gpu_seconds * 2 / 3600)
    assert total.seconds_total == pytest.approx(gpu_seconds + 4 * 2)
    assert total.jobs == total.measured_jobs == len(per_job)
    # per job: the type-scope groups are their own rows
    row = per_job[(per_job.stage == "rmp") & (per_job["product"] == "weave")].iloc[0]
    assert row.group == ("all" if scope == "product" else "type-scratch")
    assert row.benchmark.startswith(f"benchmarks/train_rmp/{Layout('', _cfg(tmp_path, scope)).key('train_rmp')}/weave/")


def test_missing_benchmarks_are_counted_not_invented(tmp_path):
    lay = Layout("", _cfg(tmp_path))
    run = _run(tmp_path, skip={f"benchmarks/generate/{lay.key('generate')}/weave/tear.tsv",
                               f"benchmarks/train_seg/lfd/real/{lay.key('train_seg', model='lfd', method='real')}/all.tsv"})
    c, per_job = cost.cost_tables(_cfg(tmp_path), run, TYPES, {})
    r = c.set_index(["stage", "model"])
    assert (r.loc[("generation", "")].jobs, r.loc[("generation", "")].measured_jobs) == (5, 4)
    assert r.loc[("generation", "")].ms_per_image == pytest.approx(2000)
    assert r.loc[("segmentation", "lfd")].seconds_total == pytest.approx(120)
    assert per_job.seconds.isna().sum() == 2
    # a run with no measurement at all: stage rows say so, no number is made up
    for f in (run / "benchmarks").rglob("*.tsv"):
        f.unlink()
    c, _ = cost.cost_tables(_cfg(tmp_path), run, TYPES, {})
    assert set(c.source) == {"not measured"} and c.seconds_total.isna().all()


def test_cost_table_columns_and_csv_precision(tmp_path):
    """cost.csv starts with the columns of every table (protocol included); written numbers have 2 decimals like
    every table (tables.round_paper), counts stay integers."""
    run = _run(tmp_path)
    cfg = _cfg(tmp_path)
    base = tables._base(cfg, run)
    c, _ = cost.cost_tables(cfg, run, tables._products_types(Layout(run, cfg)), base)
    assert list(c.columns[:3]) == ["dataset", "generator_model", "protocol"]
    assert set(c.protocol) == {tables.protocol_label(cfg, run)} and c.protocol[0].startswith("seas-unified (split floor 1/3")
    out = tables.write_tables({"cost.csv": c}, tmp_path / "t")[0]
    back = pd.read_csv(out)
    lines = out.read_text().splitlines()
    assert ",generator,,2,2,500.0,100.0,250.0,250.0,,4000,," in lines[1]  # counts are integers, not 4000.0
    assert back.loc[back.stage == "total", "gpu_hours"].iloc[0] == round(c.gpu_hours.iloc[-1], 2)


def test_read_benchmark(tmp_path):
    f = tmp_path / "b.tsv"
    f.write_text(HEADER + "10.5\t0:00:10\t300.5\t1\t1\t1\t0\t0\t0\t1\n" + "11.5\t0:00:11\t310\t1\t1\t1\t0\t0\t0\t1\n")
    assert cost.read_benchmark(f) == {"s": 11.0, "max_rss": 310.0}
    assert cost.read_benchmark(tmp_path / "none.tsv") is None
    f.write_text("x\ty\n1\t2\n")
    with pytest.raises(Exception, match="not a Snakemake benchmark"):
        cost.read_benchmark(f)


def test_run_record_on_cpu(tmp_path):
    images = tmp_path / "out" / "images"
    images.mkdir(parents=True)
    old = images / "000000.png"
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 10 ** 7, time.time() - 10 ** 7))  # written before this process started
    (images / "000001.png").write_bytes(b"y")
    path = run_record(tmp_path / "out" / RUN_RECORD, new_files=images, stage="generation", images=2)
    rec = json.loads(path.read_text())
    import torch

    assert rec["device"] == f"cpu ({torch.get_num_threads()} threads)" and rec["gpu_peak_memory_mb"] is None
    assert rec["stage"] == "generation" and rec["images"] == 2 and rec["new_files"] == 1
    assert rec["wall_s"] >= 0 and rec["started"]
    assert not list((tmp_path / "out").glob(".*tmp*"))

"""The detectors end-to-end (issue 23): the trimmed demo (config/test_e2e.yaml) with config/demo_detectors.yaml on
top and SeaS's normal-prompt twins on -- every train_detector job runs through its rule, CLI and anomalib, and the
tables hold one row per detector (x method for draem_pairs) labelled family detector, random-init backbones and the
DRAEM target rule in the protocol column; cost.csv has the detection row. Prints each job's CPU seconds."""
from __future__ import annotations

import csv
import json
import os
import subprocess

import pytest

from helpers import REPO, snakemake_exe

pytestmark = pytest.mark.slow


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_the_demo_with_detectors_runs_and_labels_every_row(tmp_path, capsys):
    overlay = tmp_path / "twins.yaml"
    overlay.write_text("generation: {reference_images: true}\n")
    cmd = [snakemake_exe(), "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(tmp_path),
           "--configfile", str(REPO / "config" / "test_e2e.yaml"), str(REPO / "config" / "demo_detectors.yaml"),
           str(overlay), "--cores", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "SEAS_GPU_IDS": ""}
    env.pop("SLURM_JOB_ID", None)
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3000)
    run = tmp_path / "results" / "e2e" / "e2e"
    if res.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(run.glob("logs/train_detector/**/*.log")))
        raise AssertionError(f"snakemake failed:\n{res.stderr[-5000:]}\n{logs}")
    det = [r for r in _rows(run / "tables" / "detection.csv") if r["family"] == "detector"]
    assert sorted((r["model"], r["method"]) for r in det) == [
        ("draem", "none (unsupervised)"), ("draem_pairs", "cutpaste"), ("draem_pairs", "seas"),
        ("patchcore", "none (unsupervised)"), ("stfpm", "none (unsupervised)")]
    by = {(r["model"], r["method"]): r for r in det}
    assert by["patchcore", "none (unsupervised)"]["backbone_init"] == "random-init"
    assert by["patchcore", "none (unsupervised)"]["parameters"] == "24.86M"
    assert by["draem_pairs", "seas"]["protocol"].endswith("[DRAEM target: normal-prompt twin; else nearest normal]")
    seg = _rows(run / "tables" / "segmentation.csv")
    assert {r["family"] for r in seg} == {"segmentation", "detector"}
    assert all(r["parameters"].endswith("M") for r in seg if r["model"] != "average")
    infos = {p.parent.parent.name: json.loads(p.read_text()) for p in run.glob("detection/draem_pairs/*/*/train.json")}
    assert infos["seas"]["products"]["weave"]["twin_targets"] > 0
    assert infos["cutpaste"]["products"]["weave"]["nearest_normal_targets"] > 0
    assert any(r["stage"] == "detection" for r in _rows(run / "tables" / "cost.csv"))
    with capsys.disabled():
        for b in sorted(run.glob("benchmarks/train_detector/*/*/*.tsv")):
            rec = _rows(b)[0] if "\t" not in b.read_text().splitlines()[0] else dict(
                zip(*[line.split("\t") for line in b.read_text().splitlines()[:2]]))
            print(f"\n[{b.parent.parent.name}/{b.parent.name}] wall {float(rec['s']):.1f} s, "
                  f"cpu {float(rec.get('cpu_time', 'nan')):.1f} s, max_rss {rec.get('max_rss')} MB")

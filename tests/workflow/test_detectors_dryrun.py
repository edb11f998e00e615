"""The detectors in the workflow (issue 23): the demo with config/demo_detectors.yaml plans one train_detector job
per unsupervised detector and one per (draem_pairs, method with pairs), and the tables wait for them; a detector
whose backbone file is missing stops the workflow at parse time naming the file."""
from __future__ import annotations

import shutil

import yaml

from helpers import PRESET_BACKBONE_FILES, REPO, dry_run, job_counts, write_tree


def test_the_demo_detectors_preset_plans_a_job_per_detector_and_method(tmp_path):
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    for k, v in yaml.safe_load((REPO / "config" / "demo_detectors.yaml").read_text()).items():
        cfg[k] = {**cfg.get(k, {}), **v}
    cfg["results_dir"] = str(tmp_path / "results")
    cfg["dataset"] = {"name": "custom", "root": str(write_tree(tmp_path / "tree", {"a": ["x"], "b": ["y", "z"]}))}
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    counts = job_counts(dry_run(path).stdout)
    methods = [m for m in cfg["downstream"].get("methods", ["seas", "real", "cutpaste", "draem"]) if m != "real"]
    assert counts["train_detector"] == 3 + len(methods)  # patchcore, stfpm, draem (method none) + draem_pairs x methods
    assert counts["tables"] == 1
    without = tmp_path / "plain.yaml"
    cfg["downstream"].pop("detectors")
    without.write_text(yaml.safe_dump(cfg))
    assert "train_detector" not in job_counts(dry_run(without).stdout)


def test_a_missing_detector_backbone_stops_the_workflow_naming_the_file(tmp_path):
    root = write_tree(tmp_path / "tree", {"a": ["x"]})
    cfg = yaml.safe_load((REPO / "config" / "mvtec_ad.yaml").read_text())
    cfg["dataset"]["root"] = str(root)
    cfg["results_dir"] = str(tmp_path / "results")
    cfg["downstream"]["detectors"] = ["patchcore", "stfpm"]
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    home = tmp_path / "th"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    for name in PRESET_BACKBONE_FILES:
        if name != "wide_resnet50_2-95faca4d.pth":
            (home / "hub" / "checkpoints" / name).write_bytes(b"stand-in")
    res = dry_run(path, check=False, torch_home=home)
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "downstream.detector_backbones.wide_resnet50_2: weights file wide_resnet50_2-95faca4d.pth not found" in out
    (home / "hub" / "checkpoints" / "wide_resnet50_2-95faca4d.pth").write_bytes(b"stand-in")
    assert job_counts(dry_run(path, torch_home=home).stdout)["train_detector"] == 2
    shutil.rmtree(home)

"""Issue 21 in the DAG: downstream.protocol peer_per_product_unet plans one draem_unet job per (method, product);
downstream.leakage.allow reaches only its method's segmentation jobs (--allow-test-copies); crop_paste is a
baseline job like the others."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from helpers import REPO, dry_run, job_counts, write_tree

TREE = {"bottle": ["broken_large", "contamination"], "grid": ["bent"]}


def write_config(tmp_path: Path, preset: str, root: Path, **overrides) -> Path:
    cfg = yaml.safe_load((REPO / "config" / preset).read_text())
    cfg["dataset"]["root"], cfg["results_dir"] = str(root), str(tmp_path / "results")
    for dotted, value in overrides.items():
        sec, leaf = dotted.split(".")
        cfg.setdefault(sec, {})[leaf] = value
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_peer_protocol_and_allow_list_in_the_dag(tmp_path):
    root = write_tree(tmp_path / "mvtec_ad", TREE)
    cfg = write_config(tmp_path, "mvtec_ad.yaml", root, **{
        "dataset.products": sorted(TREE), "downstream.protocol": "peer_per_product_unet",
        "downstream.models": ["draem_unet"], "downstream.leakage": {"allow": ["cutpaste"]}})
    res = dry_run(cfg, "-p")
    counts = job_counts(res.stdout + res.stderr)
    n_methods = 5  # seas, real, crop_paste, cutpaste, draem
    assert counts["train_seg"] == counts["evaluate"] == n_methods * len(TREE)
    assert counts["baselines"] == 4 * len(TREE)
    shells = re.findall(r"-m downstream\.train_seg .*", res.stdout)
    assert len(shells) == n_methods * len(TREE)
    assert all("--model draem_unet" in s and re.search(r"/product-(bottle|grid)", s) for s in shells)
    allowed = [s for s in shells if "--allow-test-copies" in s]
    assert len(allowed) == len(TREE) and all("--method cutpaste" in s for s in allowed)
    assert any("--method crop_paste" in s for s in re.findall(r"-m downstream\.baselines .*", res.stdout))

"""Damage is found at the stage boundary (issue 25, item 6): a real tiny Snakemake run (one product's split, its
`real` pairs, an LFD segmentation model, its scores and the tables), then damage after the fact and `snakemake -n`.

A truncated generated PNG, a truncated segmentation checkpoint, a split manifest or a scores file cut short make
the dry run plan the job that wrote it and its dependants, naming the file; a real run regenerates it. An external
folder's truncated image is refused by the first job that reads it (its import), naming the file, before any
training step; its grey mask is binarised and counted.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import REPO, planned_jobs, snakemake_in, write_tree
from seas.data.pairs import iter_pairs
from seas.run.config import run_dir, validate_config
from seas.run.layout import Layout

PRODUCTS = {"bottle": ["crack"]}


def _config(tmp: Path, methods: list[str]) -> tuple[dict, Layout]:
    tree = tmp / "data" if (tmp / "data").is_dir() else write_tree(tmp / "data", PRODUCTS)
    cfg = yaml.safe_load((REPO / "config" / "test_e2e.yaml").read_text())
    cfg.update(run_name="dmg", results_dir=str(tmp / "results"), studies={})
    cfg["dataset"] = {"name": "custom", "root": str(tree), "products": sorted(PRODUCTS)}
    cfg["downstream"].update(methods=methods, models=["lfd"], image_size=32, num_baseline_images_per_type=2)
    cfg["downstream"]["train"]["lfd"]["checkpoint_every"] = 1  # a step taken leaves its resume state behind
    cfg["gen_metrics"]["enabled"] = False
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    valid = validate_config(cfg)
    return cfg, Layout(str(run_dir(valid)), valid)


def _snakemake(tmp: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    return snakemake_in(tmp, *extra, check=check)


_planned = planned_jobs


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run up to the tables; yields (workdir, layout, targets)."""
    tmp = tmp_path_factory.mktemp("damaged")
    _, lay = _config(tmp, ["real"])
    targets = [f"{lay.run}/tables/segmentation.csv"]
    _snakemake(tmp, *targets)
    assert Path(lay.scores("lfd", "real")).is_file()
    assert _planned(_snakemake(tmp, "-n", *targets)) == {}
    return tmp, lay, targets


def _damaged(run, path: Path, damage) -> subprocess.CompletedProcess:
    """A dry run with `path` damaged by `damage(bytes) -> bytes`, its modification time kept (Snakemake's mtime
    trigger plans nothing then: only the damage can); the file is restored afterwards."""
    tmp, _, targets = run
    original, st = path.read_bytes(), path.stat()
    try:
        path.write_bytes(damage(original))
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        return _snakemake(tmp, "-n", *targets)
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_truncated_generated_png_plans_its_regeneration_and_dependants(run):
    tmp, lay, targets = run
    pairs = iter_pairs(lay.pairs_root("real"), ["bottle"])
    victim = Path(pairs[-1].image)
    res = _damaged(run, victim, lambda b: b[: len(b) * 2 // 3])
    assert _planned(res) == {"baselines": 1, "train_seg": 1, "evaluate": 1, "tables": 1}
    text = res.stdout + res.stderr
    assert "damaged output" in text and str(victim) in text and "were written" in text
    assert "reason: Forced execution" in text
    assert _planned(_snakemake(tmp, "-n", *targets)) == {}  # restored: nothing to do


def test_damaged_checkpoint_plans_retraining_and_rescoring(run):
    _, lay, _ = run
    model = Path(lay.seg_model("lfd", "real"))
    res = _damaged(run, model, lambda b: b[:-100])
    assert _planned(res) == {"train_seg": 1, "evaluate": 1, "tables": 1}
    assert f"{model}: truncated safetensors file" in res.stdout + res.stderr


def test_damaged_split_manifest_or_scores_plan_their_jobs(run):
    _, lay, _ = run
    split = Path(lay.split("bottle"))
    res = _damaged(run, split, lambda b: b[: len(b) // 2])
    assert _planned(res) == {"split": 1, "baselines": 1, "train_seg": 1, "evaluate": 1, "tables": 1}
    assert f"split manifest {split} is not valid JSON" in res.stdout + res.stderr
    scores = Path(lay.scores("lfd", "real"))
    res = _damaged(run, scores, lambda b: b[: len(b) - 10])
    assert _planned(res) == {"evaluate": 1, "tables": 1}
    assert str(scores) in res.stdout + res.stderr


def test_a_real_run_regenerates_the_damaged_pair(run):
    tmp, lay, targets = run
    victim = Path(iter_pairs(lay.pairs_root("real"), ["bottle"])[0].image)
    victim.write_bytes(victim.read_bytes()[:50])
    _snakemake(tmp, *targets)
    with Image.open(victim) as im:
        im.verify()
    assert _planned(_snakemake(tmp, "-n", *targets)) == {}


def test_external_folder_damage_is_refused_naming_the_file_and_a_grey_mask_is_binarised(tmp_path):
    """An external folder is checked by its import (seas.data.import_pairs), the first job that reads it: a
    truncated image stops the run naming the file, before any training step, and the folder is never rewritten; a
    non-binary (anti-aliased) mask is binarised at downstream.external_mask_threshold and counted (issue 21)."""
    ext = tmp_path / "ext"
    for d in ("images", "masks"):
        (ext / "bottle" / "crack" / d).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(20):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(ext / "bottle" / "crack" / "images" / f"{i}.png")
        m = np.zeros((16, 16), np.uint8)
        m[4:8, 4:8] = 255
        if i == 7:
            m[10:12, 10:12] = 128  # anti-aliased: not binary
        Image.fromarray(m).save(ext / "bottle" / "crack" / "masks" / f"{i}.png")
    bad = ext / "bottle" / "crack" / "images" / "13.png"
    good_bytes = bad.read_bytes()
    bad.write_bytes(good_bytes[: len(good_bytes) // 2])  # half-copied
    _, lay = _config(tmp_path, [f"external:{ext}"])
    model = lay.seg_model("lfd", f"external:{ext}")
    res = _snakemake(tmp_path, model, check=False)
    assert res.returncode != 0
    logs = "".join(p.read_text() for p in (Path(lay.run) / "logs").rglob("*.log"))
    assert str(bad) in logs + res.stdout + res.stderr
    assert not Path(model).exists() and not any(Path(lay.run).rglob("state.pt"))  # no step was taken
    assert bad.read_bytes() == good_bytes[: len(good_bytes) // 2]  # an external folder is never regenerated
    bad.write_bytes(good_bytes)  # the copy completed: the run goes through, the grey mask binarised and counted
    _snakemake(tmp_path, model)
    record = json.loads(next(Path(lay.run).rglob("import.json")).read_text())
    assert record["nonbinary_masks"] == 1 and record["count"] == 20

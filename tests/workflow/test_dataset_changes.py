"""A changed dataset is noticed (issue 25, item 1): real tiny Snakemake runs up to the splits and one stage that
reads them (the `real` baseline), then `snakemake -n` after changing the tree.

Adding a train/good image or editing a held-out test mask plans that product's split and its dependants, and only
those; touching a file without changing it, or an untouched tree, plans nothing.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from helpers import REPO, planned_jobs, snakemake_in, write_tree
from seas.run.config import run_dir, validate_config
from seas.run.layout import Layout

PRODUCTS = {"bottle": ["crack"], "cable": ["cut"]}


def _snakemake(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return snakemake_in(tmp_path, *extra)


_planned = planned_jobs


def _split_products(res: subprocess.CompletedProcess) -> set[str]:
    """The products of the split jobs a dry run plans (from their `wildcards:` lines)."""
    text = res.stdout + res.stderr
    return {block.split("product=")[1].split()[0].rstrip(",")
            for block in text.split("rule split:")[1:] if "product=" in block}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished run of both products' splits and `real` pairs; yields (workdir, tree, targets, layout)."""
    tmp = tmp_path_factory.mktemp("datachange")
    tree = write_tree(tmp / "data", PRODUCTS)
    cfg = yaml.safe_load((REPO / "config" / "test_e2e.yaml").read_text())
    cfg.update(run_name="dc", results_dir=str(tmp / "results"), studies={})
    cfg["dataset"] = {"name": "custom", "root": str(tree), "products": sorted(PRODUCTS)}
    cfg["downstream"].update(methods=["real"], models=["lfd"], image_size=32, num_baseline_images_per_type=1)
    cfg["gen_metrics"]["enabled"] = False
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    lay = Layout(str(run_dir(validate_config(cfg))), validate_config(cfg))
    targets = [lay.split(p) for p in PRODUCTS] + [lay.pairs_dir("real", p) for p in PRODUCTS]
    _snakemake(tmp, *targets)
    assert all(Path(t).exists() for t in targets)
    return tmp, tree, targets, lay


def _dry(run) -> subprocess.CompletedProcess:
    tmp, _, targets, _ = run
    return _snakemake(tmp, "-n", *targets)


def test_untouched_or_touched_dataset_plans_nothing(run):
    tmp, tree, _, lay = run
    assert _planned(_dry(run)) == {}
    mask = tree / "cable" / "ground_truth" / "cut" / "002_mask.png"
    st = mask.stat()
    os.utime(mask, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # newer, same content
    assert _planned(_dry(run)) == {}
    # the workflow keeps the product's manifest: every file with its size and sha256
    manifest = json.loads((Path(lay.run) / "dataset" / "cable.json").read_text())
    entry = manifest["files"][str(mask.resolve())]
    assert entry["sha256"] == hashlib.sha256(mask.read_bytes()).hexdigest() and entry["size"] == st.st_size


def test_added_normal_image_plans_its_products_split_and_dependants(run):
    _, tree, _, _ = run
    new = tree / "bottle" / "train" / "good" / "002.png"
    Image.fromarray(np.full((8, 8, 3), 90, np.uint8)).save(new)
    try:
        res = _dry(run)
        assert _planned(res) == {"split": 1, "baselines": 1}
        assert _split_products(res) == {"bottle"}
    finally:
        new.unlink()
    assert _planned(_dry(run)) == {}  # back as it was: nothing to do


def test_edited_test_mask_reruns_split_and_dependants_by_content(run):
    tmp, tree, targets, lay = run
    mask = tree / "cable" / "ground_truth" / "cut" / "002_mask.png"  # held out: the first image of 3 trains
    split = json.loads(Path(lay.split("cable")).read_text())
    assert str(mask.resolve()) in {d["mask"] for d in split["test"]}
    old = split["sha256"][str(mask.resolve())]
    Image.fromarray(np.pad(np.full((3, 3), 255, np.uint8), ((0, 5), (0, 5)))).save(mask)
    res = _dry(run)
    assert _planned(res) == {"split": 1, "baselines": 1} and _split_products(res) == {"cable"}
    _snakemake(tmp, *targets)  # the real run reruns them and records the new content
    new = json.loads(Path(lay.split("cable")).read_text())["sha256"][str(mask.resolve())]
    assert new == hashlib.sha256(mask.read_bytes()).hexdigest() != old
    assert _planned(_dry(run)) == {}

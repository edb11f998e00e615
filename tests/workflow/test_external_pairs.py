"""External folders in the DAG (issue 21, items 1-3): each product of an ``external:<path>`` folder is imported by
its own job (rule import_pairs) whose consumers read the import; the folder is an input by content; generation-only
methods get generation metrics and no segmentation.

A real tiny run (the two products' imports, generation metrics, one segmentation model and its evaluation), then
``snakemake -n`` after changing the folder: a changed, added or removed file of one product plans that product's
import and what reads it (its generation metrics, the segmentation model of all products and its evaluation), and
nothing else; touching a file without changing it plans nothing; a half-copied folder stops the DAG naming the file.
"""
from __future__ import annotations

import os
import re
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
N_PAIRS = 3


def _ad_folder(root: Path) -> Path:
    """An AnomalyDiffusion-layout folder (generate_with_mask.py): <product>/<type>/{image,mask,ori,recon}/<i>.jpg."""
    for product, types in PRODUCTS.items():
        for t in types:
            for i in range(N_PAIRS):
                img = np.full((32, 32, 3), 40 + 30 * i, np.uint8)
                mask = np.zeros((32, 32, 3), np.uint8)
                mask[8 * i:8 * i + 8, 8:16] = 255
                for sub, arr in (("image", img), ("mask", mask), ("ori", img // 2), ("recon", img)):
                    (root / product / t / sub).mkdir(parents=True, exist_ok=True)
                    Image.fromarray(arr).save(root / product / t / sub / f"{i}.jpg")
    return root


def _images_folder(root: Path) -> Path:
    """A generation-only method's folder: images only (a generator that makes no masks)."""
    for product, types in PRODUCTS.items():
        for t in types:
            (root / product / t).mkdir(parents=True)
            for i in range(N_PAIRS):
                Image.fromarray(np.full((32, 32, 3), 60 + 20 * i, np.uint8)).save(root / product / t / f"{i}.png")
    return root


def _config(tmp: Path, tree: Path, ext: Path, gen_only: Path) -> dict:
    cfg = yaml.safe_load((REPO / "config" / "test_e2e.yaml").read_text())
    cfg.update(run_name="ext", results_dir=str(tmp / "results"), studies={})
    cfg["dataset"] = {"name": "custom", "root": str(tree), "products": sorted(PRODUCTS)}
    cfg["downstream"].update(methods=[f"external:{ext}"], generation_only=[f"external:{gen_only}"], models=["lfd"],
                             image_size=32)
    cfg["gen_metrics"].update(image_size=32, kid=False, agreement=False)
    return cfg


def _snakemake(tmp: Path, *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    return snakemake_in(tmp, *extra, check=check)


_planned = planned_jobs


def _job_products(res: subprocess.CompletedProcess, rule: str) -> set[str]:
    text = res.stdout + res.stderr
    return {m for block in text.split(f"rule {rule}:")[1:]
            for m in re.findall(r"wildcards: .*product=([^,\s]+)", block.split("\n\n")[0])}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("external")
    tree = write_tree(tmp / "data", PRODUCTS)
    ext, gen_only = _ad_folder(tmp / "anomalydiffusion"), _images_folder(tmp / "cdc")
    cfg = _config(tmp, tree, ext, gen_only)
    (tmp / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    vcfg = validate_config(cfg)
    lay = Layout(str(run_dir(vcfg)), vcfg)
    spec, gspec = f"external:{ext}", f"external:{gen_only}"
    targets = ([lay.gen_metrics(m, p) for m in (spec, gspec) for p in PRODUCTS]
               + [lay.scores("lfd", spec)])
    return tmp, ext, gen_only, lay, targets


def test_dag_imports_each_product_and_generation_only_gets_no_segmentation(run):
    tmp, ext, gen_only, lay, _ = run
    res = _snakemake(tmp, "-n", "-p")
    counts = _planned(res)
    assert counts["import_pairs"] == 4  # 2 products x (the external method + the generation-only one)
    assert counts["gen_metrics"] == 4 and counts["train_seg"] == counts["evaluate"] == 1
    text = res.stdout
    # segmentation reads the import, not the folder; the generation-only method has no segmentation job
    imported = lay.pairs_root(f"external:{ext}")
    assert f"--pairs-root {imported} " in text and f"--pairs-root {ext} " not in text
    assert "segmentation/lfd/external-cdc" not in text and "evaluation/lfd/external-cdc" not in text
    assert "gen_metrics/external-cdc/" in text and "--images-only" in text
    # the generation-only method is a row of the generation table (the tables rule's --gen-methods)
    assert re.search(r"--gen-methods .*external:.*cdc", text)
    assert not (tmp / "results").exists()  # a dry run writes nothing


def test_changed_added_removed_file_reruns_its_product_and_dependants(run):
    tmp, ext, _, lay, targets = run
    _snakemake(tmp, *targets)
    assert all(Path(t).exists() for t in targets)
    assert _planned(_snakemake(tmp, "-n", *targets)) == {}
    bottle = ext / "bottle" / "crack"
    # touched, same content: nothing
    st = (bottle / "image" / "1.jpg").stat()
    os.utime(bottle / "image" / "1.jpg", ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    assert _planned(_snakemake(tmp, "-n", *targets)) == {}
    # a file not read by the import (AnomalyDiffusion's recon/): nothing
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(bottle / "recon" / "1.jpg")
    assert _planned(_snakemake(tmp, "-n", *targets)) == {}
    expected = {"import_pairs": 1, "gen_metrics": 1, "train_seg": 1, "evaluate": 1}
    # changed: one mask
    old = (bottle / "mask" / "2.jpg").read_bytes()
    Image.fromarray(np.full((32, 32, 3), 255, np.uint8)).save(bottle / "mask" / "2.jpg")
    res = _snakemake(tmp, "-n", *targets)
    assert _planned(res) == expected
    assert _job_products(res, "import_pairs") == _job_products(res, "gen_metrics") == {"bottle"}
    (bottle / "mask" / "2.jpg").write_bytes(old)
    assert _planned(_snakemake(tmp, "-n", *targets)) == {}  # back as it was: nothing to do
    # added: a pair
    for sub in ("image", "mask"):
        (bottle / sub / "3.jpg").write_bytes((bottle / sub / "0.jpg").read_bytes())
    assert _planned(_snakemake(tmp, "-n", *targets)) == expected
    # removed: that pair again, and one more
    for sub in ("image", "mask"):
        (bottle / sub / "3.jpg").unlink()
    assert _planned(_snakemake(tmp, "-n", *targets)) == {}
    for sub in ("image", "mask", "ori"):
        (bottle / sub / "2.jpg").unlink()
    res = _snakemake(tmp, "-n", *targets)
    assert _planned(res) == expected and _job_products(res, "import_pairs") == {"bottle"}
    # a half-copied folder: an image whose mask is not there yet stops the DAG, naming the file
    (bottle / "image" / "2.jpg").write_bytes((bottle / "image" / "0.jpg").read_bytes())
    res = _snakemake(tmp, "-n", *targets, check=False)
    assert res.returncode != 0 and "image/2.jpg: image without mask" in res.stdout + res.stderr

"""The prior as a pipeline stage (model.tiny_prior: auto): dry runs and one real tiny run of the stage.

The default config keeps the committed demo prior (the fast path: no train_prior job, tiny_sd assembles it); the
same config pointed at other products plans train_prior (one job, fed every product's split) and tiny_sd from its
output; once the prior is built a rerun reuses it, and changing a prior key (model.prior) replans only train_prior
and what depends on it. The tables' generator_model says the prior saw the run's own normals.
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

from helpers import REPO, planned_jobs, snakemake_exe
from seas.run.config import run_dir, validate_config
from seas.run.layout import Layout

RES = 32
RECIPE = {"vae_steps": 2, "vae_batch": 2, "vae_crop": 16, "unet_steps": 2, "unet_batch": 2, "unet_crop": 4,
          "unet_crop_steps": 1, "warmup": 1}


def _tree(root: Path) -> Path:
    """Two products unlike the demo's (greyscale stripes / rings), 32 px: 3 train/good, 1 test/good, 3 dents."""
    yy, xx = np.mgrid[:RES, :RES]
    mask = np.zeros((RES, RES), np.uint8)
    mask[10:14, 10:20] = 255
    for product, base in (("stripes", (xx // 4) % 2 * 180 + 40), ("rings", (np.hypot(yy - 16, xx - 16) // 3) % 2 * 200)):
        p = root / product
        for sub in ("train/good", "test/good", "test/dent", "ground_truth/dent"):
            (p / sub).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.roll(base, i, 1).astype(np.uint8)).convert("RGB").save(p / "train/good" / f"{i:03d}.png")
            bad = np.roll(base, i, 0).astype(np.uint8)
            bad[mask > 0] = 255
            Image.fromarray(bad).convert("RGB").save(p / "test/dent" / f"{i:03d}.png")
            Image.fromarray(mask).save(p / "ground_truth/dent" / f"{i:03d}_mask.png")
        Image.fromarray(base.astype(np.uint8)).convert("RGB").save(p / "test/good" / "000.png")
    return root


def _write(tmp: Path, name: str = "cfg.yaml", **over) -> tuple[Path, dict]:
    """config.yaml (the default run: model.tiny_prior auto) with results in ``tmp``; ``over``: dotted overrides."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    cfg.update(results_dir=str(tmp / "results"), studies={})
    cfg["model"]["pretrained"] = str(tmp / "tiny_sd")
    for dotted, value in over.items():
        node = cfg
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg))
    return path, validate_config(cfg)


def _snakemake(tmp: Path, config: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [snakemake_exe(), "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(tmp),
           "--configfile", str(config), "--cores", "1", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEAS_GPU_IDS": ""}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, f"snakemake {' '.join(extra)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


_planned = planned_jobs


def test_auto_keeps_the_committed_prior_for_the_demo(tmp_path):
    from seas.data.demo_data import generate_demo_dataset

    cfg, c = _write(tmp_path)
    # the demo tree built (else the DAG stops at its checkpoint): every job is planned
    generate_demo_dataset(tmp_path / c["dataset"]["root"], **c["dataset"]["demo"])
    res = _snakemake(tmp_path, cfg, "-n", "-p")
    counts = _planned(res)
    assert "train_prior" not in counts and counts["tiny_sd"] == 1
    assert f"--prior {REPO / 'priors' / 'tiny_prior.safetensors'}" in res.stdout
    assert "never saw" not in res.stderr


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    """The default config pointed at two products of its own (model.tiny_prior auto, a tiny prior recipe), with its
    splits, prior and tiny model built by a real run of those targets."""
    tmp = tmp_path_factory.mktemp("own_prior")
    root = _tree(tmp / "data")
    over = {"dataset.name": "custom", "dataset.root": str(root), "model.resolution": RES, "model.prior": RECIPE,
            "split.num_normal_images": 2, "gen_metrics.image_size": RES, "downstream.image_size": RES}
    config, cfg = _write(tmp, **over)
    dry = _snakemake(tmp, config, "-n", "-p")
    lay = Layout(str(run_dir(cfg)), cfg)
    _snakemake(tmp, config, lay.prior(), str(tmp / "tiny_sd"))
    return tmp, config, cfg, over, dry, lay


def test_other_products_plan_the_prior_stage(own):
    tmp, _, cfg, _, dry, lay = own
    counts = _planned(dry)
    assert counts["train_prior"] == 1 and counts["tiny_sd"] == 1 and counts["split"] == 2
    block = re.search(r"rule train_prior:\n(?:    .*\n)*Shell command: .*", dry.stdout).group(0)
    # one job fed every product's split (train/good images only: the CLI reads all_train_normals)
    assert re.search(r"--splits \S+/split/[0-9a-f]{10}/rings\.json \S+/split/[0-9a-f]{10}/stripes\.json --out ", block)
    assert re.search(r"benchmark: \S+/benchmarks/train_prior/[0-9a-f]{10}\.tsv", block)  # its cost is measured
    assert "seas_python_gpu 0 -m seas.models.train_prior" in block  # a GPU job (here: no GPU to claim)
    assert f"--prior {lay.prior()}" in dry.stdout  # the tiny model is assembled from it


def test_the_prior_saw_the_train_good_images_and_the_tables_say_own_normals(own):
    from downstream.report.tables import generator_label
    from seas.models.prior_file import read_prior_manifest

    tmp, _, cfg, _, _, lay = own
    m = read_prior_manifest(lay.prior())
    want = sorted(str(p) for p in (tmp / "data").glob("*/train/good/*.png"))
    assert sorted(m["data"]["files"]) == want and len(want) == 6
    assert Path(lay.prior()).with_name("run_record.json").is_file()
    assert Path(str(run_dir(cfg)) + f"/benchmarks/train_prior/{Path(lay.prior()).parent.name}.tsv").is_file()
    assert generator_label(cfg, run_dir(cfg)) == "tiny-pretrained (own normals: 6 images, 2 products)"


def _outputs(res) -> dict[str, set[str]]:
    """rule -> the output paths of its planned jobs (from a dry run's job blocks)."""
    out: dict[str, set[str]] = {}
    for block in re.split(r"\n(?=(?:rule|checkpoint|localrule) \w+:)", res.stdout):
        m = re.match(r"(?:rule|checkpoint|localrule) (\w+):", block)
        o = re.search(r"\n    output: (.*)", block)
        if m and o:
            out.setdefault(m.group(1), set()).add(o.group(1))
    return out


def test_a_rerun_reuses_the_prior_and_a_prior_key_replans_only_it_and_its_dependants(own):
    tmp, config, cfg, over, _, lay = own
    res = _snakemake(tmp, config, "-n", "-p")
    again = _planned(res)
    assert "train_prior" not in again and "tiny_sd" not in again and "split" not in again  # built: reused
    changed, ccfg = _write(tmp, "changed.yaml", **{**over, "model.prior": {**RECIPE, "unet_steps": 3}})
    res2 = _snakemake(tmp, changed, "-n", "-p")
    counts = _planned(res2)
    assert counts["train_prior"] == 1 and counts["tiny_sd"] == 1 and "split" not in counts
    before, after = _outputs(res), _outputs(res2)
    # what does not read the prior keeps its folders (the baselines, their segmenters: not built here, planned
    # alike); what does -- the generators and everything downstream of them -- moves to new ones
    assert before["baselines"] == after["baselines"]
    assert before["train_generator"].isdisjoint(after["train_generator"]) and len(after["train_generator"]) == 2
    assert before["generate"].isdisjoint(after["generate"])
    seg = lambda outs, m: {o for o in outs["train_seg"] if f"/{m}/" in o}  # noqa: E731
    assert seg(before, "cutpaste") == seg(after, "cutpaste") and seg(before, "seas").isdisjoint(seg(after, "seas"))
    assert Layout(str(run_dir(ccfg)), ccfg).prior() != lay.prior()  # a new folder: switching back reuses the old


def test_a_pinned_demo_prior_on_other_products_warns(own):
    tmp, _, _, over, _, _ = own
    pinned, _ = _write(tmp, "pinned.yaml", **{**over, "model.resolution": 128,
                                               "model.tiny_prior": str(REPO / "priors" / "tiny_prior.safetensors")})
    res = _snakemake(tmp, pinned, "-n")
    assert "WARNING: model.tiny_prior" in res.stderr and "never saw the normal images of rings, stripes" in res.stderr
    assert "train_prior" not in _planned(res)

"""The Snakemake DAG: a dry run of the paper-sized MVTec AD workflow on a synthetic tree, job counts per rule.

The tree has MVTec AD's 15 products and 73 anomaly types (real names) with tiny 8x8 PNGs; the config is the
preset config/mvtec_ad.yaml pointed at it. Also: the workflow's pure helpers (wflib), config errors, external
methods, --workflow-profile resolution from the repository root.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO, dry_run, job_counts, snakemake_exe, write_tree
from seas.run.stages import STAGES

sys.path.insert(0, str(REPO / "workflow" / "scripts"))

import wflib  # noqa: E402

MVTEC_AD = {
    "bottle": ["broken_large", "broken_small", "contamination"],
    "cable": ["bent_wire", "cable_swap", "combined", "cut_inner_insulation", "cut_outer_insulation",
              "missing_cable", "missing_wire", "poke_insulation"],
    "capsule": ["crack", "faulty_imprint", "poke", "scratch", "squeeze"],
    "carpet": ["color", "cut", "hole", "metal_contamination", "thread"],
    "grid": ["bent", "broken", "glue", "metal_contamination", "thread"],
    "hazelnut": ["crack", "cut", "hole", "print"],
    "leather": ["color", "cut", "fold", "glue", "poke"],
    "metal_nut": ["bent", "color", "flip", "scratch"],
    "pill": ["color", "combined", "contamination", "crack", "faulty_imprint", "pill_type", "scratch"],
    "screw": ["manipulated_front", "scratch_head", "scratch_neck", "thread_side", "thread_top"],
    "tile": ["crack", "glue_strip", "gray_stroke", "oil", "rough"],
    "toothbrush": ["defective"],
    "transistor": ["bent_lead", "cut_lead", "damaged_case", "misplaced"],
    "wood": ["color", "combined", "hole", "liquid", "scratch"],
    "zipper": ["broken_teeth", "combined", "fabric_border", "fabric_interior", "rough", "split_teeth",
               "squeezed_teeth"],
}


def write_config(tmp_path: Path, preset: str, root: Path, **overrides) -> Path:
    cfg = yaml.safe_load((REPO / "config" / preset).read_text())
    cfg["dataset"]["root"] = str(root)
    cfg["results_dir"] = str(tmp_path / "results")
    for dotted, value in overrides.items():
        node = cfg
        *parents, last = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def mvtec_tree(tmp_path_factory) -> Path:
    return write_tree(tmp_path_factory.mktemp("mvtec") / "mvtec_ad", MVTEC_AD)


def test_synthetic_tree_has_paper_shape(mvtec_tree):
    assert len(MVTEC_AD) == 15 and sum(map(len, MVTEC_AD.values())) == 73
    from seas.data.dataset import discover_products, discover_types

    assert discover_products(mvtec_tree) == sorted(MVTEC_AD)
    assert sum(len(discover_types(mvtec_tree, p)) for p in MVTEC_AD) == 73


def test_paper_sized_dag(mvtec_tree, tmp_path):
    cfg = write_config(tmp_path, "mvtec_ad.yaml", mvtec_tree)
    res = dry_run(cfg)
    counts = job_counts(res.stdout + res.stderr)
    n_models, n_methods = 3, 5
    expected = {
        "split": 15,
        "train_generator": 15,
        "train_rmp": 15,
        "generate": 73,
        "gen_metrics": 4 * 15,  # seas, crop_paste, cutpaste, draem (not `real`: the real images)
        "baselines": 4 * 15,  # real, crop_paste, cutpaste, draem
        "train_seg": n_models * n_methods,
        "evaluate": n_models * n_methods,
        "sample_grid": n_methods * 15,
        "compare_grid": 15,
        "html_table": 1,
        "plots": 1,
        "front_page": 1,
        "tables": 1,
        "all": 1,
    }
    expected["total"] = sum(expected.values())
    assert counts == expected
    # a dry run plans and writes nothing: no results folder at all (the resolved config and the stage configs are
    # written when jobs may run)
    assert not (tmp_path / "results").exists()
    assert not dry_run(cfg, "--lint", check=False).returncode and not (tmp_path / "results").exists()
    # GPU stages: the gpu resource, the claim wrapper, a time limit scaled by the product's types (cable: 8)
    block = re.search(r"rule train_generator:\n(?:    .*\n)*?    wildcards: k=[0-9a-f]+, product=cable, group=all\n(?:    .*\n)*Shell command: .*",
                      res.stdout).group(0)
    limit = int(re.search(r"runtime=(\d+)", block).group(1))
    assert "gpu=1," in block and 8 * 35 < limit < 8 * 35 * 2
    assert "seas_python_gpu 1 -m seas.method.train_generator --config " in block  # the claim wrapper of the shell prefix (common.smk)


# VisA as seas.data.convert writes it: one type per defect, several defects -> combined (as the authors split it)
@pytest.mark.parametrize("preset,shape", [("visa.yaml", {"candle": ["chunk_of_wax_missing", "combined"],
                                                         "pcb1": ["combined", "melt", "scratch"]}),
                                          ("mvtec_3d.yaml", {"bagel": ["combined", "crack", "hole"]})])
def test_other_presets_build_a_dag(preset, shape, tmp_path):
    root = write_tree(tmp_path / "tree", shape)
    cfg = write_config(tmp_path, preset, root, **{"downstream.models": ["lfd"], "downstream.methods": ["seas"]})
    counts = job_counts(dry_run(cfg).stdout)
    n_types = sum(map(len, shape.values()))
    assert counts["generate"] == n_types and counts["train_generator"] == len(shape)
    assert counts["train_seg"] == counts["evaluate"] == 1 and "baselines" not in counts


def test_product_subset_and_external_method(mvtec_tree, tmp_path):
    import numpy as np
    from PIL import Image

    ext = tmp_path / "my_gan_pairs"  # the SeaS authors' released layout: <product>/<type>/{image,mask}/000.png
    for product in ("bottle", "toothbrush"):
        for t in MVTEC_AD[product]:
            for sub in ("image", "mask"):
                (ext / product / t / sub).mkdir(parents=True)
                Image.fromarray(np.zeros((8, 8), np.uint8)).save(ext / product / t / sub / "000.png")
    cfg = write_config(tmp_path, "mvtec_ad.yaml", mvtec_tree, **{
        "dataset.products": ["bottle", "toothbrush"],
        "downstream.models": ["bisenetv2"],
        "downstream.methods": ["seas", f"external:{ext}"],
    })
    res = dry_run(cfg, "-p")
    counts = job_counts(res.stdout)
    assert counts["generate"] == 4 and counts["train_generator"] == 2
    assert counts["train_seg"] == 2 and counts["gen_metrics"] == 4 and counts["sample_grid"] == 4
    assert counts["import_pairs"] == 2 and "baselines" not in counts
    # the external method is imported per product, then trained from the import, under the folder name
    # external-<basename>
    assert re.search(r"--pairs-root \S*/methods/external-my_gan_pairs/[0-9a-f]{10} ", res.stdout)
    assert re.search(r"segmentation/bisenetv2/external-my_gan_pairs/[0-9a-f]{10}/all/model\.safetensors", res.stdout)


def test_per_type_generators_change_the_dag(mvtec_tree, tmp_path):
    """generator.scope: type (paper Tab. 4 'w/o Mixed'): one generator and one RMP per (product, type), each
    generation job reading its own type's checkpoints."""
    products = {"bottle": MVTEC_AD["bottle"], "toothbrush": MVTEC_AD["toothbrush"]}
    cfg = write_config(tmp_path, "mvtec_ad.yaml", mvtec_tree, **{
        "dataset.products": list(products), "downstream.models": ["lfd"], "downstream.methods": ["seas"],
        "generator.scope": "type"})
    res = dry_run(cfg, "-p")
    counts = job_counts(res.stdout)
    n_types = sum(map(len, products.values()))
    assert counts["train_generator"] == counts["train_rmp"] == counts["generate"] == n_types == 4
    assert "--anomaly-type broken_small --out" in res.stdout
    assert re.search(r"--generator \S*generator/[0-9a-f]+/bottle/type-contamination --rmp \S*rmp/[0-9a-f]+/bottle/type-contamination "
                     r"--type contamination", res.stdout)
    cfg = write_config(tmp_path, "mvtec_ad.yaml", mvtec_tree, **{
        "dataset.products": list(products), "downstream.models": ["lfd"], "downstream.methods": ["seas"]})
    counts = job_counts(dry_run(cfg).stdout)
    assert counts["train_generator"] == counts["train_rmp"] == 2 and counts["generate"] == 4


def test_threads_per_job_sets_every_jobs_threads(mvtec_tree, tmp_path):
    """resources.threads_per_job (the CPU demo's 1) replaces each rule's declared threads, in Snakemake's
    scheduling and in the OMP_NUM_THREADS of the command; null keeps the rules' own (4 for the model stages)."""
    def threads(**over):
        cfg = write_config(tmp_path, "mvtec_ad.yaml", mvtec_tree, **{
            "dataset.products": ["bottle"], "downstream.models": ["lfd"], "downstream.methods": ["seas"], **over})
        out = dry_run(cfg, "-p").stdout
        return (set(re.findall(r"^\s*threads: (\d+)$", out, flags=re.M)),
                set(re.findall(r"OMP_NUM_THREADS=(\d+) seas_python_gpu \S+ -m seas.method.train_generator ", out)))
    assert threads() == ({"2", "4"}, {"4"})  # (Snakemake prints no "threads: 1")
    assert threads(**{"resources.threads_per_job": 1}) == (set(), {"1"})
    assert threads(**{"resources.threads_per_job": 3}) == ({"3"}, {"3"})


def test_bad_config_names_the_key(mvtec_tree, tmp_path):
    cfg = write_config(tmp_path, "mvtec_ad.yaml", mvtec_tree, **{"generation.guidance_scale": "high"})
    res = dry_run(cfg, check=False)
    assert res.returncode != 0
    assert "generation.guidance_scale" in res.stdout + res.stderr
    cfg = write_config(tmp_path, "mvtec_ad.yaml", mvtec_tree, **{"dataset.products": ["bottle", "teapot"]})
    res = dry_run(cfg, check=False)
    assert res.returncode != 0 and "teapot" in res.stdout + res.stderr
    # semantic checks fire at parse time, before any job
    cfg = write_config(tmp_path, "mvtec_ad.yaml", mvtec_tree, **{"downstream.train.lfd.min_lr": 1.0})
    res = dry_run(cfg, check=False)
    assert res.returncode != 0 and "downstream.train.lfd: min_lr" in res.stdout + res.stderr


def test_missing_backbone_file_stops_the_preset_at_parse_time(mvtec_tree, tmp_path):
    """config/mvtec_ad.yaml names the paper's ImageNet backbones; without the files (an empty $TORCH_HOME) the dry
    run fails before planning, naming the file and where it comes from; `random` (said explicitly) plans."""
    cfg = write_config(tmp_path, "mvtec_ad.yaml", mvtec_tree)
    empty = tmp_path / "empty_torch_home"
    res = dry_run(cfg, check=False, torch_home=empty)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "Job stats" not in out
    assert "downstream.pretrained_backbones.resnet50: weights file resnet50_v1c-2cccc1ad.pth not found" in out
    assert f"{empty}/hub/checkpoints/resnet50_v1c-2cccc1ad.pth" in out and "open-mmlab://resnet50_v1c" in out
    # UPerNet's backbone given, LFD's still missing: named next
    r50 = tmp_path / "r50.pth"
    r50.write_bytes(b"stand-in")
    cfg = write_config(tmp_path, "mvtec_ad.yaml", mvtec_tree, **{"downstream.pretrained_backbones.resnet50": str(r50)})
    res = dry_run(cfg, check=False, torch_home=empty)
    assert res.returncode != 0 and "resnet18: weights file resnet18-f37072fd.pth not found" in res.stdout + res.stderr
    cfg = write_config(tmp_path, "mvtec_ad.yaml", mvtec_tree, **{"downstream.pretrained_backbones.resnet50": str(r50),
                                                                  "downstream.pretrained_backbones.resnet18": "random"})
    assert job_counts(dry_run(cfg, torch_home=empty).stdout)["train_seg"] == 15  # 3 models x 5 methods (seas, real, crop_paste, cutpaste, draem)
BROKEN_YAML = "run_name: x\ndataset:\n  name: demo\n  root: [unclosed\nmodel: {pretrained: a}\n"


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    """Issue 25.7, as a user hits it: an edited config.yaml with a syntax error, then `snakemake -n` in that folder.
    Snakemake's own message names neither the file nor the line; the workflow's reads "config.yaml, line 5 ...".
    A --configfile is parsed by Snakemake's command line before the workflow runs: its message stays Snakemake's
    (README, Configuration: `python -m seas.run.layout --config FILE` names the line) -- pinned here, so a Snakemake
    that starts naming the line shows up."""
    (tmp_path / "config.yaml").write_text(BROKEN_YAML)
    cmd = [snakemake_exe(), "-n", "--snakefile", str(REPO / "workflow" / "Snakefile"), "--cores", "1"]
    res = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    out = res.stdout + res.stderr
    assert res.returncode != 0
    assert "config.yaml, line 5, column 6: not valid YAML: expected ',' or ']', but got ':'" in out, out[-3000:]
    bad = tmp_path / "preset.yaml"
    bad.write_text(BROKEN_YAML)
    res = dry_run(bad, check=False)
    assert res.returncode != 0
    assert "Config file is not valid JSON or YAML" in res.stdout + res.stderr


def test_workflow_profile_resolves_from_repo_root(mvtec_tree, tmp_path):
    """`--workflow-profile profiles/slurm` from the repo root finds the profile (profiles -> workflow/profiles);
    without a flag, workflow/profiles/default is used."""
    cfg = write_config(tmp_path, "mvtec_ad.yaml", mvtec_tree, **{"dataset.products": ["toothbrush"]})
    res = dry_run(cfg, "--workflow-profile", "profiles/slurm")
    assert "workflow specific profile profiles/slurm" in res.stderr
    res = dry_run(cfg)
    assert re.search(r"workflow specific profile \S*profiles/default", res.stderr)


# ----------------------------------------------------------------------------- wflib (pure helpers)
def test_method_ids():
    from seas.run.labels import method_dir  # the one definition: wflib, the tables and the rules all use it

    assert method_dir("seas") == "seas"
    assert method_dir("external:/data/gan out/") == "external-gan out" and method_dir("external:rel/pairs") == "external-pairs"
    table = wflib.method_table(["seas", "external:/a/x", "real"])
    assert table == {"seas": "seas", "external-x": "external:/a/x", "real": "real"}
    with pytest.raises(wflib.WorkflowConfigError, match="external-x"):
        wflib.method_table(["external:/a/x", "external:/b/x"])


def test_section_json_is_canonical_and_selective():
    cfg = {"b": {"y": 2, "x": 1}, "a": 3, "c": {"z": [1, 2]}}
    assert wflib.section_json(cfg, "b", "c.z") == '{"b":{"x":1,"y":2},"c.z":[1,2]}'
    assert wflib.section_json(cfg, "a") != wflib.section_json({**cfg, "a": 4}, "a")
    assert wflib.section_json(cfg, "a") == wflib.section_json({**cfg, "b": {}}, "a")
    with pytest.raises(KeyError, match="c.q"):
        wflib.section_json(cfg, "c.q")


def test_write_if_changed_keeps_mtime(tmp_path):
    p = tmp_path / "run" / "config.yaml"
    assert wflib.write_if_changed(p, "a: 1\n")
    os.utime(p, (1_000_000, 1_000_000))
    assert not wflib.write_if_changed(p, "a: 1\n")
    assert p.stat().st_mtime == 1_000_000
    assert wflib.write_if_changed(p, "a: 2\n") and p.read_text() == "a: 2\n"
    assert [f.name for f in p.parent.iterdir()] == ["config.yaml"]


def test_write_if_changed_on_a_full_disk_leaves_no_temporary_file(tmp_path, monkeypatch):
    import errno

    from seas.run.runtime import io_error_message

    p = tmp_path / "run" / "config.yaml"
    assert wflib.write_if_changed(p, "a: 1\n")

    def full(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(src))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(OSError) as e:
        wflib.write_if_changed(p, "a: 2\n")
    monkeypatch.undo()
    assert [f.name for f in p.parent.iterdir()] == ["config.yaml"] and p.read_text() == "a: 1\n"
    assert io_error_message(e.value).startswith(f"cannot write to {p.parent}: No space left on device [Errno 28]")


def test_runtime_estimates_scale():
    import copy

    from seas.run.config import load_config

    cfg = load_config(REPO / "config" / "mvtec_ad.yaml")
    # paper: 35 min per type on an A100 -> the limit covers it with margin and grows with the type count
    one, eight = STAGES["train_generator"].minutes(cfg, n_types=1), STAGES["train_generator"].minutes(cfg, n_types=8)
    assert 35 < one < 90 and eight > 7 * 35
    small = copy.deepcopy(cfg)
    small["model"]["resolution"] = 256
    assert STAGES["train_generator"].minutes(small, n_types=8) < eight
    assert STAGES["train_rmp"].minutes(cfg, n_types=1) > 25 and STAGES["generate"].minutes(cfg) > 12  # 1000 x 720 ms


# ----------------------------------------------------------------------------- the jobs' shell prefix
def test_shell_prefix_functions_run_in_bash(tmp_path):
    """seas_python / seas_python_gpu / seas_script of wflib.shell_prefix, with a repo, an interpreter and a scripts
    folder under paths with spaces and quotes (the prefix is not in -n's 'Shell command' lines: run it here)."""
    repo, scripts, bindir = tmp_path / "my 'repo'", tmp_path / "scr ipts", tmp_path / "v env" / "bin"
    for d in (repo / "pkg", scripts, bindir):
        d.mkdir(parents=True)
    (repo / "pkg" / "__init__.py").write_text("")
    (repo / "pkg" / "hello.py").write_text(
        "import os, sys\nprint('hello', sys.argv[1:], os.environ.get('CUDA_VISIBLE_DEVICES'), os.environ['OMP_NUM_THREADS'])\n")
    shutil.copy(REPO / "workflow" / "scripts" / "gpu_claim.py", scripts / "gpu_claim.py")
    (scripts / "tool.py").write_text("import pkg, sys\nprint('tool', sys.argv[1:])\n")
    python = bindir / "python"
    python.symlink_to(sys.executable)
    prefix = wflib.shell_prefix(repo, str(python), scripts)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SLURM_JOB_ID")}
    env["SEAS_GPU_IDS"] = ""  # never claim a real GPU here

    def bash(cmd):
        res = subprocess.run(["bash", "-c", prefix + cmd], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        return res

    assert bash("OMP_NUM_THREADS=3 seas_python -m pkg.hello 'a b'").stdout == "hello ['a b'] None 3\n"
    res = bash("OMP_NUM_THREADS=2 seas_python_gpu 1 -m pkg.hello x")
    assert res.stdout == "hello ['x'] None 2\n" and "[gpu_claim] no GPU visible" in res.stderr
    assert bash("seas_script tool.py --out 'o p'").stdout == "tool ['--out', 'o p']\n"
    # strict mode: a failing stage fails the job
    assert subprocess.run(["bash", "-c", prefix + "false | cat; echo reached"], capture_output=True, text=True,
                          env=env).stdout == ""


def test_config_overrides_are_typed():
    raw = {"generation": {"guidance_scale": "3.0", "num_images_per_type": "10"}, "downstream": {"models": "[lfd]"},
           "model": {"pretrained": "CompVis/stable-diffusion-v1-4", "revision": "null"}, "split": {"shots": "1/3"}}
    got = wflib.typed_overrides(raw)
    assert got == {"generation": {"guidance_scale": 3.0, "num_images_per_type": 10}, "downstream": {"models": ["lfd"]},
                   "model": {"pretrained": "CompVis/stable-diffusion-v1-4", "revision": None}, "split": {"shots": "1/3"}}
    base = {"generation": {"guidance_scale": 8.0, "batch_size": 8}, "seed": 0}
    assert wflib.deep_update(base, got) is base
    assert base["generation"] == {"guidance_scale": 3.0, "batch_size": 8, "num_images_per_type": 10}


def test_planning_options_are_recognised():
    assert wflib.planning_only(["-n"]) and wflib.planning_only(["-np", "--cores", "2"])
    assert wflib.planning_only(["--lint"]) and wflib.planning_only(["--summary"]) and wflib.planning_only(["--dag"])
    assert not wflib.planning_only(["--cores", "2", "-p"]) and not wflib.planning_only(["--configfile", "n.yaml"])

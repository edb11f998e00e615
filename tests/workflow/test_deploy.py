"""The workflow deployed as a Snakemake module in another directory, the way `snakedeploy deploy-workflow` does it.

A release is cloned at its tag and deployed from the clone (README, "Deploying as a module"): here the clone is a
copy of this checkout's files (tracked + untracked, not ignored: what a clone would hold, uncommitted edits
included) in a temp folder, and `snakedeploy deploy-workflow <clone> <dest> --tag v0.1.0` (its local-path source:
no network) copies config/ and profiles/ and writes <dest>/workflow/Snakefile (`module seas_bench: snakefile: ...
config: config` + `use rule * from seas_bench`). snakedeploy writes a local source's Snakefile path relative
("workflow/Snakefile", which Snakemake would resolve next to the deploying Snakefile); the test points it at the
clone's workflow/Snakefile, as the README tells users to, then dry-runs from <dest>: the demo config that
came with config/, and a preset on a synthetic tree.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO, fake_torch_home, job_counts, snakemake_exe, write_tree



def _snakedeploy() -> str:
    exe = Path(sys.executable).parent / "snakedeploy"
    found = str(exe) if exe.exists() else shutil.which("snakedeploy")
    if not found:
        pytest.fail("snakedeploy is not installed (a test dependency: bash scripts/install.sh --test)")
    return found


def _clone(dest: Path) -> Path:
    """This checkout's files (tracked + untracked, not ignored) copied to dest, symlinks kept as links."""
    try:
        listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True,
                                capture_output=True).stdout.decode().split("\0")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    for rel in filter(None, listed):
        src, dst = REPO / rel, dest / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dst)
        else:
            shutil.copy2(src, dst)
    return dest


def _env() -> dict:
    # the presets' backbone files (downstream.pretrained_backbones) are found in a stand-in $TORCH_HOME
    env = {**os.environ, "SNAKEMAKE_OUTPUT_CACHE": "", "OMP_NUM_THREADS": "1", "TORCH_HOME": str(fake_torch_home())}
    env.pop("PYTHONPATH", None)  # the jobs and the parse find the packages through the clone, not through us
    return env


def _dry_run(dest: Path, *extra: str) -> subprocess.CompletedProcess:
    res = subprocess.run([snakemake_exe(), "-n", "--cores", "2", *extra], cwd=dest, capture_output=True, text=True,
                         env=_env(), timeout=300)
    assert res.returncode == 0, f"{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("deploy")
    clone = _clone(base / "seas-bench")
    dest = base / "my analysis"
    res = subprocess.run([_snakedeploy(), "deploy-workflow", str(clone), str(dest), "--tag", "v0.1.0",
                          "--name", "seas_bench"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    snakefile = dest / "workflow" / "Snakefile"
    text = snakefile.read_text()
    assert "module seas_bench:" in text and "use rule * from seas_bench" in text and 'configfile: "config/config.yaml"' in text
    assert text.count('"workflow/Snakefile"') == 1
    snakefile.write_text(text.replace('"workflow/Snakefile"', repr(str(clone / "workflow" / "Snakefile"))))
    return clone, dest


def test_deploy_copies_config_and_profiles(deployed):
    clone, dest = deployed
    copied = dest / "config" / "config.yaml"
    assert copied.is_file() and not copied.is_symlink()
    assert copied.read_text() == (REPO / "config.yaml").read_text()
    for name in ("README.md", "mvtec_ad.yaml", "visa.yaml", "mvtec_3d.yaml"):
        assert (dest / "config" / name).is_file()
    assert (dest / "profiles" / "default" / "config.yaml").is_file()
    assert (dest / "profiles" / "slurm" / "config.yaml").is_file()


def test_deployed_demo_dry_run(deployed):
    clone, dest = deployed
    res = _dry_run(dest)
    assert job_counts(res.stdout) == {"demo_data": 1, "tables": 1, "study": 1, "html_table": 1, "plots": 1,
                                      "front_page": 1, "all": 1, "total": 7}  # study: demo_tau; the report's pages
    # relative paths of the config resolve in the deploying directory, and the jobs run the clone's code
    assert not (dest / "results").exists() and not (clone / "results").exists()  # a dry run writes nothing
    assert "seas_python -m seas.data.demo_data --config results/demo/config.yaml --out resources/demo_data" in res.stdout


def test_deployed_preset_dry_run(deployed, tmp_path):
    clone, dest = deployed
    root = write_tree(tmp_path / "tree", {"bottle": ["broken_large", "contamination"], "grid": ["bent"]})
    cfg = yaml.safe_load((dest / "config" / "mvtec_ad.yaml").read_text())
    cfg["dataset"]["root"] = str(root)
    cfg["downstream"]["models"] = ["lfd"]
    (dest / "config" / "mine.yaml").write_text(yaml.safe_dump(cfg))
    counts = job_counts(_dry_run(dest, "--configfile", "config/mine.yaml").stdout)
    assert counts["train_generator"] == 2 and counts["generate"] == 3 and counts["train_seg"] == 5  # lfd x (seas, real, crop_paste, cutpaste, draem)
    assert counts["tables"] == counts["all"] == 1 and "study" not in counts
    # the preset replaced the deploying workflow's config/config.yaml (the demo's): none of its keys leaked in
    # (`--list` parses the workflow without planning-only mode: the resolved config is written)
    subprocess.run([snakemake_exe(), "--list", "--configfile", "config/mine.yaml"], cwd=dest, capture_output=True,
                   env=_env(), timeout=300, check=True)
    resolved = yaml.safe_load((dest / "results" / "mvtec_ad" / "mvtec_ad" / "config.yaml").read_text())
    assert resolved["studies"] == {} and resolved["generator"]["lr_unet"] == 4.0e-6

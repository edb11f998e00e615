"""The whole workflow end-to-end on the trimmed demo (config/test_e2e.yaml): 1 product, a few steps per stage,
2 segmentation models x 2 methods, 64 px, tiny random SD-shaped model. A few minutes on 2 CPU cores.

Also checks, on the same run directory: a run killed (SIGKILL) in the middle of a stage leaves that stage's output
untrusted (Snakemake's incomplete marker; the profile reruns it), a finished run has nothing left to do, a changed
generation parameter reruns exactly generation and what depends on it, and `snakemake --report` writes the report.
"""
from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_workflow_dryrun import job_counts, snakemake_exe

REPO = Path(__file__).resolve().parent.parent
SNAKEFILE = REPO / "workflow" / "Snakefile"

pytestmark = pytest.mark.slow


def _cmd(workdir: Path, *extra: str) -> list[str]:
    return [snakemake_exe(), "--snakefile", str(SNAKEFILE), "--directory", str(workdir),
            "--configfile", str(REPO / "config" / "test_e2e.yaml"), "--cores", "2", *extra]


def _env() -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "SEAS_GPU_IDS": ""}  # never claim a GPU here, whatever the machine has
    env.pop("SLURM_JOB_ID", None)
    return env


def _run(workdir: Path, *extra: str, check: bool = True, timeout: int = 900) -> subprocess.CompletedProcess:
    res = subprocess.run(_cmd(workdir, *extra), capture_output=True, text=True, env=_env(), timeout=timeout)
    if check and res.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted(workdir.glob("results/e2e/e2e/logs/**/*.log")))
        raise AssertionError(f"snakemake {' '.join(extra)} failed ({res.returncode}):\n{res.stderr[-6000:]}\n{logs}")
    return res


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _kill_tree(pid: int) -> None:
    for p in reversed(_descendants(pid)):  # only processes this test started
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_trimmed_demo_end_to_end(tmp_path):
    run = tmp_path / "results" / "e2e" / "e2e"  # <results_dir>/<run_name>

    # 1. start the run and kill it hard (SIGKILL, like a crash or a lost node) while the generator trains
    proc = subprocess.Popen(_cmd(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    marker = run / "logs" / "train_generator" / "weave" / "all.log"
    t0 = time.monotonic()
    while not marker.exists():
        assert proc.poll() is None, "the run ended before the generator started"
        assert time.monotonic() - t0 < 600, "the generator did not start within 10 minutes"
        time.sleep(0.05)
    time.sleep(0.5)
    _kill_tree(proc.pid)
    proc.wait(timeout=30)
    out = run / "generator" / "weave" / "all"
    assert not (out / "unet").exists(), "the generator finished before it could be interrupted"
    # a half-written output under the final name (what a non-atomic writer would leave) must not be trusted
    out.mkdir(parents=True, exist_ok=True)
    (out / "tokens.json").write_text("{")
    _run(tmp_path, "--unlock")
    res = _run(tmp_path, "-n", "--workflow-profile", "none", check=False)
    assert res.returncode != 0 and "incomplete" in (res.stdout + res.stderr).lower()
    assert "results/e2e/e2e/generator/weave/all" in res.stdout + res.stderr
    res = _run(tmp_path, "-n")  # the workstation profile (rerun-incomplete) forces the killed job to run again
    assert job_counts(res.stdout)["train_generator"] == 1
    assert re.search(r"rule train_generator:\n(?:    .*\n)*?    reason: Forced execution", res.stdout)

    # 2. the whole run
    t0 = time.monotonic()
    _run(tmp_path)
    wall = time.monotonic() - t0
    print(f"trimmed demo run: {wall:.0f} s")
    assert (out / "tokens.json").read_text() != "{"

    tables = tmp_path / "results" / "e2e" / "tables"  # <results_dir>/tables
    assert sorted(p.name for p in tables.glob("*.csv")) == sorted(
        ["generation.csv", "segmentation.csv", "detection.csv", "segmentation_per_product.csv",
         "detection_per_product.csv"])
    seg = _read_csv(tables / "segmentation.csv")
    assert list(seg[0]) == ["dataset", "generator_model", "model", "backbone_init", "method", "pixel_auroc",
                            "pixel_ap", "pixel_f1max", "pixel_iou_best", "pixel_iou_fixed"]
    assert sorted((r["model"], r["method"]) for r in seg) == sorted(
        (m, k) for m in ("lfd", "bisenetv2", "average") for k in ("seas", "cutpaste"))
    assert {r["generator_model"] for r in seg} == {"tiny-random (not SD v1-4)"} and {r["dataset"] for r in seg} == {"demo"}
    for r in seg:
        assert 0 <= float(r["pixel_auroc"]) <= 100
    det = _read_csv(tables / "detection.csv")
    assert len(det) == 6 and "image_auroc" in det[0]
    gen = _read_csv(tables / "generation.csv")
    assert sorted((r["method"], r["product"]) for r in gen) == sorted(
        (m, p) for m in ("seas", "cutpaste") for p in ("weave", "mean"))
    per = _read_csv(tables / "segmentation_per_product.csv")
    assert {r["product"] for r in per} == {"weave", "mean"}
    assert {"lfd/seas", "bisenetv2/cutpaste"} <= set(per[0])
    # the seas pairs exist for both anomaly types of weave, with their manifests
    for t in ("scratch", "stain"):
        rows = _read_csv(run / "methods" / "seas" / "weave" / t / "manifest.csv")
        assert len(rows) == 4
    assert (run / "report" / "samples" / "seas" / "weave.png").stat().st_size > 0

    # 3. nothing left to do
    res = _run(tmp_path, "-n")
    assert "Nothing to be done" in res.stdout + res.stderr

    # 4. a changed generation parameter reruns generation and what depends on it, nothing upstream
    res = _run(tmp_path, "-n", "--config", "generation={guidance_scale: 3.0}")
    counts = job_counts(res.stdout)
    assert counts == {"generate": 2, "gen_metrics": 1, "sample_grid": 1, "train_seg": 2, "evaluate": 2,
                      "tables": 1, "all": 1, "total": 10}, counts
    assert "reason: Params have changed since last execution" in res.stdout
    _run(tmp_path, "-n")  # restore the resolved config of the finished run

    # 5. the HTML report
    _run(tmp_path, "--report", str(tmp_path / "report.html"), timeout=300)
    html = (tmp_path / "report.html").read_text(errors="replace")
    assert "segmentation.csv" in html and "weave.png" in html

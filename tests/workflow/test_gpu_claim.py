"""workflow/scripts/gpu_claim.py: per-GPU locks -> CUDA_VISIBLE_DEVICES; no-op under SLURM and without GPUs.

GPUs are faked with SEAS_GPU_IDS (the wrapper only ever locks files and sets an environment variable).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

from helpers import REPO

SCRIPT = REPO / "workflow" / "scripts" / "gpu_claim.py"
sys.path.insert(0, str(SCRIPT.parent))

import gpu_claim  # noqa: E402

# the command the wrapper runs: print what it was given, optionally hold the GPU a while
SHOW = [sys.executable, "-c",
        "import os, sys, time; print(os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>'), flush=True); "
        "time.sleep(float(sys.argv[1]))"]


def _env(tmp_path, **kw):
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES", "SEAS_GPU_IDS")}
    env["SEAS_GPU_LOCK_DIR"] = str(tmp_path / "locks")
    env.update(kw)
    return env


def _start(env, hold: float, gpus: int = 1, *extra):
    return subprocess.Popen([sys.executable, str(SCRIPT), "--gpus", str(gpus), "--poll", "0.05", *extra, "--",
                             *SHOW, str(hold)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _first_line(proc) -> str:
    return proc.stdout.readline().strip()


def test_candidates_from_env():
    assert gpu_claim.candidate_devices({"SEAS_GPU_IDS": "0,1,3"}) == ["0", "1", "3"]
    assert gpu_claim.candidate_devices({"SEAS_GPU_IDS": ""}) == []
    assert gpu_claim.candidate_devices({"CUDA_VISIBLE_DEVICES": "2, 5"}) == ["2", "5"]
    assert gpu_claim.candidate_devices({"CUDA_VISIBLE_DEVICES": "-1"}) == []
    assert gpu_claim.candidate_devices({"CUDA_VISIBLE_DEVICES": ""}) == []


def test_parallel_jobs_get_distinct_gpus_and_a_third_waits(tmp_path):
    env = _env(tmp_path, SEAS_GPU_IDS="0,1")
    a = _start(env, 1.5)
    got_a = _first_line(a)
    b = _start(env, 0.0)
    got_b = _first_line(b)
    assert {got_a, got_b} == {"0", "1"}
    b.wait(timeout=10)
    # b has exited: its GPU is free again; a still holds its own -> c gets b's GPU at once
    c = _start(env, 0.0)
    assert _first_line(c) == got_b
    c.wait(timeout=10)
    # two GPUs for one job must wait for a to finish
    t0 = time.monotonic()
    d = _start(env, 0.0, 2)
    assert _first_line(d) in ("0,1", "1,0")
    assert a.poll() is not None, "the 2-GPU job ran while the first job still held a GPU"
    assert "waiting" in d.stderr.read()
    assert time.monotonic() - t0 > 0.2
    for p in (a, b, c, d):
        p.wait(timeout=10)
        assert p.returncode == 0


def test_lock_released_when_the_command_is_killed(tmp_path):
    env = _env(tmp_path, SEAS_GPU_IDS="7")
    a = _start(env, 60)
    assert _first_line(a) == "7"
    a.kill()
    a.wait(timeout=10)
    b = _start(env, 0.0, 1, "--timeout", "5")
    assert _first_line(b) == "7"
    assert b.wait(timeout=10) == 0


def test_timeout_when_all_busy(tmp_path):
    env = _env(tmp_path, SEAS_GPU_IDS="0")
    a = _start(env, 30)
    assert _first_line(a) == "0"
    b = _start(env, 0.0, 1, "--timeout", "0.3")
    assert b.wait(timeout=10) == 2
    assert "no 1 free GPU" in b.stderr.read()
    a.kill()
    a.wait()


def test_noop_under_slurm_and_without_gpus(tmp_path):
    # SLURM already restricted the job to its allocation: keep it, lock nothing
    env = _env(tmp_path, SEAS_GPU_IDS="0,1", SLURM_JOB_ID="123", CUDA_VISIBLE_DEVICES="3")
    p = _start(env, 0.0)
    assert _first_line(p) == "3" and p.wait(timeout=10) == 0
    assert not (tmp_path / "locks").exists()
    # CPU-only machine
    env = _env(tmp_path, SEAS_GPU_IDS="")
    p = _start(env, 0.0)
    assert _first_line(p) == "<unset>" and p.wait(timeout=10) == 0
    assert "no GPU visible" in p.stderr.read()
    # --gpus 0: run as is
    p = _start(_env(tmp_path, SEAS_GPU_IDS="0"), 0.0, 0)
    assert _first_line(p) == "<unset>" and p.wait(timeout=10) == 0


def test_too_many_gpus_asked_and_exit_status_passthrough(tmp_path):
    p = _start(_env(tmp_path, SEAS_GPU_IDS="0"), 0.0, 2)
    assert p.wait(timeout=10) == 2 and "only 1 device" in p.stderr.read()
    r = subprocess.run([sys.executable, str(SCRIPT), "--gpus", "1", "--", sys.executable, "-c", "raise SystemExit(5)"],
                       env=_env(tmp_path, SEAS_GPU_IDS="0"), capture_output=True, timeout=10)
    assert r.returncode == 5


def test_usage_errors():
    r = subprocess.run([sys.executable, str(SCRIPT), "--gpus", "1"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "usage" in r.stderr

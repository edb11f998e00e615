"""The workflow on a real SLURM cluster (tests/slurm/): submission, accounting, and identical outputs.

The `slurm`-marked tests run a slice of the demo DAG through ``snakemake --workflow-profile profiles/slurm``
(tests/slurm/run_slice.sh) on a running SLURM with accounting -- e.g. the one-node cluster of
tests/slurm/cluster.sh -- and the same slice locally, then check with SLURM's own accounting (sacct) that every
stage ran as its own job and completed, and that both runs wrote byte-identical artifacts. They take ~15 min on
2 cores and only run with SEAS_SLURM_TEST=1 (tests/slurm/run.sh sets it: cluster up, these tests, cluster down).
SEAS_SLURM_SLICE_OUT=DIR reuses the output of an earlier ``run_slice.sh DIR both`` instead of running it.

The other tests need no cluster: the overlay merger and how Snakemake layers its flags over the workflow profile.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO

SLURM_DIR = REPO / "tests" / "slurm"

sys.path.insert(0, str(SLURM_DIR))
import overlay_args  # noqa: E402  (tests/slurm/overlay_args.py)

# stages of the slice and how many SLURM jobs each must have had
SLICE_JOBS = {"demo_data": 1, "tiny_sd": 1, "split": 1, "train_generator": 1, "train_rmp": 1, "generate": 2,
              "train_seg": 1}
# stages that declare a GPU (config resources.gpus_per_job = 1 -> sbatch --gpus=1)
GPU_STAGES = ("train_generator", "train_rmp", "generate", "train_seg")
# what may differ between two runs of the same config: logs, timings, Snakemake's directory-output markers
VOLATILE = re.compile(r"(^|/)(logs|benchmarks)/|(^|/)\.snakemake_timestamp$|(^|/)run_record\.json$")
# keys / CSV columns holding wall-clock durations ("seconds", "train_seconds_this_call", ...)
WALL_CLOCK = re.compile(r"(^|_)seconds($|_)")
# keys holding file-system times: the dataset manifest (seas.data.dataset_manifest) caches each file's mtime_ns,
# which differs between two copies of the same data; its sizes and sha256 are what must match
FS_TIME = re.compile(r"^mtime_ns$")
SUBMITTED = re.compile(r"submitted with SLURM jobid (\d+) \(log: .*/slurm_logs/rule_([A-Za-z0-9_]+)/")


# ----------------------------------------------------------------------------- no cluster needed
def test_merge_keeps_profile_keys_and_overrides_per_key():
    profile = {"executor": "slurm", "default-resources": {"mem_mb": 4000, "runtime": 30},
               "set-resources": {"train": {"gpu": 1, "mem_mb": 32000, "runtime": 90}}, "retries": 1}
    overlay = {"default-resources": {"slurm_partition": "debug", "mem_mb": 2000},
               "set-resources": {"train": {"gpu": 0}, "eval": {"mem_mb": 100}},
               "slurm-keep-successful-logs": True}
    merged = overlay_args.merge(profile, overlay)
    assert merged == {
        "default-resources": {"mem_mb": 2000, "runtime": 30, "slurm_partition": "debug"},
        "set-resources": {"train": {"gpu": 0, "mem_mb": 32000, "runtime": 90}, "eval": {"mem_mb": 100}},
        "slurm-keep-successful-logs": True,
    }
    assert overlay_args.to_flags(merged) == [
        "--default-resources", "mem_mb=2000", "runtime=30", "slurm_partition=debug",
        "--set-resources", "train:gpu=0", "train:mem_mb=32000", "train:runtime=90", "eval:mem_mb=100",
        "--slurm-keep-successful-logs",
    ]
    # numeric-looking strings stay strings for Snakemake (its profile parser quotes them the same way)
    assert overlay_args.to_flags({"default-resources": {"slurm_account": "123", "x": 1.5}}) == [
        "--default-resources", "slurm_account='123'", "x=1.5"]
    with pytest.raises(overlay_args.OverlayError, match="set-resources.train"):
        overlay_args.merge(profile, {"set-resources": {"train": 3}})
    # a flag the profile switches on cannot be switched off from the command line: refuse, don't ignore
    with pytest.raises(overlay_args.OverlayError, match="printshellcmds"):
        overlay_args.merge({"printshellcmds": True}, {"printshellcmds": False})
    assert overlay_args.merge({}, {"printshellcmds": False}) == {"printshellcmds": False}


def test_repo_overlay_targets_partition_and_keeps_gpu_requests():
    flags = overlay_args.overlay_flags(REPO / "profiles" / "slurm", SLURM_DIR / "overlay.yaml")
    assert flags[0] == "--default-resources"
    dr = flags[1:flags.index("--set-resources")]
    assert "slurm_partition=debug" in dr and "slurm_account=seas" in dr
    sr = flags[flags.index("--set-resources") + 1:flags.index("--set-threads")]
    for rule in GPU_STAGES:
        assert f"{rule}:mem_mb=4000" in sr
    assert not [f for f in sr if ":gpu" in f or ":gres" in f], "the test must submit the rules' own GPU requests"


HELLO_SNAKEFILE = """
rule all:
    input: "b.txt"
rule a:
    output: "a.txt"
    resources: mem_mb=1000
    shell: "touch {output}"
rule b:
    input: "a.txt"
    output: "b.txt"
    shell: "touch {output}"
"""
HELLO_PROFILE = """
executor: slurm
default-resources:
  slurm_partition: gpu
  mem_mb: 4000
  runtime: 120
set-resources:
  b: {mem_mb: 8000, gpu: 1}
"""


def _dry_run_resources(workdir: Path, *args: str) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--executor", "local", "--cores", "1", *args],
                         cwd=workdir, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    return dict(re.findall(r"rule (\w+):\n(?:    .*\n)*?    resources: (.*)", text))


def test_flags_win_over_workflow_profile_but_profile_overlay_does_not(tmp_path):
    """Why the overlay is passed as flags: Snakemake applies the workflow profile after --profile."""
    (tmp_path / "Snakefile").write_text(HELLO_SNAKEFILE)
    (tmp_path / "wf").mkdir()
    (tmp_path / "wf" / "profile.yaml").write_text(HELLO_PROFILE)
    (tmp_path / "site").mkdir()
    overlay = "default-resources: {slurm_partition: debug}\nset-resources:\n  b: {gpu: 0}\n"
    (tmp_path / "site" / "profile.yaml").write_text(overlay)

    as_profile = _dry_run_resources(tmp_path, "--workflow-profile", "wf", "--profile", "site")
    assert "slurm_partition=gpu" in as_profile["b"] and "gpu=1" in as_profile["b"]  # the overlay lost

    flags = overlay_args.overlay_flags(tmp_path / "wf", tmp_path / "site" / "profile.yaml")
    as_flags = _dry_run_resources(tmp_path, "--workflow-profile", "wf", *flags)
    b = as_flags["b"]
    assert "slurm_partition=debug" in b and "gpu=0" in b and "mem_mb=8000" in b and "runtime=120" in b
    assert "slurm_partition=debug" in as_flags["a"] and "mem_mb=1000" in as_flags["a"]


# ----------------------------------------------------------------------------- the real cluster
def _slurm_problem() -> str | None:
    for tool in ("sbatch", "sacct", "scontrol"):
        if shutil.which(tool) is None:
            return f"{tool} not found"
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True)
    if ping.returncode != 0 or "UP" not in ping.stdout:
        return f"slurmctld not reachable: {ping.stdout.strip() or ping.stderr.strip()}"
    acct = subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, text=True)
    if acct.returncode != 0:
        return f"no accounting (sacct): {acct.stderr.strip()}"
    return None


@pytest.fixture(scope="module")
def slice_out(tmp_path_factory) -> Path:
    if os.environ.get("SEAS_SLURM_TEST") != "1":
        pytest.skip("needs a SLURM cluster: set SEAS_SLURM_TEST=1 (tests/slurm/run.sh does)")
    problem = _slurm_problem()
    if problem:
        pytest.fail(f"SEAS_SLURM_TEST=1 but SLURM is not usable: {problem} (start it: tests/slurm/cluster.sh up)")
    reuse = os.environ.get("SEAS_SLURM_SLICE_OUT")
    if reuse:
        out = Path(reuse)
    else:
        out = tmp_path_factory.mktemp("slurm_slice")
        run = subprocess.run([str(SLURM_DIR / "run_slice.sh"), str(out), "both"], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr[-4000:]
    for mode in ("slurm", "local"):
        assert (out / f"{mode}.log").is_file(), f"{out}: no {mode}.log"
        print(f"{mode} run: {(out / f'{mode}.seconds').read_text().strip()} s")
    return out


def submitted_jobs(log_text: str) -> list[tuple[str, str]]:
    """[(rule, slurm job id)] in submission order, from the snakemake output of a SLURM run."""
    return [(rule, jid) for jid, rule in SUBMITTED.findall(log_text)]


def _sacct(job_ids: list[str]) -> dict[str, dict[str, str]]:
    fields = ["JobID", "JobName", "State", "ExitCode", "Comment", "WorkDir", "Partition", "Account", "AllocTRES"]
    res = subprocess.run(["sacct", "-n", "-X", "-P", "-j", ",".join(job_ids), "-o", ",".join(fields)],
                         capture_output=True, text=True, check=True)
    rows = [dict(zip(fields, line.split("|"))) for line in res.stdout.splitlines() if line.strip()]
    return {r["JobID"]: r for r in rows}


@pytest.mark.slurm
def test_each_stage_ran_as_its_own_completed_slurm_job(slice_out):
    jobs = submitted_jobs((slice_out / "slurm.log").read_text())
    counts = {rule: sum(r == rule for r, _ in jobs) for rule in SLICE_JOBS}
    assert counts == SLICE_JOBS, jobs
    ids = [jid for _, jid in jobs]
    assert len(set(ids)) == len(ids), "a SLURM job id was reused"
    # accounting records settle a moment after the executor saw the job finish
    deadline = time.monotonic() + 60
    while True:
        acct = _sacct(ids)
        done = all(acct.get(j, {}).get("State") == "COMPLETED" and acct[j].get("Comment") for j in ids)
        if done or time.monotonic() > deadline:
            break
        time.sleep(2)
    workdir = str((slice_out / "slurm").resolve())
    run_names = {acct[j]["JobName"] for j in ids if j in acct}
    assert len(run_names) == 1, f"jobs of one snakemake run carry its run id as name: {run_names}"
    for rule, jid in jobs:
        rec = acct.get(jid)
        assert rec is not None, f"sacct has no record of job {jid} ({rule})"
        assert (rec["State"], rec["ExitCode"]) == ("COMPLETED", "0:0"), (rule, rec)
        assert rec["Comment"].startswith(f"rule_{rule}"), (rule, rec)
        assert rec["WorkDir"] == workdir, (rule, rec)
        assert (rec["Partition"], rec["Account"]) == ("debug", "seas"), (rule, rec)
        gpus = re.search(r"gres/gpu=(\d+)", rec["AllocTRES"])
        assert (gpus.group(1) if gpus else "0") == ("1" if rule in GPU_STAGES else "0"), (rule, rec)
    # inside a SLURM job the GPU-claim wrapper stands aside and uses the allocation's device
    claimed = set()
    for log in (slice_out / "slurm" / "results" / "slurm_slice" / "logs").rglob("*.log"):
        claimed |= set(re.findall(r"\[gpu_claim\] SLURM job (\d+): using its allocation \(CUDA_VISIBLE_DEVICES=\d",
                                  log.read_text(errors="replace")))
    assert claimed == {jid for rule, jid in jobs if rule in GPU_STAGES}


def _drop_wall_clock(obj):
    if isinstance(obj, dict):
        return {k: _drop_wall_clock(v) for k, v in obj.items() if not (WALL_CLOCK.search(k) or FS_TIME.search(k))}
    if isinstance(obj, list):
        return [_drop_wall_clock(v) for v in obj]
    return obj


def normalized_bytes(path: Path, run_dir: Path) -> bytes:
    """A file's bytes for comparison between runs: binary files as they are; text with the run directory's
    absolute path replaced (split manifests record absolute image paths); JSON keys and CSV columns that hold
    wall-clock seconds removed (training logs time their steps); safetensors with a canonically ordered header.
    Everything else must match byte for byte."""
    data = path.read_bytes()
    if path.suffix == ".safetensors":
        # the header's __metadata__ map is written in hash-map order, which changes from process to process:
        # compare the parsed header (names, dtypes, shapes, offsets, metadata) and the raw tensor bytes
        n = struct.unpack("<Q", data[:8])[0]
        return json.dumps(json.loads(data[8:8 + n]), sort_keys=True).encode() + data[8 + n:]
    if path.suffix not in (".json", ".csv", ".yaml", ".txt"):
        return data
    text = data.decode().replace(str(run_dir), "<RUN_DIR>")
    if path.suffix == ".json":
        return json.dumps(_drop_wall_clock(json.loads(text)), sort_keys=True).encode()
    if path.suffix == ".csv":
        rows = list(csv.reader(io.StringIO(text)))
        keep = [i for i, name in enumerate(rows[0] if rows else []) if not WALL_CLOCK.search(name)]
        return "\n".join(",".join(r[i] for i in keep if i < len(r)) for r in rows).encode()
    return text.encode()


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every artifact under a run directory (normalized_bytes), keyed by relative path."""
    root = root.resolve()
    digest = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or rel.startswith(".snakemake/") or VOLATILE.search(rel):
            continue
        digest[rel] = hashlib.sha256(normalized_bytes(p, root)).hexdigest()
    return digest


def test_normalized_bytes_drops_only_wall_clock(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.csv").write_text("step,loss,seconds\n1,0.5,0.21\n")
    (run / "t.json").write_text(json.dumps({"loss": 0.5, "train_seconds_this_call": 3.6,
                                            "hist": [{"seconds": 1, "it": 2}], "path": f"{run}/x.png",
                                            "files": {f"{run}/a.png": {"size": 3, "mtime_ns": 17, "sha256": "ab"}}}))
    assert normalized_bytes(run / "log.csv", run) == b"step,loss\n1,0.5"
    assert json.loads(normalized_bytes(run / "t.json", run)) == {
        "loss": 0.5, "hist": [{"it": 2}], "path": "<RUN_DIR>/x.png",
        "files": {"<RUN_DIR>/a.png": {"size": 3, "sha256": "ab"}}}  # a dataset manifest's mtimes are not content
    (run / "log.csv").write_text("step,loss,seconds\n1,0.6,0.21\n")  # a changed loss is still a difference
    assert normalized_bytes(run / "log.csv", run) != b"step,loss\n1,0.5"
    from safetensors.torch import save_file
    import torch

    t = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    save_file(t, run / "a.safetensors", metadata={"model": "m", "method": "x"})
    save_file(t, run / "b.safetensors", metadata={"method": "x", "model": "m"})
    t["w"][1, 2] = 5.5
    save_file(t, run / "c.safetensors", metadata={"model": "m", "method": "x"})
    a, b, c = (normalized_bytes(run / f"{n}.safetensors", run) for n in "abc")
    assert a == b and a != c


@pytest.mark.slurm
def test_outputs_identical_to_local_run(slice_out):
    on_slurm = tree_digest(slice_out / "slurm")
    local = tree_digest(slice_out / "local")
    assert sorted(on_slurm) == sorted(local)
    from seas.run.config import load_config, run_dir
    from seas.run.layout import Layout

    cfg = load_config(SLURM_DIR / "slice_config.yaml")
    lay = Layout(run_dir(cfg), cfg)  # results/slurm_slice, relative like the digests' keys
    for must in (f"{lay.generator('washer', 'all')}/unet/diffusion_pytorch_model.safetensors",
                 f"{lay.rmp('washer', 'all')}/rmp.safetensors", lay.generation_manifest("washer", "hole"),
                 f"{lay.pairs_dir('seas', 'washer')}/scratch/images/000000.png", lay.seg_model("bisenetv2", "seas")):
        assert must in on_slurm, must
    differ = sorted(k for k in on_slurm if on_slurm[k] != local[k])
    assert not differ, f"{len(differ)} of {len(on_slurm)} files differ between the SLURM and the local run: {differ}"

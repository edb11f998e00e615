#!/usr/bin/env python3
"""Run a command on GPUs it claims for itself: a per-GPU file lock, then CUDA_VISIBLE_DEVICES.

Snakemake only *counts* GPUs (``--resources gpu=N`` keeps at most N GPU-jobs running); it never says
*which* device a job may use. Every GPU rule therefore starts its command through this wrapper::

    python workflow/scripts/gpu_claim.py --gpus 1 -- python -m seas.method.train_generator ...

It takes an exclusive ``flock`` on ``<lock-dir>/gpu-<id>.lock`` for ``--gpus`` free devices (waiting while
all are busy), sets ``CUDA_VISIBLE_DEVICES`` to them and ``exec``s the command. The lock file descriptors are
inherited by the command, so the devices stay claimed exactly as long as the command (and any child still
holding the descriptors) lives, and are released by the kernel however it ends (crash, kill -9 included).
On a 4-GPU workstation four product trainings thus run at once, one per GPU.

No-op cases (the command is exec'd unchanged):
  * ``--gpus 0``;
  * inside a SLURM job (``SLURM_JOB_ID`` set): SLURM already set CUDA_VISIBLE_DEVICES for the allocation;
  * a machine without GPUs (``nvidia-smi -L`` lists none / is missing, or CUDA_VISIBLE_DEVICES is empty).

Candidate devices: ``SEAS_GPU_IDS`` (comma list, also for tests) if set, else ``CUDA_VISIBLE_DEVICES`` if set
(only those are shared out), else the indices ``nvidia-smi -L`` lists.
Lock folder: ``--lock-dir``, else ``SEAS_GPU_LOCK_DIR``, else ``/tmp/seas-gpu-locks`` (shared by all users of
the machine: created mode 1777).

A script, not a ``python -m`` module of the packages like every other CLI: it wraps other commands, so it must
run before (and without) importing the project (no seas/downstream, no torch; standard library only) whatever
the job's PYTHONPATH and environment hold.
"""
from __future__ import annotations

import argparse
import fcntl
import os
import re
import shutil
import subprocess
import sys
import time

DEFAULT_LOCK_DIR = "/tmp/seas-gpu-locks"


class ClaimError(RuntimeError):
    pass


def _log(msg: str) -> None:
    print(f"[gpu_claim] {msg}", file=sys.stderr, flush=True)


def _split_ids(text: str) -> list[str]:
    ids = [t.strip() for t in text.split(",") if t.strip()]
    # CUDA semantics: "-1" (or anything after an invalid entry) hides all devices
    return [] if not ids or ids[0] == "-1" else ids


def candidate_devices(env: dict | None = None) -> list[str]:
    """Device ids this process may share out (see module doc); [] on a CPU-only machine."""
    env = os.environ if env is None else env
    if "SEAS_GPU_IDS" in env:
        return _split_ids(env["SEAS_GPU_IDS"])
    if "CUDA_VISIBLE_DEVICES" in env:
        return _split_ids(env["CUDA_VISIBLE_DEVICES"])
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [m.group(1) for m in re.finditer(r"^GPU (\d+):", out, flags=re.M)]


def _lock_name(dev: str) -> str:
    return "gpu-" + re.sub(r"[^A-Za-z0-9_.-]", "_", dev) + ".lock"


def _open_lock_dir(lock_dir: str) -> None:
    os.makedirs(lock_dir, exist_ok=True)
    try:  # shared between users: sticky, world-writable (only the creator can chmod; ignore failures)
        os.chmod(lock_dir, 0o1777)
    except PermissionError:
        pass


def try_claim(devices: list[str], n: int, lock_dir: str) -> list[tuple[str, int]] | None:
    """Lock ``n`` free devices (in order) without waiting: [(device, fd), ...] or None (nothing held then)."""
    held: list[tuple[str, int]] = []
    for dev in devices:
        path = os.path.join(lock_dir, _lock_name(dev))
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        held.append((dev, fd))
        if len(held) == n:
            return held
    for _, fd in held:
        os.close(fd)  # closing releases the flock
    return None


def claim(devices: list[str], n: int, lock_dir: str, timeout: float, poll: float) -> list[tuple[str, int]]:
    if n > len(devices):
        raise ClaimError(f"--gpus {n} asked for, but only {len(devices)} device(s) are visible: {devices}")
    _open_lock_dir(lock_dir)
    t0 = time.monotonic()
    waited = False
    while True:
        held = try_claim(devices, n, lock_dir)
        if held is not None:
            if waited:
                _log(f"waited {time.monotonic() - t0:.0f} s for a free GPU")
            return held
        if timeout >= 0 and time.monotonic() - t0 > timeout:
            raise ClaimError(f"no {n} free GPU(s) among {devices} after {timeout:.0f} s (locks in {lock_dir})")
        if not waited:
            _log(f"all of {devices} busy (locks in {lock_dir}); waiting")
            waited = True
        time.sleep(poll)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print("usage: gpu_claim.py [--gpus N] [--lock-dir DIR] [--timeout S] -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    sep = argv.index("--")
    ap = argparse.ArgumentParser(prog="gpu_claim.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpus", type=int, default=1, help="devices to claim (default 1; 0 = run as is)")
    ap.add_argument("--lock-dir", default=os.environ.get("SEAS_GPU_LOCK_DIR", DEFAULT_LOCK_DIR))
    ap.add_argument("--timeout", type=float, default=-1, help="give up after S seconds (default: wait forever)")
    ap.add_argument("--poll", type=float, default=2.0, help="seconds between attempts while all are busy")
    args = ap.parse_args(argv[:sep])
    cmd = argv[sep + 1:]
    if not cmd:
        ap.error("no command after --")

    env = dict(os.environ)
    if args.gpus <= 0:
        pass
    elif env.get("SLURM_JOB_ID"):
        _log(f"SLURM job {env['SLURM_JOB_ID']}: using its allocation (CUDA_VISIBLE_DEVICES="
             f"{env.get('CUDA_VISIBLE_DEVICES', '<unset>')})")
    else:
        devices = candidate_devices(env)
        if not devices:
            _log("no GPU visible: running on the CPU")
        else:
            try:
                held = claim(devices, args.gpus, args.lock_dir, args.timeout, args.poll)
            except ClaimError as e:
                print(f"error: {e}", file=sys.stderr)
                return 2
            ids = [d for d, _ in held]
            for dev, fd in held:
                os.set_inheritable(fd, True)  # the command keeps the lock for its lifetime
                os.ftruncate(fd, 0)
                os.write(fd, f"pid {os.getpid()} {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(cmd)[:500]}\n".encode())
            env["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
            _log(f"claimed GPU {','.join(ids)} -> CUDA_VISIBLE_DEVICES={env['CUDA_VISIBLE_DEVICES']}")
    try:
        os.execvpe(cmd[0], cmd, env)
    except OSError as e:
        print(f"error: cannot run {cmd[0]!r}: {e}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    raise SystemExit(main())

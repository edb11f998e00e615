"""Helpers shared by the test modules (import as ``from helpers import ...``).

tests/ is on sys.path because tests/conftest.py lives there (pytest's default ``prepend`` import mode puts a
conftest's folder first on sys.path), so the test modules in tests/seas/, tests/downstream/ and tests/workflow/
import this module whichever of them pytest is given. Fixtures live in tests/conftest.py; plain helpers here.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest
from PIL import Image

#: the repository root (tests/helpers.py -> tests -> repo)
REPO = Path(__file__).resolve().parent.parent

#: a small Region Mask Predictor for the tiny model (overrides for the ``make_cfg`` fixture)
SMALL_RMP = {"rmp.reduce_channels": [16, 8], "rmp.num_heads": 2, "rmp.head_dim": 12, "rmp.num_layers": 1,
             "rmp.norm_num_groups": 8}


class RecordingConfig(Mapping):
    """A read-only view of a validated config that records every dotted key read through it.

    Leaves are recorded when read (``cfg["rmp"]["lr"]`` -> ``rmp.lr``), as are membership tests and ``get`` of
    missing keys; reading a section only hands out another recording view. ``dict(section)`` and ``items()`` read
    every leaf of the section, so a stage that copies a whole section is charged with all of its keys.
    """

    def __init__(self, data: Mapping, reads: set | None = None, prefix: str = "") -> None:
        self._data, self._prefix = data, prefix
        self.reads: set[str] = set() if reads is None else reads

    def _wrap(self, key: str, value: Any) -> Any:
        path = self._prefix + str(key)
        if isinstance(value, Mapping):
            return RecordingConfig(value, self.reads, path + ".")
        self.reads.add(path)
        return value

    def __getitem__(self, key: str) -> Any:
        if key not in self._data:
            self.reads.add(self._prefix + str(key))
            raise KeyError(key)
        return self._wrap(key, self._data[key])

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self._data else (self.reads.add(self._prefix + str(key)) or default)

    def __contains__(self, key: object) -> bool:
        self.reads.add(self._prefix + str(key))
        return key in self._data

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


def allowed(read: str, declared) -> bool:
    """Whether dotted ``read`` is one of the ``declared`` keys or lies inside a declared section."""
    return any(read == d or read.startswith(d + ".") for d in declared)


def set_dotted(d: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    for p in parents:
        d = d.setdefault(p, {})
    d[last] = value


# ----------------------------------------------------------------------------- Snakemake (tests/workflow)
def snakemake_exe() -> str:
    exe = Path(sys.executable).parent / "snakemake"
    if exe.exists():
        return str(exe)
    found = shutil.which("snakemake")
    if not found:  # a broken install must read red, not green: the workflow tests are not optional
        pytest.fail("snakemake is not installed (bash scripts/install.sh --test installs it)")
    return found


def write_tree(root: Path, products: dict[str, list[str]], n_per_type: int = 3) -> Path:
    """A tiny MVTec-layout tree (8x8 PNGs): 2 train/good, 1 test/good, ``n_per_type`` images+masks per type. Each
    image is its own seeded noise (no two files alike: the leakage check, downstream.leakage, sees no copies)."""
    mask = Image.fromarray(np.pad(np.full((2, 2), 255, np.uint8), 3))

    def img(rel: str) -> Image.Image:
        rng = np.random.default_rng(int.from_bytes(hashlib.sha256(rel.encode()).digest()[:8], "little"))
        return Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))

    for product, types in products.items():
        p = root / product
        for sub, n in (("train/good", 2), ("test/good", 1)):
            (p / sub).mkdir(parents=True)
            for i in range(n):
                img(f"{product}/{sub}/{i}").save(p / sub / f"{i:03d}.png")
        for t in types:
            (p / "test" / t).mkdir(parents=True)
            (p / "ground_truth" / t).mkdir(parents=True)
            for i in range(n_per_type):
                img(f"{product}/test/{t}/{i}").save(p / "test" / t / f"{i:03d}.png")
                mask.save(p / "ground_truth" / t / f"{i:03d}_mask.png")
    return root


#: the backbone files the paper presets name (downstream.pretrained_backbones), as torch.hub keeps them
PRESET_BACKBONE_FILES = ("resnet50_v1c-2cccc1ad.pth", "resnet18-f37072fd.pth", "wide_resnet50_2-95faca4d.pth")
_FAKE_TORCH_HOME: list[Path] = []


def fake_torch_home() -> Path:
    """A $TORCH_HOME whose hub/checkpoints holds tiny stand-ins named like the presets' backbone files (not
    weights: the workflow's parse-time check only needs the files to exist, and a dry run loads nothing)."""
    if not _FAKE_TORCH_HOME:
        import tempfile

        home = Path(tempfile.mkdtemp(prefix="seas-fake-torch-home-"))
        (home / "hub" / "checkpoints").mkdir(parents=True)
        for name in PRESET_BACKBONE_FILES:
            (home / "hub" / "checkpoints" / name).write_bytes(b"not weights: a stand-in for the parse-time check")
        _FAKE_TORCH_HOME.append(home)
    return _FAKE_TORCH_HOME[0]


def dry_run(config: Path, *extra: str, cwd: Path = REPO, check: bool = True,
            torch_home: Path | None = None) -> subprocess.CompletedProcess:
    """``snakemake -n`` of this checkout's workflow with ``config``; $TORCH_HOME = ``torch_home`` (default
    :func:`fake_torch_home`: the presets' backbone files exist there)."""
    cmd = [snakemake_exe(), "-n", "--snakefile", str(REPO / "workflow" / "Snakefile"), "--configfile", str(config),
           "--cores", "4", *extra]
    env = {**os.environ, "SNAKEMAKE_OUTPUT_CACHE": "", "OMP_NUM_THREADS": "1",
           "TORCH_HOME": str(torch_home or fake_torch_home())}
    res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, timeout=300)
    if check and res.returncode != 0:
        raise AssertionError(f"snakemake -n failed ({res.returncode}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return res


def job_counts(text: str) -> dict[str, int]:
    """Parse Snakemake's 'Job stats:' table (job, count) from a dry run's output."""
    m = re.search(r"Job stats:\n(.*?)\n\s*\n", text + "\n\n", flags=re.S)
    assert m, f"no job stats in output:\n{text[-3000:]}"
    counts = {}
    for line in m.group(1).splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def snakemake_in(workdir: Path, *extra: str, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """This checkout's workflow run in ``workdir`` on its ``cfg.yaml`` (one core, one thread, no GPU): a real tiny
    run, or a dry run with ``-n``. ``check``: a failure fails the test, with the output's tail."""
    cmd = [snakemake_exe(), "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory", str(workdir),
           "--configfile", str(Path(workdir) / "cfg.yaml"), "--cores", "1", *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEAS_GPU_IDS": "", "HF_HUB_OFFLINE": "1"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    if check:
        assert res.returncode == 0, f"snakemake {' '.join(extra)} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def planned_jobs(res: subprocess.CompletedProcess) -> dict[str, int]:
    """Jobs per rule a dry run plans ({} for "Nothing to be done"), without the total."""
    text = res.stdout + res.stderr
    if "Nothing to be done" in text:
        return {}
    counts = job_counts(text)
    counts.pop("total", None)
    return counts

"""Small runtime helpers shared by every CLI: device/dtype choice, seeding, atomic writes, CLI wrapper."""
from __future__ import annotations

import contextlib
import io
import logging
import os
import random
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np

from .errors import SeasError
from .resume import StaleStateError, restart_command

log = logging.getLogger("seas")


# ----------------------------------------------------------------------------- device / precision
def get_device(cfg: Mapping | None = None):
    import torch

    want = cfg["device"] if cfg is not None else "auto"
    if want == "cuda" and not torch.cuda.is_available():
        raise SeasError("config device: 'cuda' was asked for but torch sees no CUDA device")
    if want == "cpu" or (want == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    return torch.device("cuda")


def autocast_dtype(cfg: Mapping | None, device):
    """The autocast dtype for ``model.mixed_precision``: bf16 on CUDA for `auto`, None (fp32) on CPU."""
    import torch

    if getattr(device, "type", str(device)) != "cuda":
        return None
    mp = cfg["model"]["mixed_precision"] if cfg is not None else "auto"
    return {"auto": torch.bfloat16, "bf16": torch.bfloat16, "fp16": torch.float16, "no": None}[mp]


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(base: int, *parts) -> int:
    """A stable 63-bit seed from a base seed and any strings/ints (product, type, index…)."""
    import hashlib

    h = hashlib.sha256(repr((int(base),) + tuple(parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


# ----------------------------------------------------------------------------- atomic writes
def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_save_image(img, path: str | Path) -> Path:
    """Save a PIL image (format from the suffix) atomically."""
    path = Path(path)
    buf = io.BytesIO()
    img.save(buf, format=(path.suffix.lstrip(".") or "png").upper().replace("JPG", "JPEG"))
    return atomic_write_bytes(path, buf.getvalue())


def save_safetensors_atomic(tensors: Mapping, path: str | Path, metadata: Mapping[str, str] | None = None) -> Path:
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write_bytes(path, save(tensors, metadata=dict(metadata) if metadata else None))


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory beside ``path``; on success it replaces ``path`` in one rename.

    On an exception the temporary directory is removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp", dir=path.parent))
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- CLI plumbing
def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def cli(main: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
    """Wrap a ``main(argv)``: SeasError -> 'error: …' on stderr and exit status 2."""

    def run(argv: list[str] | None = None) -> int:
        try:
            return int(main(argv) or 0)
        except SeasError as e:
            print(f"error: {e}", file=sys.stderr)
            if isinstance(e, StaleStateError):  # the one resume policy: say how to start over
                print(f"to start over: {restart_command(main.__module__, argv)}", file=sys.stderr)
            return 2

    run.__doc__ = main.__doc__
    run.__wrapped__ = main
    return run

"""Small runtime helpers shared by every CLI: device/dtype choice, seeding, atomic writes, CLI wrapper."""
from __future__ import annotations

import contextlib
import errno
import io
import logging
import os
import random
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator, Mapping
import hashlib

import numpy as np

from seas.run.errors import SeasError
from seas.run.resume import StaleStateError, restart_command
# Lazy imports: torch / safetensors are imported inside the functions that use them: the workflow imports this module at parse time.

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
    h = hashlib.sha256(repr((int(base),) + tuple(parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


# ----------------------------------------------------------------------------- atomic writes
def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    tmp = _tmp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if e.filename is None:  # write()/fsync() errors name no file: name the output
            e.filename = str(path)
        raise
    finally:
        with contextlib.suppress(OSError):
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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp", dir=path.parent))
    except OSError as e:
        raise output_error(e, path) from None
    try:
        yield tmp
        if path.exists():
            old = path.with_name(f".{path.name}.old{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except Exception as e:
        err = output_error(e, path, inside=tmp)
        if err is e:
            raise
        raise err from e
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- I/O errors on outputs
#: errno -> what the user can do about it (the I/O errors a full disk, a quota or a read-only folder give)
OUTPUT_ERRNOS = {
    errno.ENOSPC: "free space there (or point results_dir / --out at another disk) and rerun",
    errno.EDQUOT: "free space within your quota (or point results_dir / --out at another disk) and rerun",
    errno.EFBIG: "the file is larger than that file system allows: point results_dir / --out at another disk and rerun",
    errno.EROFS: "that file system is read-only: point results_dir / --out at a writable folder and rerun",
    errno.EACCES: "make it writable for this user (or point results_dir / --out elsewhere) and rerun",
    errno.EPERM: "make it writable for this user (or point results_dir / --out elsewhere) and rerun",
}
# writers that wrap the OS error in their own exception (safetensors: "... (os error 28)"; Rust io errors)
_WRAPPED_ERRNO = re.compile(r"os error (\d+)|code: (\d+), kind")


def output_error(exc: BaseException, path: str | Path, inside: Path | None = None) -> BaseException:
    """``exc`` as an OSError naming ``path`` when it is one of :data:`OUTPUT_ERRNOS` (also when a library wrapped
    it, e.g. safetensors' or torch's writers on a full or read-only disk); otherwise ``exc`` unchanged."""
    if isinstance(exc, SeasError):
        return exc
    code = exc.errno if isinstance(exc, OSError) else None
    if code is None:
        m = _WRAPPED_ERRNO.search(str(exc))
        if m:
            code = int(m.group(1) or m.group(2))
        elif not isinstance(exc, OSError) and "write" in str(exc).lower():  # torch.save: "file write failed"
            code = _folder_trouble(Path(path).parent)
    if code not in OUTPUT_ERRNOS:
        return exc
    where = getattr(exc, "filename", None)
    if where is None or (inside is not None and str(where).startswith(str(inside))):
        where = str(path)  # a file inside a temporary folder that is about to vanish: name the output itself
    if isinstance(exc, OSError) and exc.errno == code:
        exc.filename = where
        return exc
    return OSError(code, os.strerror(code), where)


def _folder_trouble(folder: Path) -> int | None:
    """ENOSPC / EROFS when ``folder``'s file system is (nearly) full or mounted read-only, else None."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return errno.EROFS
    if st.f_bavail * st.f_frsize < 16 * 2**20:
        return errno.ENOSPC
    return None


def io_error_message(exc: OSError) -> str | None:
    """One line for an I/O error on an output (disk full, quota, read-only, permission): the folder, the
    cause, what to do. None for other errors."""
    if exc.errno not in OUTPUT_ERRNOS:
        return None
    where = exc.filename if exc.filename is not None else exc.filename2
    if where is None:
        folder = "an output folder"
    else:
        p = Path(os.fsdecode(where))
        folder = str(p if p.is_dir() else p.parent)
    return (f"cannot write to {folder}: {exc.strerror or os.strerror(exc.errno)} [Errno {exc.errno}]; "
            f"{OUTPUT_ERRNOS[exc.errno]} (finished outputs are kept; the rerun continues from them)")


# ----------------------------------------------------------------------------- cost records
RUN_RECORD = "run_record.json"
_IMPORTED = __import__("time").time()


def _process_start() -> float:
    """When this process started (epoch seconds): psutil's create time, else when this module was imported."""
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:  # noqa: BLE001 -- no psutil / no /proc: the import time is a close lower bound
        return _IMPORTED


def run_record(path: str | Path, *, new_files: str | Path | None = None, **fields) -> Path:
    """Write what a stage CLI measured to ``path`` (JSON, atomically) for tables/cost.csv; returns the path.

    Records ``device`` (``torch.cuda.get_device_name`` where this process used CUDA, else ``cpu (N threads)``),
    ``gpu_peak_memory_mb`` (``torch.cuda.max_memory_allocated``; null on the CPU), ``wall_s`` (since the process
    started), ``started`` (ISO time) and the caller's ``fields`` (stage, steps, images, ...). ``new_files``: a folder
    whose files written by this process are counted as ``new_files`` (a resumed generation's images of this call).
    Called once at the very end of each stage CLI's main (seas.method.train_generator, seas.method.train_rmp, seas.method.generate,
    downstream.train_seg); the Snakemake benchmark file of the same job holds its wall time and max RSS.
    """
    import datetime
    import json
    import time

    import torch

    start = _process_start()
    cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
    rec = {"device": torch.cuda.get_device_name(torch.cuda.current_device()) if cuda
           else f"cpu ({torch.get_num_threads()} threads)",
           "gpu_peak_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None,
           "wall_s": round(time.time() - start, 3),
           "started": datetime.datetime.fromtimestamp(start, datetime.timezone.utc).isoformat(timespec="seconds"),
           "torch": torch.__version__}
    if new_files is not None:
        folder = Path(new_files)
        rec["new_files"] = sum(1 for f in folder.iterdir() if f.is_file() and f.stat().st_mtime >= start - 1) \
            if folder.is_dir() else 0
    rec.update(fields)
    return atomic_write_text(path, json.dumps(rec, indent=1, sort_keys=True, default=str))


# ----------------------------------------------------------------------------- CLI plumbing
def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def cli(main: Callable[[list[str] | None], int | None]) -> Callable[[list[str] | None], int]:
    """Wrap a ``main(argv)``: SeasError -> 'error: …' on stderr and exit status 2; so are I/O errors on outputs
    (disk full, quota, read-only or unwritable folder: :func:`io_error_message`). SIGTERM (Snakemake stopping a
    job, a batch system's time limit) unwinds like Ctrl-C, so the atomic writers remove their temporary files."""

    def run(argv: list[str] | None = None) -> int:
        try:
            previous = signal.signal(signal.SIGTERM, _terminate)
        except ValueError:  # not the main thread
            previous = None
        try:
            return int(main(argv) or 0)
        except SeasError as e:
            print(f"error: {e}", file=sys.stderr)
            if isinstance(e, StaleStateError):  # the one resume policy: say how to start over
                print(f"to start over: {restart_command(main.__module__, argv)}", file=sys.stderr)
            return 2
        except OSError as e:
            message = io_error_message(e)
            if message is None:
                raise
            print(f"error: {message}", file=sys.stderr)
            return 2
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    run.__doc__ = main.__doc__
    run.__wrapped__ = main
    return run

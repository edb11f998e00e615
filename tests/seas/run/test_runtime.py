"""Runtime helpers: atomic writes and the CLI wrapper on a full, read-only or interrupted output folder."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from seas.run.runtime import atomic_dir, atomic_write_bytes, cli, io_error_message, output_error

from helpers import REPO


def _leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if ".tmp" in p.name or ".old" in p.name)


def _fail_writes(monkeypatch, code: int, after: int = 0):
    """Make the (after+1)-th and later file writes fail with ``code``, like a disk filling up (tests run as root,
    where chmod does not stop writes, so a read-only or full disk is simulated)."""
    real_open, calls = open, {"n": 0}

    def fake_open(file, mode="r", *a, **kw):
        if any(c in mode for c in "wax"):
            calls["n"] += 1
            if calls["n"] > after:
                f = real_open(file, mode, *a, **kw)
                real_write = f.write

                def write(data):
                    real_write(data[: len(data) // 2])  # a partial write, then the disk is full
                    raise OSError(code, os.strerror(code))

                f.write = write
                return f
        return real_open(file, mode, *a, **kw)

    monkeypatch.setattr("builtins.open", fake_open)
    return calls


def test_atomic_write_on_full_disk_names_the_output_and_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "res" / "a.json"
    atomic_write_bytes(out, b"old")
    _fail_writes(monkeypatch, errno.ENOSPC)
    with pytest.raises(OSError) as e:
        atomic_write_bytes(out, b"new content")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(out)
    monkeypatch.undo()
    assert out.read_bytes() == b"old" and _leftovers(tmp_path) == []
    msg = io_error_message(e.value)
    assert msg.startswith(f"cannot write to {out.parent}: No space left on device [Errno 28]; free space there")


def test_atomic_dir_wrapped_errors(tmp_path):
    out = tmp_path / "ckpt"
    # a library that wraps the OS error in its own exception (safetensors' Rust writer does)
    with pytest.raises(OSError) as e:
        with atomic_dir(out) as tmp:
            (tmp / "a").write_text("x")
            raise RuntimeError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                               "message: \"No space left on device\" })")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(out) and not out.exists()
    assert _leftovers(tmp_path) == []
    # a read-only file system
    err = output_error(OSError(errno.EROFS, "Read-only file system", str(out / ".x.tmp1")), out)
    assert "that file system is read-only" in io_error_message(err) and str(tmp_path) in io_error_message(err)
    # other errors pass through unchanged
    with pytest.raises(KeyError):
        with atomic_dir(out):
            raise KeyError("bug")
    assert _leftovers(tmp_path) == []


def test_cli_turns_output_errors_into_one_line(tmp_path, capsys):
    def main_enospc(argv):
        atomic_write_bytes(tmp_path / "o" / "x.bin", b"1")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o" / ".y.bin.tmp7"))

    assert cli(main_enospc)([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: cannot write to {tmp_path / 'o'}: No space left on device [Errno 28]; free space there "
                   "(or point results_dir / --out at another disk) and rerun (finished outputs are kept; the rerun "
                   "continues from them)"]

    def main_erofs(argv):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path))

    assert cli(main_erofs)([]) == 2
    assert f"cannot write to {tmp_path}: Read-only file system [Errno 30]" in capsys.readouterr().err

    def main_bug(argv):
        raise OSError(errno.EBADF, "Bad file descriptor")

    with pytest.raises(OSError):  # not an output problem: a bug keeps its traceback
        cli(main_bug)([])


SCRIPT = """
import sys, time
from seas.run.runtime import atomic_dir, cli
def main(argv):
    with atomic_dir(sys.argv[1]) as tmp:
        (tmp / "part").write_text("half")
        print("ready", flush=True)
        time.sleep(60)
raise SystemExit(cli(main)(None))
"""


def test_sigterm_leaves_no_temporary_files(tmp_path):
    """A job stopped with SIGTERM (Snakemake, a batch time limit) removes its temporary output."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(tmp_path / "out")], stdout=subprocess.PIPE, text=True,
                            env=env)
    assert proc.stdout.readline().strip() == "ready"
    assert len(list(tmp_path.iterdir())) == 1  # the temporary folder
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []

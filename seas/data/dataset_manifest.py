"""The dataset manifest: every file of a product's tree with its size and content hash (sha256).

What it is for: a changed dataset must rerun the stages that read it, by content (issue 25). The workflow scans
each product's tree when it builds the DAG (rules/common.smk, also under ``snakemake -n``), keeps the result in
``<run>/dataset/<product>.json`` (not under ``-n`` / ``--lint``, which write nothing) and gives the ``split`` rule,
as a param, the digest of the files the split selects (:func:`selection_digest`): a changed, added or removed
file the split selects changes the param, Snakemake's params trigger reruns the split, and every stage that reads
the split (and through it the dataset: baselines, the generator, segmentation training, evaluation, ...) reruns
with it. The split manifest records the same hashes (``Split.sha256``).

Fast on a real dataset: a file is re-hashed only when its (size, mtime_ns) differ from the previous manifest's
(stat-only otherwise), and not when its mtime lies within :data:`RACY_NS` of the previous manifest's writing
(the "racy" case: a write in the same clock tick as the scan). Touching a file without changing it reruns nothing.

Pure Python (no torch): the Snakefile imports it.

Manifest format (JSON)::

    {"version": 1, "product": "bottle", "dir": "<abs product folder>",
     "files": {"<abs resolved path>": {"size": 123, "mtime_ns": 1700000000000000000, "sha256": "..."}, ...}}

Every regular file under the product's folder is listed (links followed; names starting with "." skipped:
atomic-write temporaries, macOS forks), keyed by its resolved absolute path -- the form the split manifest uses.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable, Mapping

from seas.run.errors import DataError

MANIFEST_VERSION = 1
#: cached hashes of files modified this close (ns) before the previous manifest was written are not trusted
RACY_NS = 2_000_000_000
_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
    except OSError as e:
        raise DataError(f"dataset file {path} cannot be read: {e.strerror or e}") from None
    return h.hexdigest()


def _files(folder: Path) -> list[Path]:
    out = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / n for n in sorted(filenames) if not n.startswith(".")]
    return out


def resolved(path: Path, dirs: dict[str, str]) -> str:
    """``str(path.resolve())``, resolving each folder once (``dirs``: the cache, folder -> its real path) and the
    file itself only when it is a link: a tree of many files costs one lstat per file, not one per component."""
    parent = str(path.parent)
    real = dirs.get(parent)
    if real is None:
        real = dirs[parent] = os.path.realpath(parent)
    return str(path.resolve()) if path.is_symlink() else os.path.join(real, path.name)


def load_manifest(path: str | Path) -> dict | None:
    """A previous manifest (its hashes are the cache of :func:`scan`), or None when missing or unreadable (the
    scan then hashes every file: a damaged cache costs time, never a wrong hash)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        mtime_ns = path.stat().st_mtime_ns
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("version") != MANIFEST_VERSION or not isinstance(data.get("files"), dict):
        return None
    data["_written_ns"] = mtime_ns
    return data


def scan(product_dir: str | Path, product: str | None = None, previous: Mapping | None = None) -> dict:
    """The manifest of ``product_dir``: size, mtime_ns and sha256 of every file, re-using ``previous``'s hash of
    a file whose size and mtime_ns are unchanged (and not racy)."""
    pdir = Path(product_dir)
    if not pdir.is_dir():
        raise DataError(f"product folder {pdir} does not exist or is not a directory")
    old = dict((previous or {}).get("files") or {})
    trusted_before = (previous or {}).get("_written_ns", 0) - RACY_NS
    files, dirs = {}, {}
    for p in _files(pdir):
        try:
            st = p.stat()
        except OSError as e:  # a dangling link, a file removed while scanning
            raise DataError(f"dataset file {p} cannot be read: {e.strerror or e}") from None
        if not p.is_file():
            continue
        key = resolved(p, dirs)
        prev = old.get(key)
        if (isinstance(prev, Mapping) and prev.get("size") == st.st_size and prev.get("mtime_ns") == st.st_mtime_ns
                and st.st_mtime_ns < trusted_before and isinstance(prev.get("sha256"), str)):
            sha = prev["sha256"]
        else:
            sha = sha256_file(p)
        files[key] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": sha}
    return {"version": MANIFEST_VERSION, "product": product or pdir.name, "dir": str(pdir.resolve()), "files": files}


def to_json(manifest: Mapping) -> str:
    """The manifest's file text (stable: equal content, equal text)."""
    return json.dumps({k: v for k, v in manifest.items() if not k.startswith("_")}, indent=1, sort_keys=True) + "\n"


def file_hashes(paths: Iterable[str | Path], manifest: Mapping | None = None) -> dict[str, str]:
    """``{resolved path: sha256}`` of ``paths``: from ``manifest`` where its entry still matches the file's size and
    mtime_ns, else hashed here."""
    known = dict((manifest or {}).get("files") or {})
    out = {}
    for p in paths:
        key = str(Path(p).resolve())
        if key in out:
            continue
        entry = known.get(key)
        try:
            st = os.stat(key)
        except OSError as e:
            raise DataError(f"dataset file {p} cannot be read: {e.strerror or e}") from None
        if isinstance(entry, Mapping) and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
            out[key] = entry["sha256"]
        else:
            out[key] = sha256_file(key)
    return dict(sorted(out.items()))


def selection_digest(hashes: Mapping[str, str]) -> str:
    """One sha256 over ``{path: sha256}`` (what a split selected): the split rule's ``dataset`` param."""
    return hashlib.sha256(json.dumps(dict(sorted(hashes.items())), separators=(",", ":")).encode()).hexdigest()

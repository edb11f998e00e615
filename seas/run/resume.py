"""One resume mechanism for the long stages (generator, RMP, segmentation training, generation).

An interrupted stage leaves its state in a work location -- ``<out>.work/`` beside the output folder for the
training stages, the partly written type folder for generation -- together with a *fingerprint*: the settings the
state was computed under (the stage's config keys that matter, the inputs). A rerun of the same command
continues from it. One policy for all four stages:

* no state -> start from scratch;
* state with the same fingerprint -> resume;
* state with another fingerprint -> refuse (:class:`StaleStateError`, naming the changed settings); the CLI prints
  the exact command that starts over (the same command with ``--restart``, see :func:`restart_command`);
* ``--restart`` (``restart=True``) -> the state is deleted first.

The test-only early stop is called ``stop_after`` everywhere (``--stop-after N``: leave after N units of work of
this call -- steps, iterations or batches -- with the state saved).
"""
from __future__ import annotations

import json
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

from seas.run.cli_types import positive_int
from seas.run.errors import CheckpointError

__all__ = ["StaleStateError", "work_dir", "changed_keys", "check_fingerprint", "discard", "restart_command",
           "add_resume_arguments"]

WORK_SUFFIX = ".work"


class StaleStateError(CheckpointError):
    """The state of an interrupted run was computed under other settings (start over with ``--restart``)."""


def work_dir(out: str | Path) -> Path:
    """``<out>.work/``: where a training stage keeps its resumable state."""
    out = Path(out)
    return out.with_name(out.name + WORK_SUFFIX)


def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def changed_keys(old: Mapping, new: Mapping, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two fingerprints (nested mappings compared key by key)."""
    old, new = _canonical(dict(old)), _canonical(dict(new))
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += changed_keys(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def check_fingerprint(where: str | Path, saved: Mapping | None, current: Mapping) -> None:
    """StaleStateError unless the saved fingerprint equals the current one."""
    diff = changed_keys(saved or {}, current)
    if diff:
        raise StaleStateError(f"{where}: the interrupted run was started with other settings "
                              f"({', '.join(diff[:12])}{' ...' if len(diff) > 12 else ''}); refusing to mix them")


def discard(path: str | Path) -> None:
    """Delete a work folder or state file (``--restart``)."""
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def restart_command(module: str, argv: Sequence[str] | None) -> str:
    """The command that starts a stage over: ``python -m <module> <its arguments> --restart``."""
    if module == "__main__":
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        module = spec.name if spec is not None else module
    args = [a for a in (sys.argv[1:] if argv is None else argv) if a != "--restart"]
    return shlex.join(["python", "-m", module, *args, "--restart"])


def add_resume_arguments(parser, unit: str = "steps") -> None:
    """``--restart`` and the test-only ``--stop-after N`` of every resumable CLI."""
    parser.add_argument("--restart", action="store_true",
                        help="discard the state of an interrupted run (and any existing output) and start over")
    parser.add_argument("--stop-after", type=positive_int, default=None, metavar="N",
                        help=f"leave after N {unit} of this call with the resumable state saved (tests)")

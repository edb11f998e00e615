"""Pure helpers of the Snakemake workflow (imported by workflow/Snakefile; unit-tested on their own).

Nothing here runs a stage: it names folders, serialises config sections for ``params:`` (Snakemake's params
rerun trigger) and estimates per-rule resources. Stage logic lives in the ``seas`` / ``downstream`` CLIs.
"""
from __future__ import annotations

import json
import os
import shlex
from pathlib import Path
from typing import Any, Iterable, Mapping
import yaml

from seas.run.config import deep_update  # noqa: F401  (re-exported: the Snakefile's --config overrides)
from seas.run.labels import method_dir  # the method folder names live in the labels module


class WorkflowConfigError(ValueError):
    """A configuration the workflow cannot turn into a DAG (named key at fault)."""


# ----------------------------------------------------------------------------- methods
def method_table(methods: Iterable[str]) -> dict[str, str]:
    """``{method_id: method spec}`` in config order; two externals with the same basename are an error."""
    table: dict[str, str] = {}
    for m in methods:
        mid = method_dir(m)
        if mid in table:
            raise WorkflowConfigError(
                f"downstream.methods: {table[mid]!r} and {m!r} both map to the folder name {mid!r}; "
                "give the external pair folders different names")
        table[mid] = m
    return table


# ----------------------------------------------------------------------------- the jobs' shell
def shell_prefix(repo: str | Path, python: str, scripts: str | Path) -> str:
    """The bash text every job's shell command starts with (``shell.prefix`` in rules/common.smk):

    * ``set -euo pipefail`` -- Snakemake's strict mode (a prefix of our own replaces its default one);
    * ``PYTHONPATH=<repo>:...`` -- jobs import this checkout's seas/downstream whatever their working directory;
    * ``seas_python ARGS`` -- ``python`` (the interpreter; a path with spaces is quoted once, here);
    * ``seas_python_gpu N ARGS`` -- the same through ``scripts/gpu_claim.py --gpus N``: N free GPUs locked ->
      CUDA_VISIBLE_DEVICES (a no-op under SLURM, with N=0 and on machines without GPUs);
    * ``seas_script NAME ARGS`` -- ``scripts/NAME`` run by that interpreter.

    Plain text, braces single: ``shell.prefix`` formats it, so the caller doubles them.
    """
    return "; ".join([
        "set -euo pipefail",
        f"export PYTHONPATH={shlex.quote(str(repo))}${{PYTHONPATH:+:$PYTHONPATH}}",
        f"SEAS_PYTHON={shlex.quote(str(python))}",
        f"SEAS_SCRIPTS={shlex.quote(str(scripts))}",
        'seas_python() { "$SEAS_PYTHON" "$@"; }',
        'seas_python_gpu() { local n="$1"; shift; '
        '"$SEAS_PYTHON" "$SEAS_SCRIPTS/gpu_claim.py" --gpus "$n" -- "$SEAS_PYTHON" "$@"; }',
        'seas_script() { local s="$1"; shift; "$SEAS_PYTHON" "$SEAS_SCRIPTS/$s" "$@"; }',
    ]) + "; "


# ----------------------------------------------------------------------------- --config overrides
def typed_overrides(value: Any) -> Any:
    """Snakemake parses nested ``--config key={a: 1.5}`` values with YAML's BaseLoader: every leaf is a string.
    Re-read string leaves as YAML (``"1.5"`` -> 1.5, ``"true"`` -> True, ``"[lfd]"`` -> ["lfd"]), recursively."""
    if isinstance(value, Mapping):
        return {k: typed_overrides(v) for k, v in value.items()}
    if isinstance(value, list):
        return [typed_overrides(v) for v in value]
    if isinstance(value, str):
        try:
            return yaml.safe_load(value) if value.strip() else value
        except yaml.YAMLError:
            return value
    return value


# ----------------------------------------------------------------------------- params (rerun triggers)
def _get(cfg: Mapping[str, Any], dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(f"config key {dotted!r} does not exist")
        node = node[part]
    return node


def section_json(cfg: Mapping[str, Any], *keys: str) -> str:
    """Canonical JSON of the named (dotted) config keys: ``{"generator": {...}, "model.resolution": 512}``.

    Passed as a rule's ``params:``; Snakemake reruns a job whose params changed (``--rerun-triggers params``),
    so each rule lists exactly the keys its CLI reads and nothing else.
    """
    return json.dumps({k: _get(cfg, k) for k in keys}, sort_keys=True, separators=(",", ":"))


def write_if_changed(path: str | Path, text: str) -> bool:
    """Write ``text`` to ``path`` atomically unless it already holds exactly that; True when written.

    The resolved run config is rewritten only on a real change, so its mtime stays put between runs.
    """
    path = Path(path)
    try:
        if path.read_text() == text:
            return False
    except OSError:
        pass
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return True


#: Snakemake options that only plan or inspect the DAG (nothing runs): the workflow then writes no file
PLANNING_OPTIONS = frozenset({"-n", "--dry-run", "--dryrun", "--lint", "--summary", "-S", "--detailed-summary", "-D",
                              "--dag", "--rulegraph", "--filegraph",
                              "--d3dag", "--list-changes", "--lc", "--list-input-changes", "--li",
                              "--list-params-changes", "--lp", "--list-code-changes", "--list-untracked", "--lu"})


def planning_only(argv) -> bool:
    """Whether a snakemake command line only plans (``-n``, ``-np``, ``--lint``, ``--summary``, ``--dag`` ...)."""
    for a in argv:
        if a.split("=", 1)[0] in PLANNING_OPTIONS:
            return True
        if len(a) > 2 and a[0] == "-" and a[1] != "-" and a[1:].isalpha() and "n" in a[1:]:
            return True  # combined short flags: -np, -nr
    return False

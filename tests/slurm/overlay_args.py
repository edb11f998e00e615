"""Merge a profile-syntax overlay over a Snakemake workflow profile and print the result as command-line flags.

    python tests/slurm/overlay_args.py --profile profiles/slurm --overlay tests/slurm/overlay.yaml

prints one argv token per line, e.g. ``--default-resources`` ``mem_mb=2000`` ``slurm_partition=debug`` ...
(bash: ``mapfile -t FLAGS < <(python tests/slurm/overlay_args.py ...)``).

Why: Snakemake 9 reads the workflow profile after every ``--profile``, so a ``--profile`` overlay cannot change
a key the workflow profile sets; command-line flags win over both, but a flag replaces the profile's whole value
(``--default-resources slurm_partition=debug`` drops the profile's ``mem_mb``/``runtime``). This script merges
first -- ``default-resources``/``set-threads``/``resources`` key by key, ``set-resources`` rule by rule and key
by key -- and emits only the keys the overlay touches, so everything else stays exactly as in the profile.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Mapping

import yaml

ONE_LEVEL = ("default-resources", "set-threads", "resources", "set-scatter", "set-resource-scopes", "config")
TWO_LEVEL = ("set-resources",)


class OverlayError(ValueError):
    """An overlay or profile this script cannot turn into flags (names the file and key)."""


def profile_file(path: str | Path) -> Path:
    """The YAML file of a profile: the path itself if a file, else <dir>/profile.yaml or <dir>/config.yaml."""
    p = Path(path)
    if p.is_file():
        return p
    for name in ("profile.yaml", "config.yaml"):
        if (p / name).is_file():
            return p / name
    raise OverlayError(f"{p}: no profile.yaml or config.yaml in this profile directory")


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise OverlayError(f"{path}: expected a YAML mapping of Snakemake options, got {type(data).__name__}")
    if data.get("__use_yte__"):
        raise OverlayError(f"{path}: YTE-templated profiles are not supported by this merger")
    return data


def merge(profile: Mapping[str, Any], overlay: Mapping[str, Any], source: str = "overlay") -> dict[str, Any]:
    """Overlay values merged over the profile's, for the keys the overlay sets (pure)."""
    out: dict[str, Any] = {}
    for key, value in overlay.items():
        base = profile.get(key)
        if key in ONE_LEVEL or key in TWO_LEVEL:
            if not isinstance(value, Mapping):
                raise OverlayError(f"{source}: {key!r} must be a mapping")
            merged = dict(base or {})
            for k, v in value.items():
                if key in TWO_LEVEL:
                    if not isinstance(v, Mapping):
                        raise OverlayError(f"{source}: {key}.{k} must be a mapping of resources")
                    merged[k] = {**dict(merged.get(k) or {}), **dict(v)}
                else:
                    merged[k] = v
            out[key] = merged
        else:
            if value is False and base:
                raise OverlayError(f"{source}: {key}: false cannot switch off a flag the profile sets")
            out[key] = value
    return out


def _fmt(value: Any) -> str:
    """Like Snakemake's profile parser: a string that looks like a number stays a string (quoted)."""
    if isinstance(value, str):
        for kind in (int, float):
            try:
                kind(value)
                return repr(value)
            except ValueError:
                pass
        return value
    return str(value)


def to_flags(settings: Mapping[str, Any]) -> list[str]:
    """Snakemake command-line tokens for profile-style settings (pure)."""
    flags: list[str] = []
    for key, value in settings.items():
        opt = f"--{key}"
        if key in TWO_LEVEL:
            items = [f"{rule}:{k}={_fmt(v)}" for rule, res in value.items() for k, v in res.items()]
            if items:
                flags += [opt, *items]
        elif key in ONE_LEVEL:
            items = [f"{k}={_fmt(v)}" for k, v in value.items()]
            if items:
                flags += [opt, *items]
        elif value is True:
            flags.append(opt)
        elif value is False or value is None:
            continue
        elif isinstance(value, list):
            flags += [opt, *(str(v) for v in value)]
        else:
            flags += [opt, str(value)]
    return flags


def overlay_flags(profile: str | Path, overlay: str | Path) -> list[str]:
    pfile = profile_file(profile)
    ofile = Path(overlay)
    return to_flags(merge(load_yaml_mapping(pfile), load_yaml_mapping(ofile), source=str(ofile)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", required=True, help="workflow profile directory or YAML file (e.g. profiles/slurm)")
    ap.add_argument("--overlay", required=True, help="profile-syntax YAML merged over it")
    args = ap.parse_args(argv)
    try:
        flags = overlay_flags(args.profile, args.overlay)
    except (OverlayError, OSError, yaml.YAMLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(flags))
    return 0


if __name__ == "__main__":
    sys.exit(main())

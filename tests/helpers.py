"""Helpers shared by the test modules (import as ``from helpers import ...``; tests/ is on sys.path)."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterator


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

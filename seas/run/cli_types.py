"""argparse types of the CLIs' numeric options: counts, sizes, step numbers and thresholds are checked when parsed.

    p.add_argument("--count", type=positive_int)       # 1, 2, ...
    p.add_argument("--num-workers", type=nonneg_int)   # 0, 1, ...
    p.add_argument("--image-size", type=int_at_least(32))
    p.add_argument("--threshold", type=unit_float)     # 0 <= x <= 1

A bad value is refused by argparse before anything runs: ``error: argument --count: must be an integer >= 1, got
'0'`` on stderr, exit status 2, nothing written (tests/test_cli.py checks that no CLI option is a bare int/float).
"""
from __future__ import annotations

import argparse
import math
from typing import Callable

__all__ = ["int_at_least", "positive_int", "nonneg_int", "positive_float", "nonneg_float", "unit_float"]


def _int(text: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _float(text: str) -> float:
    try:
        x = float(text)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(x):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return x


def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= ``low``."""

    def parse(text: str) -> int:
        n = _int(text)
        if n < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}")
        return n

    parse.__name__ = "positive_int" if low == 1 else "nonneg_int" if low == 0 else f"int_at_least_{low}"
    return parse


#: a count, size or step number: 1, 2, ...
positive_int = int_at_least(1)
#: a count that may be zero (workers, warm-up steps) or a seed: 0, 1, ...
nonneg_int = int_at_least(0)



def positive_float(text: str) -> float:
    """A number > 0 (a learning rate, a weight)."""
    x = _float(text)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text!r}")
    return x


def nonneg_float(text: str) -> float:
    """A number >= 0."""
    x = _float(text)
    if x < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text!r}")
    return x


def unit_float(text: str) -> float:
    """A threshold or probability: 0 <= x <= 1."""
    x = _float(text)
    if not 0 <= x <= 1:
        raise argparse.ArgumentTypeError(f"must be a number from 0 to 1, got {text!r}")
    return x

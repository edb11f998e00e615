"""Print a CSV (e.g. results/demo/tables/segmentation.csv) as a GitHub Markdown table, numbers rounded.

Numbers are rounded to ``--digits`` decimals (2, like the paper); a non-zero number that would round to 0 (a KID
of 0.0012) keeps ``--digits`` significant digits instead. Label cells (``n/a (no Inception weights)``,
``not computed``) are printed as they are and do not stop a column from being right-aligned as numeric.
The CSVs themselves keep full precision.

    python -m downstream.report.md_table results/demo/tables/segmentation.csv [--digits 2] [--columns model method pixel_auroc]
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path
from typing import Sequence

from seas.run.cli_types import nonneg_int
from seas.run.errors import DataError
from seas.run.runtime import cli, setup_logging

__all__ = ["to_markdown", "csv_to_markdown", "main"]


def _number(text: str):
    try:
        return float(text)
    except ValueError:
        return None


def _cell(text: str, digits: int) -> str:
    v = _number(text)
    if v is None:
        return text.replace("|", "\\|")
    if math.isnan(v):
        return "n/a"
    if v.is_integer() and "." not in text and "e" not in text.lower():
        return str(int(v))
    if v != 0 and abs(v) < 0.5 * 10 ** -digits:
        return f"{v:.{max(digits, 1)}g}"
    return f"{v:.{digits}f}"


def _label(text: str) -> bool:
    """A cell standing in for a number: empty, ``n/a ...`` or ``not computed`` / ``not recorded``."""
    return text == "" or text.startswith("n/a") or text.startswith("not ")


def to_markdown(header: Sequence[str], rows: Sequence[Sequence[str]], digits: int = 2) -> str:
    """GitHub Markdown table; columns whose every cell is a number (or a label such as ``n/a (...)``, with at
    least one number) are right-aligned."""
    numeric = [all(_number(r[i]) is not None for r in rows if not _label(r[i]))
               and any(_number(r[i]) is not None for r in rows)
               for i in range(len(header))]
    lines = ["| " + " | ".join(h.replace("|", "\\|") for h in header) + " |",
             "|" + "|".join("---:" if n else "---" for n in numeric) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(c, digits) for c in r) + " |")
    return "\n".join(lines) + "\n"


def csv_to_markdown(path: str | Path, digits: int = 2, columns: Sequence[str] | None = None) -> str:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    with open(path, newline="") as f:
        data = list(csv.reader(f))
    if not data:
        raise DataError(f"{path} is empty")
    header, rows = data[0], data[1:]
    bad = [r for r in rows if len(r) != len(header)]
    if bad:
        raise DataError(f"{path}: a row has {len(bad[0])} cells, the header {len(header)}")
    if columns:
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(f"{path} has no column(s) {', '.join(missing)}; it has {', '.join(header)}")
        idx = [header.index(c) for c in columns]
        header, rows = [header[i] for i in idx], [[r[i] for i in idx] for r in rows]
    return to_markdown(header, rows, digits)


@cli
def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m downstream.report.md_table",
                                description="Print a CSV table as GitHub Markdown (numbers rounded, NaN as n/a).")
    p.add_argument("csv", help="CSV file, e.g. results/demo/tables/segmentation.csv")
    p.add_argument("--digits", type=nonneg_int, default=2, help="decimals for non-integer numbers (default 2)")
    p.add_argument("--columns", nargs="+", default=None, help="only these columns, in this order")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = p.parse_args(argv)
    setup_logging(args.verbose)
    sys.stdout.write(csv_to_markdown(args.csv, args.digits, args.columns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

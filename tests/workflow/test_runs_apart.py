"""Runs do not overwrite each other (issue 25, item 4): two runs with different run_name (and dataset) in one checkout
plan their tables, study tables included, into their own <results_dir>/<run_name>/tables/."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from helpers import REPO, dry_run, write_tree


def _config(tmp_path: Path, run_name: str, products: dict) -> Path:
    cfg = yaml.safe_load((REPO / "config" / "test_e2e.yaml").read_text())
    tree = write_tree(tmp_path / f"data_{run_name}", products)
    cfg.update(run_name=run_name, results_dir="results")
    cfg["dataset"] = {"name": "custom", "root": str(tree)}
    path = tmp_path / f"{run_name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _table_outputs(text: str) -> set[str]:
    """The outputs of the planned tables and study jobs (their `output:` lines)."""
    out = set()
    for block in re.split(r"\n(?=(?:local)?rule )", text):
        if re.match(r"(?:local)?rule (tables|study):", block):
            m = re.search(r"output: (.*)", block)
            out |= {p.strip() for p in m.group(1).split(",")}
    return out


def test_two_runs_in_one_checkout_keep_their_own_tables(tmp_path):
    a = _table_outputs(dry_run(_config(tmp_path, "first", {"bottle": ["crack"]}), cwd=tmp_path).stdout)
    b = _table_outputs(dry_run(_config(tmp_path, "second", {"cable": ["cut"]}), cwd=tmp_path).stdout)
    assert a and b and not a & b
    assert {str(Path(p).parent) for p in a} == {"results/first/tables"}
    assert {str(Path(p).parent) for p in b} == {"results/second/tables"}
    assert "results/first/tables/segmentation.csv" in a and "results/first/tables/study_e2e_tau.csv" in a

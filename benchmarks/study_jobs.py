"""What sharing stages saves a study: its DAG's jobs per rule with sharing (the study target) against every variant
run on its own (a separate run per variant), from `snakemake -n`, plus the generator / RMP / generation GPU-hours
those jobs would take at the paper's A100 costs (35 min generator + 25 min RMP per anomaly type trained, 720 ms per
generated image; segmentation not estimated).

    python benchmarks/study_jobs.py --configfile config/mvtec_ad.yaml --study tab4_components [--tree mvtec_ad]

--tree mvtec_ad builds a synthetic tree with MVTec AD's 15 products and 73 anomaly types (tiny PNGs) and points the
config at it, so the paper-sized DAG dry-runs without the dataset.
"""
from __future__ import annotations

import argparse
import copy
import re
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "workflow")]

RULES = ("split", "train_generator", "train_rmp", "generate", "gen_metrics", "train_seg", "evaluate")
COSTS_H = {"generator_per_type": 35 / 60, "rmp_per_type": 25 / 60, "image": 0.72 / 3600}


def dry_run_counts(config: Path, target: str, workdir: Path) -> Counter:
    exe = Path(sys.executable).parent / "snakemake"
    res = subprocess.run([str(exe), target, "-n", "--snakefile", str(REPO / "workflow" / "Snakefile"), "--directory",
                          str(workdir), "--configfile", str(config)], capture_output=True, text=True)
    if res.returncode:
        raise SystemExit(f"snakemake -n {target} failed:\n{res.stderr[-3000:]}")
    block = res.stdout.split("Job stats:", 1)[1]
    return Counter({m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M)
                    if m.group(1) in RULES})


def gpu_hours(cfgs, products_types) -> float:
    """Generator + RMP + generation hours of the distinct stage instances of these configurations."""
    from seas.run.layout import Layout

    gens, rmps, gen_imgs = {}, {}, {}
    for cfg in cfgs:
        lay = Layout("", cfg)
        n_types = sum(len(t) for t in products_types.values())
        gens[lay.key("train_generator")] = n_types * COSTS_H["generator_per_type"] * cfg["generator"]["steps_per_type"] / 800
        rmps[lay.key("train_rmp")] = n_types * COSTS_H["rmp_per_type"] * cfg["rmp"]["steps_per_type"] / 800
        gen_imgs[lay.key("generate")] = n_types * cfg["generation"]["num_images_per_type"] * COSTS_H["image"]
    return sum(gens.values()) + sum(rmps.values()) + sum(gen_imgs.values())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configfile", required=True)
    ap.add_argument("--study", required=True)
    ap.add_argument("--tree", choices=["mvtec_ad"], default=None)
    args = ap.parse_args()
    from seas.run.config import validate_config
    from seas.run.studies import load_studies, variant_configs

    tmp = Path(tempfile.mkdtemp(prefix="study_jobs_"))
    base = yaml.safe_load(Path(args.configfile).read_text())
    if args.tree:
        from helpers import write_tree
        from test_workflow_dryrun import MVTEC_AD

        base["dataset"]["root"] = str(write_tree(tmp / "mvtec_ad", MVTEC_AD))
    base["results_dir"] = str(tmp / "results")
    cfg_path = tmp / "base.yaml"
    cfg_path.write_text(yaml.safe_dump(base))
    shared = dry_run_counts(cfg_path, f"study_{args.study}", tmp)

    vbase = validate_config(base)
    study = load_studies(vbase)[args.study]
    alone = Counter()
    for i, (name, overrides) in enumerate(study.variants.items()):
        solo = copy.deepcopy(base)
        solo["run_name"] = f"variant{i}"
        solo["studies"] = {"solo": {"models": list(study.models) if study.models else None,
                                    "methods": list(study.methods), "variants": {name: overrides}}}
        p = tmp / f"variant{i}.yaml"
        p.write_text(yaml.safe_dump(solo))
        alone += dry_run_counts(p, "study_solo", tmp)

    from seas.data.dataset import discover_types, selected_products

    products_types = {p: discover_types(vbase["dataset"]["root"], p) for p in selected_products(vbase)}
    cfgs = list(variant_configs(vbase, study).values())
    h_shared = gpu_hours(cfgs, products_types)
    h_alone = sum(gpu_hours([c], products_types) for c in cfgs)
    print(f"study {args.study}: {len(cfgs)} variants, {len(products_types)} products, "
          f"{sum(map(len, products_types.values()))} anomaly types")
    print(f"{'rule':<16}{'shared':>8}{'alone':>8}")
    for r in RULES:
        print(f"{r:<16}{shared[r]:>8}{alone[r]:>8}")
    print(f"{'total':<16}{sum(shared.values()):>8}{sum(alone.values()):>8}")
    print(f"generator + RMP + generation at the paper's A100 costs: {h_shared:.0f} h shared, {h_alone:.0f} h alone")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

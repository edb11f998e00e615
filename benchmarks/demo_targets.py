"""The default run's targets (issue: a default run that shows the method working), measured on its tables.

    python benchmarks/demo_targets.py --run       # delete the demo's outputs, time `snakemake --cores 2`, then check
    python benchmarks/demo_targets.py             # check the tables of the last default run (no timing)

Targets: the whole first command (after the install) in <= 20 min on a 2-core machine; SeaS pixel AUROC >= 85 on
average over the three segmentation models; SeaS mean pixel AP above the ``cutpaste`` baseline's; mask-defect
agreement (gen_metrics: AP and IoU of the generated masks against where each image departs from its normal-prompt
twin) above the same measure for random masks of equal area, per product. Prints one line per target with the
measured figure and PASS/FAIL, and the figures as one JSON line (for a quality-against-CPU curve: run it after
changing ``generator.steps_per_type`` / ``rmp.steps_per_type``). Exit status 1 when a target is missed.
The grids to look at: results/demo/report/samples/seas/<product>.png.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUDGET_MIN = 20.0
AUROC_TARGET = 85.0


def run_default(cores: int) -> dict:
    """The README's first command from scratch (the install excepted): wall minutes and CPU seconds of the run."""
    for path in ("results", "resources/demo_data", "resources/tiny_sd"):
        shutil.rmtree(REPO / path, ignore_errors=True)
    exe = Path(sys.executable).parent / "snakemake"
    t0 = time.perf_counter()
    subprocess.run([str(exe), "--cores", str(cores)], cwd=REPO, check=True)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall_min": round((time.perf_counter() - t0) / 60, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime)}


def figures(tables: Path) -> dict:
    import pandas as pd

    seg = pd.read_csv(tables / "segmentation.csv")
    avg = seg[seg["model"] == "average"].set_index("method")
    gen = pd.read_csv(tables / "generation.csv")
    gen = gen[(gen["method"] == "seas")].set_index("product")
    out = {"seas_pixel_auroc_avg": float(avg.loc["seas", "pixel_auroc"]),
           "seas_pixel_ap_avg": float(avg.loc["seas", "pixel_ap"]),
           "cutpaste_pixel_ap_avg": float(avg.loc["cutpaste", "pixel_ap"]),
           "per_model_seas_auroc": {m: float(v) for m, v in
                                    seg[(seg["method"] == "seas") & (seg["model"] != "average")]
                                    .set_index("model")["pixel_auroc"].items()},
           "agreement": {}}
    for product, row in gen.iterrows():
        out["agreement"][product] = {k: float(row[k]) for k in ("agreement_ap", "agreement_ap_random_mask",
                                                                 "agreement_iou", "agreement_iou_random_mask")}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", action="store_true", help="run the default job from scratch first (deletes results/)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--tables", type=Path, default=REPO / "results" / "demo" / "tables",
                    help="the default run's tables (<results_dir>/<run_name>/tables)")
    args = ap.parse_args(argv)
    timing = run_default(args.cores) if args.run else {}
    f = {**timing, **figures(args.tables)}
    checks = []
    if timing:
        checks.append((f"wall {f['wall_min']} min (CPU {f['cpu_s']} s) <= {BUDGET_MIN}", f["wall_min"] <= BUDGET_MIN))
    checks.append((f"SeaS pixel AUROC, mean of 3 models {f['seas_pixel_auroc_avg']:.2f} >= {AUROC_TARGET} "
                   f"({f['per_model_seas_auroc']})", f["seas_pixel_auroc_avg"] >= AUROC_TARGET))
    checks.append((f"SeaS mean pixel AP {f['seas_pixel_ap_avg']:.2f} > cutpaste {f['cutpaste_pixel_ap_avg']:.2f}",
                   f["seas_pixel_ap_avg"] > f["cutpaste_pixel_ap_avg"]))
    for product, a in f["agreement"].items():
        checks.append((f"agreement {product}: AP {a['agreement_ap']:.2f} vs random {a['agreement_ap_random_mask']:.2f}"
                       f", IoU {a['agreement_iou']:.2f} vs random {a['agreement_iou_random_mask']:.2f}",
                       a["agreement_ap"] > a["agreement_ap_random_mask"]
                       and a["agreement_iou"] > a["agreement_iou_random_mask"]))
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    print(json.dumps(f))
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())

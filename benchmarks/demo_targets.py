"""The default run's targets (issue: a default run that shows the method working), measured on its tables.

    python benchmarks/demo_targets.py --run       # delete the demo's outputs, time `snakemake --cores 2`, then check
    python benchmarks/demo_targets.py             # check the tables of the last default run (no timing)

Targets: the whole first command (after the install) in <= 20 min on a 2-core machine; SeaS pixel AUROC >= 85 on
average over the three segmentation models; SeaS mean pixel AP above the ``cutpaste`` baseline's; mask-defect
agreement (gen_metrics: AP and IoU of the generated masks against where each image departs from its normal-prompt
twin) above the same measure for random masks of equal area, per product; and per anomaly type (gen_metrics'
``per_type``): IoU >= 2x the random-mask baseline, and the defect region unlike the normal-prompt twin (the
difference map ranks the mask's pixels above a random region's: AP > random AP). Prints one line per target with the
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


#: mask-defect agreement target per anomaly type (issue: the generated mask covers where the image departs from its
#: normal-prompt twin): IoU at least this many times the random-mask baseline's
IOU_RATIO_TARGET = 2.0


def per_type_agreement(tables: Path) -> dict:
    """``{product: {type: {ap, random_ap, iou, random_iou, iou_ratio}}}`` from the run's gen_metrics JSONs (found
    through the run's config, ``<tables>/../config.yaml``, and seas.run.layout); {} where the run has none. A type
    whose random baseline is 0 gets ratio inf."""
    sys.path.insert(0, str(REPO))
    from seas.run.config import load_config
    from seas.run.layout import Layout

    cfg_file = tables.parent / "config.yaml"
    if not cfg_file.is_file():
        return {}
    cfg = load_config(cfg_file)
    lay = Layout(tables.parent, cfg)  # <run>/tables: the run directory is its parent
    out: dict = {}
    for f in sorted(Path(lay.gen_metrics("seas", "x")).parent.glob("*.json")):
        d = json.loads(f.read_text())
        for t, v in (d.get("per_type") or {}).items():
            a = v.get("agreement")
            if a:
                ratio = a["iou"] / a["random_iou"] if a["random_iou"] else float("inf")
                out.setdefault(d["product"], {})[t] = {k: float(a[k]) for k in ("ap", "random_ap", "iou",
                                                                                 "random_iou")}
                out[d["product"]][t]["iou_ratio"] = round(ratio, 3)
    return out


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
    f["agreement_per_type"] = per_type_agreement(args.tables)
    for product, types in f["agreement_per_type"].items():
        for t, a in types.items():
            checks.append((f"agreement {product}/{t}: IoU {a['iou']:.2f} = {a['iou_ratio']:.2f}x random "
                           f"{a['random_iou']:.2f} (target >= {IOU_RATIO_TARGET}x)", a["iou_ratio"] >= IOU_RATIO_TARGET))
            checks.append((f"defect region unlike the normal twin {product}/{t}: AP {a['ap']:.2f} > random "
                           f"{a['random_ap']:.2f}", a["ap"] > a["random_ap"]))
    for text, ok in checks:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    print(json.dumps(f))
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())

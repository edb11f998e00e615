"""Train one anomaly detector per product (anomalib's models, downstream.detection) and score it on that product's
held-out test split with our metric code: one scores.csv row per product + the ``mean`` row.

    python -m downstream.train_detector --config C --model {patchcore,stfpm,draem,draem_pairs,glass,glass_pairs} \\
        --splits split/*.json --out detection/MODEL/METHOD [--pairs-root methods/M --method M]

Training data per product: its normal training images (``downstream.normal_images`` of the split's
``all_train_normals``, the segmenters' normals), at ``downstream.image_size`` by ``dataset.image_policy``; the
``+ pairs`` variants (``draem_pairs``) also the method's anomalous pairs ``<pairs-root>/<product>/<type>/`` with their
clean targets (``references/`` twins; downstream.detection.data). Test data: exactly the split's ``test`` list (the
held-out 2/3 of every anomaly type + test/good), as the segmenters'. Metrics: downstream.metrics through
downstream.detection.score (the detector's maps and its own image scores).

Resumable per product: each finished product's row goes to ``<out>.work/<product>.json``; a rerun under the same
fingerprint skips it. At the end ``<out>/scores.csv`` (downstream.evaluate's format), ``<out>/train.json``
{model, method, anomalib, parameters, backbone_init, target, seconds, per-product counts} and ``run_record.json``
are written in one atomic rename.
"""
from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Mapping, Sequence

from seas.run.config import add_config_arguments, config_from_args
from seas.run.errors import ConfigError
from seas.run.resume import check_fingerprint, discard, work_dir
from seas.run.runtime import RUN_RECORD, atomic_dir, atomic_write_text, cli, get_device, run_record, setup_logging
from seas.run.stages import STAGES, fingerprint

from downstream.evaluate import SCORE_COLUMNS, add_mean_row, metric_kwargs, write_scores

__all__ = ["NO_METHOD", "TRAIN_JSON", "SCORES", "target_label", "train_product", "train_detector", "main"]

log = logging.getLogger(__name__)

#: the config keys this stage reads: declared once, in the stage registry (seas.run.stages)
CONFIG_KEYS = STAGES["train_detector"].config_keys
#: the {method} of an unsupervised detector (trained on normals only)
NO_METHOD = "none"
TRAIN_JSON, SCORES = "train.json", "scores.csv"


def target_label(cfg: Mapping, model: str) -> str | None:
    """How a ``+ pairs`` detector's clean reconstruction targets were chosen (the tables' protocol column)."""
    from downstream.detection.models import uses_pairs

    if not uses_pairs(model):
        return None
    miss = cfg["downstream"]["detector_train"][model]["missing_target"]
    who = {"glass_pairs": "GLASS normal image"}.get(model, "DRAEM target")
    return f"{who}: normal-prompt twin" + ("; else nearest normal" if miss == "nearest_normal" else "")


def _pairs_arrays(cfg: Mapping, model: str, pairs_root: str, product: str, normals: list) -> tuple[list, dict]:
    from downstream.detection.data import MissingTargetError, load_binary_mask, load_rgb, nearest_normal, \
        product_pairs

    size, policy = int(cfg["downstream"]["image_size"]), cfg["dataset"]["image_policy"]
    miss = cfg["downstream"]["detector_train"][model]["missing_target"]
    out, counts = [], {"pairs": 0, "twin_targets": 0, "nearest_normal_targets": 0}
    for p in product_pairs(pairs_root, product):
        image = load_rgb(p.image, size, policy)
        if p.target is not None:
            target = load_rgb(p.target, size, policy)
            counts["twin_targets"] += 1
        elif miss == "nearest_normal":
            target = normals[nearest_normal(image, normals)]
            counts["nearest_normal_targets"] += 1
        else:
            raise MissingTargetError(
                f"{p.image}: no clean reconstruction target (references/{Path(p.image).name}); generate with "
                f"generation.reference_images: true, or set downstream.detector_train.{model}.missing_target: "
                f"nearest_normal")
        out.append({"image": image, "mask": load_binary_mask(p.mask, size, policy), "target": target})
        counts["pairs"] += 1
    return out, counts


def train_product(cfg: Mapping, model: str, split_path: str | Path, pairs_root: str | None, method: str,
                  device) -> tuple[dict, dict]:
    """Train the detector on one product and score it: (scores row, info)."""
    from downstream.detection.data import load_rgb
    from downstream.detection.models import build_detector, detector_seed, uses_pairs
    from downstream.detection.score import score_product
    from downstream.segmentation.data import SegTestDataset
    from seas.data.split import Split

    split = Split.load(split_path)
    size, policy = int(cfg["downstream"]["image_size"]), cfg["dataset"]["image_policy"]
    normals = [load_rgb(p, size, policy) for p in split.downstream_normals(cfg["downstream"]["normal_images"])]
    pairs, counts = ([], {})
    if uses_pairs(model):
        if pairs_root is None:
            raise ConfigError(f"--model {model} trains on generated pairs: give --pairs-root")
        pairs, counts = _pairs_arrays(cfg, model, pairs_root, split.product, normals)
    det = build_detector(model, cfg, device)
    t0 = time.perf_counter()
    det.fit(normals, pairs, seed=detector_seed(cfg, model, method, split.product))
    fit_s = time.perf_counter() - t0
    test = SegTestDataset([str(split_path)], size, policy)
    row = score_product(det.predict, test, metric_kwargs(cfg), int(cfg["downstream"]["evaluation"]["batch_size"]),
                        desc=f"{model}/{split.product}")
    info = {"normals": len(normals), **counts, "fit_seconds": round(fit_s, 2),
            "seconds": round(time.perf_counter() - t0, 2), "parameters": det.parameters,
            "backbone_init": det.backbone_init, "final_loss": det.history[-1] if det.history else None}
    log.info("%s/%s %s: image AUROC %.2f, pixel AUROC %.2f (%.1f s)", model, method, split.product,
             row["image_auroc"], row["pixel_auroc"], info["seconds"])
    return row, info


def train_detector(cfg: Mapping, model: str, split_paths: Sequence[str | Path], out: str | Path,
                   pairs_root: str | None = None, method: str = NO_METHOD, restart: bool = False) -> dict:
    """Every product in turn (resumable per product); writes ``out/scores.csv`` + ``out/train.json``."""
    from downstream.detection.models import DETECTORS, anomalib_version

    if model not in DETECTORS:
        raise ConfigError(f"--model: unknown detector {model!r} (choose from {', '.join(DETECTORS)})")
    out = Path(out)
    device = get_device(cfg)
    meta = fingerprint(cfg, "train_detector", {"model": model}, model=model, method=method,
                       splits=[str(p) for p in split_paths], pairs_root=str(pairs_root))
    work = work_dir(out)
    if restart:
        discard(work)
    rows, infos, t0 = [], {}, time.perf_counter()
    for sp in split_paths:
        product = json.loads(Path(sp).read_text())["product"]
        done = work / f"{product}.json"
        if done.is_file():
            state = json.loads(done.read_text())
            check_fingerprint(done, state.get("meta"), meta)
            row, info = state["row"], state["info"]
        else:
            row, info = train_product(cfg, model, sp, pairs_root, method, device)
            atomic_write_text(done, json.dumps({"meta": meta, "row": row, "info": info}, default=float))
        rows.append({c: row[c] for c in SCORE_COLUMNS})
        infos[product] = info
    rows = add_mean_row(rows)
    params = sorted({i["parameters"] for i in infos.values()})
    inits = sorted({i["backbone_init"] for i in infos.values()})
    train = {"model": model, "method": method, "family": "detector", "anomalib": anomalib_version(),
             "parameters": params[0] if len(params) == 1 else params, "backbone_init": ";".join(inits),
             "target": target_label(cfg, model), "products": infos,
             "image_size": int(cfg["downstream"]["image_size"]), "device": str(device),
             "seconds": round(sum(i["seconds"] for i in infos.values()), 2),
             "wall_seconds": round(time.perf_counter() - t0, 2)}
    with atomic_dir(out) as tmp:
        write_scores(rows, tmp / SCORES)
        (tmp / TRAIN_JSON).write_text(json.dumps(train, indent=1, default=float))
    shutil.rmtree(work, ignore_errors=True)
    return train


@cli
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m downstream.train_detector", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(ap)
    ap.add_argument("--model", required=True, choices=["patchcore", "stfpm", "draem", "draem_pairs", "glass",
                                                             "glass_pairs"],
                    help="the detector (downstream.detectors)")
    ap.add_argument("--splits", required=True, nargs="+", help="split manifests (one per product)")
    ap.add_argument("--out", required=True, help="output folder (detection/<model>/<method>/<k>)")
    ap.add_argument("--pairs-root", default=None, help="the method's pairs <root>/<product>/<type>/ (+ pairs variants)")
    ap.add_argument("--method", default=NO_METHOD, help=f"method label for train.json (default {NO_METHOD}: unsupervised)")
    ap.add_argument("--restart", action="store_true", help="discard the finished products of an interrupted run")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    cfg = config_from_args(args)
    info = train_detector(cfg, args.model, args.splits, args.out, pairs_root=args.pairs_root, method=args.method,
                          restart=args.restart)
    run_record(Path(args.out) / RUN_RECORD, stage="detection", images=sum(i["normals"] + i.get("pairs", 0)
                                                                          for i in info["products"].values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

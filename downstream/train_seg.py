"""Train one downstream segmentation model on one method's pairs, for all products of the dataset at once.

    python -m downstream.train_seg --config C --model {bisenetv2,upernet,lfd} --pairs-root methods/M \\
        --splits split/*.json --out segmentation/MODEL/M [--method M]

Training data: the method's image-mask pairs (``<pairs-root>/<product>/<type>/``) of every split's product + the
splits' normal training images (all-zero masks; ``downstream.normal_images``: every train/good image by default) (+ the real training anomalies with
``downstream.include_real_anomalies``), at ``downstream.image_size``, random flips (downstream.segmentation.data).
Optimisation (``downstream.train.<model>``): SGD with momentum (or AdamW), weight decay, ``iterations`` steps of
``batch_size`` samples drawn with replacement, poly learning-rate decay with optional linear warm-up; the loss is
the model's own (mmseg decode + auxiliary heads; LFD: cross-entropy).

A method whose pairs hold copies of held-out test images (downstream.leakage) is refused, naming the method, a copy
and ``downstream.leakage.allow``, unless ``--allow-test-copies`` (the workflow passes it for the methods that list
names); train.json records ``test_copies``. ``--model draem_unet`` (``downstream.protocol: peer_per_product_unet``)
trains as AnomalyDiffusion's script does instead (downstream.segmentation.peer_unet; not resumable).

Resumable: every ``checkpoint_every`` steps the state (model, optimiser, step, elapsed time) goes to
``<out>.work/state.pt``; a re-run continues from it, drawing the same batches (each batch's indices and flips
come from ``derive_seed(seed, model, method, step)``). At the end ``<out>/model.safetensors`` (plain state_dict)
and ``<out>/train.json`` {model, method, iterations, backbone_init: "pretrained:<path>"|"random-init",
final_loss, seconds, ...} are written in one atomic rename and the work folder is removed.
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from seas.run.errors import ConfigError, SeasError
from seas.run.resume import StaleStateError, add_resume_arguments, check_fingerprint, discard, work_dir
from seas.run.runtime import RUN_RECORD, atomic_dir, atomic_write_bytes, autocast_dtype, derive_seed, get_device, \
    run_record, save_safetensors_atomic, seed_everything

from downstream.segmentation.data import SegTrainDataset
from downstream.segmentation.models import MODEL_FILE, MODEL_NAMES, TRAIN_JSON, build_model
from seas.run.config import add_config_arguments, config_from_args
from seas.run.runtime import cli, setup_logging
from seas.run.stages import STAGES, fingerprint

__all__ = ["poly_lr", "SeededBatchSampler", "make_optimizer", "check_test_copies", "train_segmentation", "main"]

log = logging.getLogger(__name__)

#: the config keys this stage reads: declared once, in the stage registry (seas.run.stages)
CONFIG_KEYS = STAGES["train_seg"].config_keys

STATE_FILE = "state.pt"


def poly_lr(step: int, total: int, base_lr: float, power: float = 0.9, min_lr: float = 0.0,
            warmup_iters: int = 0, warmup_ratio: float = 0.1) -> float:
    """Learning rate at ``step`` (0-based) of ``total``: linear warm-up from ``warmup_ratio``·lr over
    ``warmup_iters`` steps, then ``(base_lr − min_lr)·(1 − t/T)^power + min_lr`` over the remaining steps."""
    if warmup_iters and step < warmup_iters:
        return base_lr * (warmup_ratio + (1 - warmup_ratio) * step / warmup_iters)
    t, span = step - warmup_iters, max(1, total - warmup_iters)
    return (base_lr - min_lr) * (1 - min(t, span) / span) ** power + min_lr


class SeededBatchSampler(torch.utils.data.Sampler):
    """Batches of ``(index, sample_seed)`` for steps ``start..total-1``; step s's batch depends only on (seed, s).

    Indices are drawn with replacement, so resuming at any step reproduces the same sequence.
    """

    def __init__(self, n: int, batch_size: int, seed: int, start: int, total: int):
        self.n, self.batch_size, self.seed, self.start, self.total = n, batch_size, seed, start, total

    def batch(self, step: int) -> list[tuple[int, int]]:
        rng = np.random.default_rng(derive_seed(self.seed, "batch", step))
        idx = rng.integers(0, self.n, size=self.batch_size)
        seeds = rng.integers(0, 2**62, size=self.batch_size)
        return [(int(i), int(s)) for i, s in zip(idx, seeds)]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in range(self.start, self.total):
            yield self.batch(step)

    def __len__(self) -> int:
        return max(0, self.total - self.start)


def make_optimizer(model: torch.nn.Module, tcfg: Mapping) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if tcfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=tcfg["lr"], momentum=tcfg["momentum"], weight_decay=tcfg["weight_decay"])
    return torch.optim.AdamW(params, lr=tcfg["lr"], betas=(tcfg["momentum"], 0.999), weight_decay=tcfg["weight_decay"])


def check_test_copies(cfg: Mapping, method: str, dataset: SegTrainDataset, split_paths: Sequence[str | Path],
                      allowed: bool) -> int:
    """The number of the method's training pairs that copy a held-out test image of their product
    (downstream.leakage, threshold ``downstream.leakage.threshold``); a DataError naming the method, a copy and
    ``downstream.leakage.allow`` when there are copies and ``allowed`` is off."""
    from downstream.leakage import check_no_test_copies
    from downstream.segmentation.data import load_splits

    by_product: dict[str, list[str]] = {}
    for it in dataset.items:
        if it.origin == "pairs":
            by_product.setdefault(it.product, []).append(it.image)
    return check_no_test_copies(method, by_product, load_splits(split_paths),
                                float(cfg["downstream"]["leakage"]["threshold"]), allowed)


def _save_state(path: Path, model, optimizer, step: int, seconds: float, history: list[float], meta: dict) -> None:
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "seconds": seconds, "history": history, "meta": meta}, buf)
    atomic_write_bytes(path, buf.getvalue())


def _load_state(path: Path, meta: dict) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated/corrupt file raises many types
        raise StaleStateError(f"{path}: unreadable resume state ({e})") from e
    check_fingerprint(path, state.get("meta"), meta)
    return state


def train_segmentation(cfg: Mapping, model_name: str, pairs_root: str | Path, split_paths: Sequence[str | Path],
                       out: str | Path, method: str | None = None, progress: bool = True,
                       stop_after: int | None = None, restart: bool = False, allow_test_copies: bool = False) -> dict:
    """Train, write ``out/model.safetensors`` + ``out/train.json``; returns the train.json dict.

    ``stop_after``: leave after this many steps *of this call* with the resume state saved (tests / time limits);
    returns ``{}`` then and writes no output. A method whose pairs hold copies of held-out test images is refused
    (downstream.leakage) unless ``allow_test_copies`` (the workflow: the method is in ``downstream.leakage.allow``).
    """
    if model_name not in MODEL_NAMES:
        raise ConfigError(f"--model: unknown model {model_name!r} (choose from {', '.join(MODEL_NAMES)})")
    if model_name == "draem_unet":  # downstream.protocol peer_per_product_unet: the peers' own loop
        from downstream.segmentation.peer_unet import train_peer_unet

        return train_peer_unet(cfg, pairs_root, split_paths, out, method=method, progress=progress,
                               allow_test_copies=allow_test_copies)
    tcfg = cfg["downstream"]["train"][model_name]  # min_lr <= lr, batch_size >= 2: seas.run.config.validate_config
    method = method or Path(pairs_root).name
    out = Path(out)
    total, batch = int(tcfg["iterations"]), int(tcfg["batch_size"])
    device = get_device(cfg)
    seed = derive_seed(cfg["seed"], "downstream-train", model_name, method)
    seed_everything(seed % 2**32)

    dataset = SegTrainDataset.from_config(cfg, pairs_root, split_paths)
    dataset.check()  # before the first step: a truncated image or a grey mask is named here, not at its first draw
    log.info("training set: %s over %d product(s)", dataset.counts(), len({it.product for it in dataset.items}))
    test_copies = check_test_copies(cfg, method, dataset, split_paths, allow_test_copies)
    model = build_model(model_name, cfg).to(device)
    log.info("%s: %.2fM parameters, backbone %s", model_name, sum(p.numel() for p in model.parameters()) / 1e6,
             model.backbone_init)
    optimizer = make_optimizer(model, tcfg)

    # the stage's declared config keys (seas.run.stages) + what it trains on
    meta = fingerprint(cfg, "train_seg", {"model": model_name}, model=model_name, method=method,
                       products=sorted({it.product for it in dataset.items}), num_items=len(dataset))
    work = work_dir(out)
    if restart:
        discard(work)
    state_path = work / STATE_FILE
    start, seconds, history = 0, 0.0, []
    if state_path.is_file():
        st = _load_state(state_path, meta)
        model.load_state_dict(st["model"])
        optimizer.load_state_dict(st["optimizer"])
        start, seconds, history = int(st["step"]), float(st["seconds"]), list(st["history"])
        log.info("resuming %s/%s at step %d of %d", model_name, method, start, total)

    loader = DataLoader(dataset, batch_sampler=SeededBatchSampler(len(dataset), batch, seed, start, total),
                        num_workers=int(tcfg["num_workers"]), pin_memory=device.type == "cuda",
                        persistent_workers=False)
    amp = autocast_dtype(cfg, device)
    model.train()
    t0 = time.perf_counter()
    bar = tqdm(total=total, initial=start, desc=f"{model_name}/{method}", disable=not progress, dynamic_ncols=True)
    step = start
    for x, y in loader:
        lr = poly_lr(step, total, tcfg["lr"], tcfg["poly_power"], tcfg["min_lr"], tcfg["warmup_iters"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=amp) if amp is not None else nullcontext():
            losses = model.loss(x, y)
        loss = sum(v.float() for v in losses.values())
        if not torch.isfinite(loss):
            raise SeasError(f"{model_name}/{method}: non-finite loss at step {step} ({ {k: float(v) for k, v in losses.items()} })")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(history[-20:]):.4f}", lr=f"{lr:.2e}")
        done_here = stop_after is not None and step - start >= stop_after
        if step < total and (step % int(tcfg["checkpoint_every"]) == 0 or done_here):
            _save_state(state_path, model, optimizer, step, seconds + time.perf_counter() - t0, history, meta)
        if done_here and step < total:
            bar.close()
            return {}
    bar.close()
    seconds += time.perf_counter() - t0

    tail = history[-max(1, min(20, len(history))):]
    info = {
        "model": model_name, "method": method, "pairs_root": str(pairs_root), "products": meta["inputs"]["products"],
        "iterations": total, "batch_size": batch, "image_size": int(cfg["downstream"]["image_size"]),
        "optimizer": tcfg["optimizer"], "lr": tcfg["lr"], "weight_decay": tcfg["weight_decay"],
        "backbone_init": model.backbone_init, "num_classes": model.num_classes,
        "parameters": int(sum(p.numel() for p in model.parameters())),
        "train_items": dataset.counts(), "final_loss": float(np.mean(tail)), "first_loss": history[0],
        "seconds": round(seconds, 2), "device": str(device), "seed": seed,
        "include_real_anomalies": bool(cfg["downstream"]["include_real_anomalies"]),
        "normal_images": cfg["downstream"]["normal_images"],
        "test_copies": test_copies, "test_copies_allowed": bool(allow_test_copies),
    }
    model.eval()
    with atomic_dir(out) as tmp:
        save_safetensors_atomic(model.state_dict(), tmp / MODEL_FILE, metadata={"model": model_name, "method": method})
        (tmp / TRAIN_JSON).write_text(json.dumps(info, indent=1))
    shutil.rmtree(work, ignore_errors=True)
    log.info("%s/%s: %d steps in %.0f s, loss %.4f -> %.4f -> %s", model_name, method, total, seconds,
             info["first_loss"], info["final_loss"], out)
    return info


@cli
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m downstream.train_seg", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(ap)
    ap.add_argument("--model", required=True, choices=MODEL_NAMES)
    ap.add_argument("--pairs-root", required=True, help="method folder: <pairs-root>/<product>/<type>/{images,masks}")
    ap.add_argument("--splits", required=True, nargs="+", help="split manifests (one per product)")
    ap.add_argument("--out", required=True, help="output folder (segmentation/<model>/<method>)")
    ap.add_argument("--method", default=None, help="method label for train.json (default: the pairs-root folder name)")
    ap.add_argument("--allow-test-copies", action="store_true",
                    help="train although the pairs hold copies of held-out test images (the workflow passes it for "
                         "the methods in downstream.leakage.allow); without it such a method is refused")
    add_resume_arguments(ap, "iterations")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    cfg = config_from_args(args)
    info = train_segmentation(cfg, args.model, args.pairs_root, args.splits, args.out, method=args.method,
                              stop_after=args.stop_after, restart=args.restart,
                              allow_test_copies=args.allow_test_copies)
    if info:  # what this stage cost (tables/cost.csv)
        run_record(Path(args.out) / RUN_RECORD, stage="segmentation", steps=info["iterations"],
                   images=info["iterations"] * info["batch_size"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

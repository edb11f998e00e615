"""Stage ``train_prior``: the tiny prior pretrained on the run's own normal training images.

``model.tiny_prior: auto`` on a dataset the committed demo prior never saw (seas.models.prior_choice) plans this
stage: the prior of :mod:`seas.models.tiny_prior` (same architecture, same training code, the recipe
``model.prior``) pretrained on every ``train/good`` image of the selected products exactly as their splits list
them (``all_train_normals``: never a test image, never an anomaly), under the 8 flips/rotations, each image
captioned with its product's name half of the time. The manifest next to the weights lists every file it saw with
its sha256 (``data.files`` / ``data.sha256``), so the tables can say what the prior saw
(``tiny-pretrained (own normals: N images, P products)``) and a later run can tell whether it covers its products.

Resumable (seas.run.resume): the state lives in ``<out>.work/`` (saved every ``model.prior.checkpoint_every``
steps); a rerun continues, one under other settings is refused (``--restart`` starts over).

    python -m seas.models.train_prior --config C --splits split/<k>/*.json --out prior/<k>/tiny_prior.safetensors
"""
from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Mapping, Sequence

from seas.data.images import image_to_tensor, load_image
from seas.data.split import Split
from seas.models.prior_choice import OWN_SOURCE
from seas.models.prior_file import sha256_file, write_prior
from seas.run.config import add_config_arguments, config_from_args
from seas.run.errors import DataError
from seas.run.resume import add_resume_arguments, discard, work_dir
from seas.run.runtime import cli, get_device, run_record, setup_logging
from seas.run.stages import STAGES, fingerprint

log = logging.getLogger("seas.models.train_prior")

#: the config keys this stage reads: declared once, in the stage registry (seas.run.stages)
CONFIG_KEYS = STAGES["train_prior"].config_keys
#: model.prior keys that are not the recipe of seas.models.tiny_prior
NON_RECIPE = ("checkpoint_every",)


def training_files(splits: Sequence[Split]) -> list[tuple[str, str, str]]:
    """``(product/file name, absolute path, sha256)`` of every ``train/good`` image of the splits
    (``all_train_normals``; the split's own hash where it recorded one), products in the order given."""
    out, names = [], set()
    for s in splits:
        files = s.all_train_normals if s.all_train_normals is not None else s.train_normals
        if not files:
            raise DataError(f"split of {s.product}: no train/good images to pretrain the prior on")
        for f in files:
            name = f"{s.product}/{Path(f).name}"
            if name in names:
                raise DataError(f"split of {s.product}: two train/good images named {Path(f).name}")
            names.add(name)
            out.append((name, str(f), s.sha256.get(str(f)) or sha256_file(f)))
    return out


def recipe_of(cfg: Mapping) -> dict:
    """The tiny_prior recipe (DEFAULT_RECIPE's keys) of ``model.prior``."""
    return {k: v for k, v in cfg["model"]["prior"].items() if k not in NON_RECIPE}


def train_prior(cfg: Mapping, split_paths: Sequence[str | Path], out: str | Path, stop_after: int | None = None,
                restart: bool = False) -> Path | None:
    """Pretrain the prior on the splits' ``train/good`` images and write ``out`` (+ its manifest); None when
    ``stop_after`` stopped it early (state saved in ``<out>.work/``)."""
    import torch

    from seas.models.tiny_prior import Resumable, pretrain_images

    out = Path(out)
    splits = [Split.load(p) for p in split_paths]
    if not splits:
        raise DataError("train_prior: no split manifests given (--splits)")
    files = training_files(splits)
    res, policy = int(cfg["model"]["resolution"]), cfg["dataset"]["image_policy"]
    recipe = recipe_of(cfg)
    fp = fingerprint(cfg, "train_prior", images={n: h for n, _, h in files})
    work = work_dir(out)
    if restart:
        discard(work)
    total = int(recipe["vae_steps"]) + int(recipe["unet_steps"])
    ckpt = Resumable(work, fp, total, every=cfg["model"]["prior"]["checkpoint_every"], stop_after=stop_after,
                     desc="prior")
    try:
        images = torch.stack([image_to_tensor(load_image(p, res, policy)) for _, p, _ in files])
        names = [n for n, _, _ in files]
        data = {"source": OWN_SOURCE, "products": [s.product for s in splits], "images": names,
                "files": [p for _, p, _ in files], "sha256": {n: h for n, _, h in files},
                "augmentation": "8 flips/rotations", "image_policy": policy}
        result = pretrain_images(images, names, res, int(cfg["seed"]), recipe, data=data, ckpt=ckpt,
                                 device=get_device(cfg))
    finally:
        ckpt.close()
    if result is None:
        log.info("stopped early; state in %s (a rerun continues)", work)
        return None
    state, manifest = result
    write_prior(state, manifest, out)
    shutil.rmtree(work, ignore_errors=True)
    log.info("prior pretrained on %d images of %d products -> %s", len(files), len(splits), out)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m seas.models.train_prior", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    p.add_argument("--splits", nargs="+", required=True, help="the split manifests of the run's products "
                   "(split/<k>/<product>.json): the prior trains on their train/good images")
    p.add_argument("--out", required=True, help="weights file to write (prior/<k>/tiny_prior.safetensors; the "
                   "manifest .json goes next to it)")
    add_resume_arguments(p, "steps")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


@cli
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    cfg = config_from_args(args)
    out = train_prior(cfg, args.splits, args.out, stop_after=args.stop_after, restart=args.restart)
    if out is not None:  # what this stage cost
        from seas.models.prior_file import read_prior_manifest

        m = read_prior_manifest(out)
        run_record(Path(out).parent / "run_record.json", stage="prior",
                   steps=int(m["recipe"]["vae_steps"]) + int(m["recipe"]["unet_steps"]), images=len(m["data"]["images"]),
                   products=len(m["data"]["products"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

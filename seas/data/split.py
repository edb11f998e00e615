"""The ``split`` stage: the few-shot split manifest every later stage reads.

Split (docs/METHOD.md, "Split"): per anomaly type, the first max(floor(n/3), 1) images in file-number order
(``split.rule: floor``, SeaS; ``ceil``: ceil(n/3), DualAnoDiff's code; or H for the H-shot ablations)
with their masks train the generator; the rest plus every
``test/good`` image form the downstream test set (for H: the rest of the 1/3 split, the same for every H as the
paper's Tab. 22, ``split.test_set: one_third``; or the rest after the first H, ``rest``); the first
``num_normal_images`` of the sorted ``train/good`` images are the generator's normal training images
(``train_normals``); every ``train/good`` image is listed too (``all_train_normals``: the segmenters' normals,
``downstream.normal_images``). The split is written once as a JSON manifest (:meth:`Split.save`), with the sha256
of every file it selected (``sha256``: the workflow reruns the split, and so every stage reading it, when one of
them changes -- seas.data.dataset_manifest).

CLI::

    python -m seas.data.split --config config.yaml --product P --out results/<run>/split/<k>/P.json
    python -m seas.data.split --config config.yaml --list      # the configured products and their anomaly types
"""
from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from seas.data.dataset import _product_dir, discover_products, discover_types, mask_path_for, selected_products
from seas.data.dataset_manifest import file_hashes, load_manifest
from seas.data.images import _open, eight_bit_image, image_size, list_images, read_mask_array
from seas.run.config import add_config_arguments, config_from_args
from seas.run.errors import DataError
from seas.run.runtime import atomic_write_text, cli, setup_logging
from seas.run.stages import STAGES

log = logging.getLogger(__name__)

#: the config keys this stage reads: declared once, in the stage registry (seas.run.stages)
CONFIG_KEYS = STAGES["split"].config_keys


#: 2: ``all_train_normals`` (every train/good image, for the segmenters); version-1 manifests still load (without it)
SPLIT_VERSION = 2
READABLE_VERSIONS = (1, 2)


# ----------------------------------------------------------------------------- split
@dataclass
class Split:
    """The few-shot split of one product. Paths are absolute strings."""

    product: str
    root: str
    shots: str | int
    anomaly_types: list[str]
    train_normals: list[str]
    train_anomalies: dict[str, list[dict]]
    test: list[dict]
    version: int = SPLIT_VERSION
    num_normal_images: int = 0
    notes: list[str] = field(default_factory=list)
    rule: str = "floor"  # how "1/3" is rounded (SPLIT_RULES); manifests written before the key existed: floor
    test_set: str = "rest"  # TEST_SETS; manifests written before the key existed: rest
    #: every sorted train/good image (version 2); None in a version-1 manifest
    all_train_normals: list[str] | None = None
    #: {path: sha256} of every file the split selected (seas.data.dataset_manifest); {} in older manifests
    sha256: dict[str, str] = field(default_factory=dict)

    # -- persistence
    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    def save(self, path: str | Path) -> Path:
        return atomic_write_text(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "Split":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise DataError(f"split manifest {path} does not exist (run `python -m seas.data.split split` first)") from None
        except json.JSONDecodeError as e:
            raise DataError(f"split manifest {path} is not valid JSON: {e}") from None
        required = {"product", "root", "shots", "anomaly_types", "train_normals", "train_anomalies", "test"}
        missing = required - set(data)
        if missing:
            raise DataError(f"split manifest {path} lacks keys: {', '.join(sorted(missing))}")
        if data.get("version", SPLIT_VERSION) not in READABLE_VERSIONS:
            raise DataError(f"split manifest {path} has version {data['version']}, expected one of "
                            f"{', '.join(map(str, READABLE_VERSIONS))}")
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise DataError(f"split manifest {path} has unknown keys: {', '.join(sorted(unknown))}")
        split = cls(**data)
        split.source = str(path)
        return split

    # -- the segmenters' normal images
    def downstream_normals(self, n: str | int = "all") -> list[str]:
        """The normal images the segmenters train on (``downstream.normal_images``): every train/good image
        (``all``, the paper and the authors' downstream code) or the first ``n`` of them, independent of the
        generator's ``train_normals``. A version-1 manifest lists only the generator's; it serves ``n`` up to
        their number, else rebuild the split."""
        every = self.all_train_normals
        if every is None:
            if n != "all" and int(n) <= len(self.train_normals):
                return list(self.train_normals[:int(n)])
            raise DataError(
                f"split manifest {getattr(self, 'source', self.product)} (version {self.version}) lists only the "
                f"generator's {len(self.train_normals)} normal images, not every train/good image that "
                f"downstream.normal_images: {n} asks for; rebuild the split (python -m seas.data.split, or delete "
                "the manifest and rerun the workflow)")
        return list(every) if n == "all" else list(every[:int(n)])

    # -- views
    def restricted(self, anomaly_types: Sequence[str]) -> "Split":
        """The same split with the generator's training anomalies limited to ``anomaly_types`` (a per-type
        generator, ``generator.scope: type``); the test set is unchanged."""
        unknown = [t for t in anomaly_types if t not in self.anomaly_types]
        if unknown:
            raise DataError(f"split of {self.product}: no anomaly type {', '.join(map(repr, unknown))} "
                            f"(known: {', '.join(self.anomaly_types)})")
        keep = [t for t in self.anomaly_types if t in set(anomaly_types)]
        return replace(self, anomaly_types=keep, train_anomalies={t: self.train_anomalies[t] for t in keep})

    def files(self) -> list[str]:
        """Every dataset file the split selected: normals (the generator's and, version 2, every train/good image the
        segmenters may read), training anomalies and masks, test images and masks."""
        out = list(dict.fromkeys([*self.train_normals, *(self.all_train_normals or [])]))
        out += [f for t in self.anomaly_types for d in self.train_anomalies[t] for f in (d["image"], d["mask"])]
        out += [f for d in self.test for f in (d["image"], d["mask"]) if f is not None]
        return out

    def train_pairs(self, anomaly_type: str | None = None) -> list[tuple[str, str, str]]:
        """(image, mask, type) of the generator's training anomalies (one type or all)."""
        types = [anomaly_type] if anomaly_type else self.anomaly_types
        return [(d["image"], d["mask"], t) for t in types for d in self.train_anomalies[t]]


SPLIT_RULES = ("floor", "ceil")
#: ``split.test_set`` for an integer H: the rest of the 1/3 split (fixed across H, the paper's Tab. 22) or the rest
#: after the first H images
TEST_SETS = ("one_third", "rest")


def shots_for(n: int, shots: str | int, rule: str = "floor") -> int:
    """Training anomalies out of ``n`` for a type. "1/3": max(floor(n/3), 1) with ``rule`` floor (SeaS), ceil(n/3)
    with ``rule`` ceil (DualAnoDiff's code); an integer H: H (the rule does not apply)."""
    if rule not in SPLIT_RULES:
        raise DataError(f"split.rule: expected one of {', '.join(SPLIT_RULES)}, got {rule!r}")
    if shots == "1/3":
        return max(n // 3, 1) if rule == "floor" else max(-(-n // 3), 1)
    if isinstance(shots, int) and shots >= 1:
        return shots
    raise DataError(f"split.shots: expected \"1/3\" or a positive integer, got {shots!r}")


def _check_pair(image: Path, mask: Path) -> np.ndarray:
    """Both files readable, the mask binary and of its image's size (compared from the headers, before decoding
    either file); returns the mask."""
    (iw, ih), (mw, mh) = image_size(image), image_size(mask)
    if (mw, mh) != (iw, ih):
        raise DataError(f"mask {mask} is {mw}x{mh} but its image {image} is {iw}x{ih}")
    eight_bit_image(_open(image), image)
    return read_mask_array(mask)


def build_split(root: str | Path, product: str, shots: str | int = "1/3", num_normal: int = 60,
                validate: bool = True, rule: str = "floor", test_set: str = "one_third") -> Split:
    """The few-shot split of ``product``; every image is opened and every mask checked when ``validate``.

    With an integer H, ``test_set`` ``one_third`` tests on the images after the shots "1/3" split's training images
    (the same test set for every H, as the paper's Tab. 22; H must not exceed that count), ``rest`` on every image
    after the first H."""
    if test_set not in TEST_SETS:
        raise DataError(f"split.test_set: expected one of {', '.join(TEST_SETS)}, got {test_set!r}")
    pdir = _product_dir(root, product)
    types = discover_types(root, product)
    notes: list[str] = []

    good_dir = pdir / "train" / "good"
    if not good_dir.is_dir():
        raise DataError(f"product {product!r}: missing folder {good_dir}")
    normals = list_images(good_dir)
    if not normals:
        raise DataError(f"product {product!r}: {good_dir} has no images")
    if len(normals) < num_normal:
        notes.append(f"only {len(normals)} normal training images (< num_normal_images={num_normal}); using all")
        log.warning("%s: %s", product, notes[-1])
    every_normal = normals
    normals = normals[:num_normal]

    train_anoms: dict[str, list[dict]] = {}
    test: list[dict] = []
    for t in types:
        imgs = list_images(pdir / "test" / t)
        if not imgs:
            raise DataError(f"product {product!r}: anomaly-type folder {pdir / 'test' / t} is empty")
        gt_dir = pdir / "ground_truth" / t
        pairs = [(p, mask_path_for(p, gt_dir)) for p in imgs]
        k = shots_for(len(pairs), shots, rule)
        first_test = k
        if shots != "1/3" and test_set == "one_third":
            first_test = shots_for(len(pairs), "1/3", rule)
            if k > first_test:
                raise DataError(
                    f"product {product!r}, type {t!r}: shots={shots} exceeds the {first_test} training image(s) of "
                    f"the 1/3 split (rule {rule}), whose test set split.test_set: one_third keeps; use fewer shots "
                    "or split.test_set: rest")
            if k < first_test:
                notes.append(f"type {t!r}: images {k + 1}-{first_test} of the 1/3 split's training set are unused "
                             f"(shots={shots}; the test set stays the 1/3 split's)")
        if k >= len(pairs):
            raise DataError(
                f"product {product!r}, type {t!r}: {len(pairs)} images leave no test image with shots={shots!r}"
                + (f" (rule {rule})" if shots == "1/3" else "")
            )
        train_anoms[t] = [{"image": str(i.resolve()), "mask": str(m.resolve())} for i, m in pairs[:k]]
        test += [{"image": str(i.resolve()), "mask": str(m.resolve()), "type": t, "label": 1}
                 for i, m in pairs[first_test:]]

    good_test = pdir / "test" / "good"
    if good_test.is_dir():
        test += [{"image": str(p.resolve()), "mask": None, "type": "good", "label": 0} for p in list_images(good_test)]
    else:
        notes.append(f"no {good_test}: the test set has anomalous images only")
        log.warning("%s: %s", product, notes[-1])

    if validate:
        for p in every_normal:  # the segmenters read them all (downstream.normal_images)
            eight_bit_image(_open(p), p)
        for t in types:
            for d in train_anoms[t]:
                if not _check_pair(Path(d["image"]), Path(d["mask"])).any():
                    raise DataError(
                        f"product {product!r}, type {t!r}: training anomaly {d['image']} has an empty mask "
                        f"({d['mask']} is all background), so the generator could not learn where its defect is; "
                        "annotate the defect, or remove the image (the first images of a type in file-number order "
                        "train the generator, see split.shots)")
        for d in test:
            if d["mask"] is None:
                eight_bit_image(_open(Path(d["image"])), Path(d["image"]))
            else:
                _check_pair(Path(d["image"]), Path(d["mask"]))

    return Split(
        product=product,
        root=str(Path(root).resolve()),
        shots=shots,
        anomaly_types=types,
        train_normals=[str(p.resolve()) for p in normals],
        train_anomalies=train_anoms,
        test=test,
        num_normal_images=num_normal,
        notes=notes,
        rule=rule,
        test_set=test_set,
        all_train_normals=[str(p.resolve()) for p in every_normal],
    )


def split_from_config(cfg: Mapping, product: str, validate: bool = True) -> Split:
    # not checked against dataset.products: the split of a product does not depend on which others are selected
    found = discover_products(cfg["dataset"]["root"])
    if product not in found:
        raise DataError(f"product {product!r} not found under {cfg['dataset']['root']} (available: {', '.join(found)})")
    return build_split(cfg["dataset"]["root"], product, cfg["split"]["shots"], cfg["split"]["num_normal_images"],
                       validate=validate, rule=cfg["split"]["rule"], test_set=cfg["split"]["test_set"])


def with_hashes(split: Split, manifest: Mapping | None = None) -> Split:
    """``split`` with :attr:`Split.sha256` filled: the content hash of every file it selected (taken from the
    product's dataset manifest where the file's size and mtime still match it, else computed)."""
    return replace(split, sha256=file_hashes(split.files(), manifest))


# ----------------------------------------------------------------------------- CLI
@cli
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m seas.data.split", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(ap)
    ap.add_argument("--product", help="the product whose split manifest to write (with --out)")
    ap.add_argument("--out", help="manifest path (JSON), written atomically")
    ap.add_argument("--dataset-manifest", metavar="JSON",
                    help="the product's dataset manifest (seas.data.dataset_manifest; the workflow writes "
                         "<run>/dataset/<product>.json): its hashes are reused for files whose size and mtime match; "
                         "without it, or for other files, the selected files are hashed here")
    ap.add_argument("--list", action="store_true", help="print the configured products and their anomaly types")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    if not args.list and (args.product is None or args.out is None):
        ap.error("give --product and --out (or --list)")
    cfg = config_from_args(args)
    if args.list:
        for prod in selected_products(cfg):
            print(f"{prod}: {' '.join(discover_types(cfg['dataset']['root'], prod))}")
        return 0
    manifest = load_manifest(args.dataset_manifest) if args.dataset_manifest else None
    split = with_hashes(split_from_config(cfg, args.product), manifest)
    from seas.data.integrity import check_split_files

    check_split_files(split)  # every selected file complete, every mask binary and of its image's size
    split.save(args.out)
    n_train = sum(len(v) for v in split.train_anomalies.values())
    log.info("%s: %d types, %d training anomalies, %d normals, %d test images -> %s", split.product,
             len(split.anomaly_types), n_train, len(split.train_normals), len(split.test), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

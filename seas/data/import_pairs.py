"""Stage ``import_pairs``: one product of an external folder (``external:<path>``: a peer's released or generated
pairs, in any layout of seas.data.peers) rewritten into this project's pairs layout, so every consumer
(segmentation training, the generation metrics, the sample grids) reads it like any method's pairs::

    <out>/<type>/images/000000.png  masks/000000.png   (0/255, single channel)
    <out>/<type>/references/000000.png                 the source normal image, where the layout ships one
                                                       (AnomalyDiffusion ori/, MAGIC normal/, DFMGAN <N>_good.png)
    <out>/<type>/manifest.csv                          index, image, mask, ..., source_name, source_image,
                                                       source_mask, source_normal, mask_binary
    <out>/<type>/import.json                           format, count, native size(s), mask threshold, binarised
                                                       masks, the run size, the source files

Pairs are matched by the layout's name rule (seas.data.peers), in the source's file-number order (index 0 = the
first). Images are brought to the import size by ``dataset.image_policy`` as our own pairs are (bicubic; masks
nearest, after binarising at native size): the size is max(``downstream.image_size``, ``gen_metrics.image_size``),
so neither consumer reads an image upsampled from a smaller copy (256 in the paper presets: the native size of
AnomalyDiffusion's and DFMGAN's images, imported unchanged). Masks that are not binary are binarised at the
method's threshold (``external:<path>?mask_threshold=X``, else ``downstream.external_mask_threshold``) and counted
in import.json (``nonbinary_masks``) and manifest.csv (``mask_binary`` 0). Errors naming the file: an image without
its mask (or the reverse), a mask whose size differs from its image's, an unreadable (e.g. truncated) file.

    python -m seas.data.import_pairs --config C --method 'external:/data/ad?format=anomalydiffusion' --product P \
        [--types T ...] [--images-only] --out methods/external-ad/<k>/P
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Mapping, Sequence

from seas.data.images import image_size, load_image, fit_mask
from seas.data.pairs import IMAGES, pair_name, save_pair, write_manifest
from seas.data.peers import SourceType, read_mask, read_product
from seas.run.config import add_config_arguments, config_from_args
from seas.run.errors import ConfigError, DataError
from seas.run.labels import external_options, external_path, is_external
from seas.run.runtime import atomic_dir, atomic_save_image, atomic_write_text, cli, setup_logging
from seas.run.stages import STAGES

__all__ = ["CONFIG_KEYS", "REFERENCES", "IMPORT_RECORD", "import_size", "mask_threshold", "import_type",
           "import_product", "main"]

log = logging.getLogger(__name__)

#: the config keys this stage reads: declared once, in the stage registry (seas.run.stages)
CONFIG_KEYS = STAGES["import_pairs"].config_keys
#: the source normals, named like seas.method.generate's normal-prompt twins (gen_metrics' mask-defect agreement)
REFERENCES = "references"
IMPORT_RECORD = "import.json"


def import_size(cfg: Mapping) -> int:
    """The side imported images are written at: the larger of the two consumers' sizes."""
    return max(int(cfg["downstream"]["image_size"]), int(cfg["gen_metrics"]["image_size"]))


def mask_threshold(cfg: Mapping, method: str) -> float:
    """The method's mask threshold: its spec's ``mask_threshold``, else ``downstream.external_mask_threshold``."""
    own = external_options(method)["mask_threshold"]
    return float(own if own is not None else cfg["downstream"]["external_mask_threshold"])


def _rel(path: Path | None, base: Path) -> str:
    if path is None:
        return ""
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else str(path)


def import_type(st: SourceType, out: Path, size: int, policy: str, threshold: float, images_only: bool = False) -> dict:
    """Write one type folder ``out`` from ``st``; returns its import record (import.json)."""
    rows, native, nonbinary = [], {}, 0
    has_refs = any(p.normal is not None for p in st.pairs)
    for i, p in enumerate(st.pairs):
        isz = image_size(p.image)
        native[isz] = native.get(isz, 0) + 1
        img = load_image(p.image, size, policy)
        row = {"index": i, "seed": "", "type": st.type, "source_name": p.name, "source_image": str(p.image),
               "source_mask": str(p.mask or ""), "source_normal": str(p.normal or ""), "format": st.format}
        if p.mask is None:
            ip = out / IMAGES / pair_name(i)
            atomic_save_image(img, ip)
            row.update(image=ip, mask="", mask_binary="")
        else:
            msz = image_size(p.mask)
            if msz != isz:
                raise DataError(f"{p.mask}: mask size {msz} differs from image size {isz} ({p.image})")
            arr, binary = read_mask(p.mask, threshold)
            nonbinary += not binary
            ip, mp = save_pair(out, i, img, fit_mask(arr, size, policy))
            row.update(image=ip, mask=mp, mask_binary=int(binary), mask_threshold=threshold)
        if has_refs:
            if p.normal is None:
                raise DataError(f"{p.image}: no source normal image, while other pairs of {st.folder} have one")
            ref = out / REFERENCES / pair_name(i)
            atomic_save_image(load_image(p.normal, size, policy), ref)
            row.update(reference=str(p.normal), normal_twin=f"{REFERENCES}/{pair_name(i)}")
        rows.append(row)
    write_manifest(out, rows)
    sizes = sorted(native)
    if nonbinary:
        log.warning("%s/%s: %d of %d masks were not binary (%s); binarised at pixel / 255 > %g", st.product, st.type, nonbinary,
                    len(rows), st.folder, threshold)
    record = {"product": st.product, "type": st.type, "format": st.format, "source": str(st.folder),
              "count": len(rows), "native_size": list(sizes[0]) if len(sizes) == 1 else None,
              "native_sizes": {f"{w}x{h}": n for (w, h), n in sorted(native.items())},
              "image_size": size, "image_policy": policy, "images_only": bool(images_only),
              "mask_threshold": None if images_only else threshold, "nonbinary_masks": None if images_only else nonbinary,
              "references": has_refs,
              "source_files": [{"name": p.name, "image": _rel(p.image, st.folder), "mask": _rel(p.mask, st.folder),
                                "normal": _rel(p.normal, st.folder)} for p in st.pairs]}
    atomic_write_text(out / IMPORT_RECORD, json.dumps(record, indent=1) + "\n")
    return record


def import_product(cfg: Mapping, method: str, product: str, out: str | Path, types: Sequence[str] | None = None,
                   images_only: bool = False) -> list[dict]:
    """Import one product of external method ``method`` into ``out`` (written in a temporary folder, renamed
    into place at the end); returns the types' import records."""
    if not is_external(method):
        raise ConfigError(f"--method {method!r}: import_pairs imports external:<path> methods only")
    opts = external_options(method)
    root = Path(external_path(method))
    source = read_product(root, product, opts["format"], types=types, images_only=images_only)
    size, policy = import_size(cfg), cfg["dataset"]["image_policy"]
    threshold = mask_threshold(cfg, method)
    records = []
    with atomic_dir(out) as tmp:
        for st in source:
            rec = import_type(st, tmp / st.type, size, policy, threshold, images_only)
            records.append(rec)
            log.info("%s/%s: %d pairs from %s (%s layout, native %s)", product, st.type, rec["count"], st.folder,
                     st.format, ", ".join(rec["native_sizes"]))
    return records


@cli
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m seas.data.import_pairs", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(ap)
    ap.add_argument("--method", required=True,
                    help="the external method spec: external:<path>[?format=F&mask_threshold=X]")
    ap.add_argument("--product", required=True, help="the product to import (<path>/<product>/...)")
    ap.add_argument("--types", nargs="*", default=None,
                    help="the product's anomaly types in the dataset: a type folder outside them is an error")
    ap.add_argument("--images-only", action="store_true",
                    help="read images only (downstream.generation_only methods: generators that make no masks)")
    ap.add_argument("--out", required=True, help="product folder to write (methods/external-<name>/<k>/<product>)")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = ap.parse_args(argv)
    setup_logging(args.verbose)
    cfg = config_from_args(args)
    import_product(cfg, args.method, args.product, args.out, types=args.types, images_only=args.images_only)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Image and mask files: the one reader every stage uses, the one image-listing helper, tensors.

Images (:func:`load_image`): 8-bit, or 16-bit greyscale scaled by its depth (v/257); float images are refused.
Masks (:func:`load_mask` / :func:`read_mask_array`): single channel (an alpha channel is dropped), values 0 plus
one of 1, 255, 65535. Files larger than PIL's decompression-bomb limit are errors naming the file.
EXIF orientation (:func:`open_image`): an image or mask whose EXIF Orientation tag (274) says 2-8 is read the way a
viewer shows it (the transpose ``PIL.ImageOps.exif_transpose`` makes), its header size too (:func:`image_size`), so
a mask drawn on what the user saw aligns with its image.
Listing: :func:`list_images` (file-number order: 2.png < 10.png; hidden files and non-images skipped).
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from seas.run.errors import DataError
# Lazy imports: torch is imported inside the functions that use it: the workflow imports this module at parse time.

log = logging.getLogger(__name__)

#: how an image is brought to the run's square resolution (dataset.image_policy)
IMAGE_POLICIES = ("shorter_side_center_crop", "resize")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


# ----------------------------------------------------------------------------- discovery
def _natural_key(path: Path):
    """File-number order: 2.png < 10.png; non-numeric parts compare as text."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.stem)] + [path.suffix]


def is_image_file(path: Path) -> bool:
    """An image by its suffix (hidden files, e.g. atomic-write temporaries or macOS ``._*`` forks, are not)."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def list_images(folder: str | Path, missing_ok: bool = False) -> list[Path]:
    """The one image-listing helper: image files of ``folder`` in file-number order (hidden files and non-images
    skipped); ``missing_ok``: [] for a folder that does not exist (else the OSError of listing it)."""
    folder = Path(folder)
    if missing_ok and not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if is_image_file(p) and p.is_file()), key=_natural_key)


# ----------------------------------------------------------------------------- image / mask IO
#: EXIF orientation (tag 274) -> the transpose that shows the stored pixels the way a viewer does (PIL.ImageOps)
EXIF_ORIENTATION = 0x0112
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def exif_orientation(img: Image.Image) -> int:
    """The EXIF orientation (1-8; 1 = as stored) a file declares in its header (EXIF, TIFF tags or XMP).

    Read from the header only, before any decoding, so that :func:`image_size` (header only) and the decoded
    :func:`open_image` agree by construction (a PNG whose eXIf chunk follows the image data is read as stored by
    both). An unreadable EXIF block counts as no orientation.
    """
    try:
        # the generic reader: it looks at what the header gave (PNG's own getexif would decode the image first)
        value = Image.Image.getexif(img).get(EXIF_ORIENTATION, 1)
        return int(value) if int(value) in _TRANSPOSE else 1
    except Exception as e:  # a damaged EXIF block does not make the pixels unreadable
        log.debug("%s: EXIF unreadable (%s); read as stored", getattr(img, "filename", "image"), e)
        return 1


def open_image(path: Path, decode: bool = True) -> Image.Image:
    """Open an image file the way a viewer shows it: its EXIF orientation (a phone's rotated JPEG) applied, to
    images and masks alike, so a mask drawn on the image as seen aligns with it. ``decode=False`` reads only its
    header (mode; the size as stored -- :func:`image_size` gives the size as seen). Every failure is a DataError
    naming the file, including files too large to decode safely (PIL's decompression-bomb guard, which PIL
    applies to the header's size before decoding anything)."""
    try:
        img = Image.open(path)
        if decode:
            orientation = exif_orientation(img)
            img.load()
            if orientation != 1:
                img = img.transpose(_TRANSPOSE[orientation])
        return img
    except FileNotFoundError:
        raise DataError(f"image file {path} does not exist") from None
    except Image.DecompressionBombError as e:
        raise DataError(f"image {path} is too large to decode safely ({e}); downscale it first "
                        "(every stage works at a few hundred pixels)") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DataError(f"cannot read image {path}: {e}") from None


_open = open_image


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file as :func:`open_image` decodes it (EXIF orientation applied: a 90-degree
    rotation swaps the sides), from its header only (no decoding); DataError naming the file."""
    img = open_image(Path(path), decode=False)
    try:
        w, h = img.size
        return (h, w) if exif_orientation(img) in (5, 6, 7, 8) else (w, h)
    finally:
        img.close()


#: modes of integer images deeper than 8 bits (PIL opens 16-bit greyscale PNG/TIFF as I;16*, others as I)
_WIDE_INT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def eight_bit_image(img: Image.Image, path: Path) -> Image.Image:
    """A 16-bit (or 32-bit integer holding 16-bit data) greyscale image scaled to 8 bits by its real depth
    (v / 257: 65535 -> 255); PIL's own convert() would clip every value above 255 to white. Float images and
    integer values outside 0..65535 are refused naming the file."""
    if img.mode == "F":
        raise DataError(f"image {path} is a 32-bit float image; convert it to an 8- or 16-bit PNG first")
    if img.mode not in _WIDE_INT_MODES:
        return img
    arr = np.asarray(img).astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise DataError(f"image {path} is a {img.mode} image with values {arr.min()}..{arr.max()}, outside the "
                        "16-bit range 0..65535; convert it to an 8- or 16-bit PNG first")
    return Image.fromarray(np.rint(arr / 257.0).astype(np.uint8), mode="L")


def read_mask_array(path: str | Path) -> np.ndarray:
    """A mask file as a HxW uint8 array in {0, 1}; non-binary masks are an error naming the file.

    Binary means only 0 and one "on" value: 1, 255 or (16-bit masks) 65535. An alpha channel (LA / RGBA masks,
    as some editors export them) is not mask content and is dropped.
    """
    path = Path(path)
    img = _open(path)
    if img.mode == "F":
        raise DataError(f"mask {path} is a 32-bit float image; expected an 8- or 16-bit single-channel binary mask")
    arr = np.asarray(img)
    if arr.ndim == 3:
        if arr.shape[2] in (2, 4):
            arr = arr[..., :-1]
        if not (arr == arr[..., :1]).all():
            raise DataError(f"mask {path} is a colour image; expected a single-channel binary mask")
        arr = arr[..., 0]
    if arr.dtype == bool:
        return arr.astype(np.uint8)
    values = np.unique(arr)
    present = set(values.tolist())
    if not any(present <= {0, on} for on in (1, 255, 65535)):
        shown = ", ".join(str(v) for v in values[:8]) + (" …" if len(values) > 8 else "")
        raise DataError(
            f"mask {path} is not binary: values {{{shown}}}; expected only 0/255 (or 0/1, or 0/65535 in a 16-bit "
            "mask). Binarise it first (the converters in `python -m seas.data.convert` do)."
        )
    return (arr > 0).astype(np.uint8)


def _geometry(img: Image.Image, size: int, policy: str, resample) -> Image.Image:
    if policy == "resize":
        return img.resize((size, size), resample)
    if policy != "shorter_side_center_crop":
        raise DataError(f"dataset.image_policy: unknown policy {policy!r} (choose from {', '.join(IMAGE_POLICIES)})")
    w, h = img.size
    s = size / min(w, h)
    nw, nh = max(size, round(w * s)), max(size, round(h * s))
    img = img.resize((nw, nh), resample)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def load_image(path: str | Path, size: int | None = None, policy: str = "shorter_side_center_crop") -> Image.Image:
    """An RGB image, brought to ``size``×``size`` by ``policy`` (None keeps its size)."""
    path = Path(path)
    img = eight_bit_image(_open(path), path).convert("RGB")
    return img if size is None else _geometry(img, size, policy, Image.BICUBIC)


def load_mask(path: str | Path | None, size: int | None = None, policy: str = "shorter_side_center_crop",
              like: Image.Image | None = None) -> np.ndarray:
    """A binary HxW uint8 mask in {0,1} with the same geometry as :func:`load_image` (nearest resampling).

    ``path=None`` gives an all-zero mask of ``size`` (or of ``like``'s size).
    """
    if path is None:
        if size is None and like is None:
            raise ValueError("load_mask(None) needs size or like")
        w, h = like.size if like is not None and size is None else (size, size)
        return np.zeros((h, w), np.uint8)
    arr = read_mask_array(path)
    return arr if size is None else fit_mask(arr, size, policy)


def fit_mask(arr: np.ndarray, size: int, policy: str = "shorter_side_center_crop") -> np.ndarray:
    """A binary HxW {0,1} mask brought to ``size``x``size`` by ``policy``, nearest resampling: the geometry
    :func:`load_image` gives its image."""
    img = Image.fromarray((np.asarray(arr) > 0).astype(np.uint8) * 255)
    return (np.asarray(_geometry(img, size, policy, Image.NEAREST)) > 127).astype(np.uint8)


def image_to_tensor(img: Image.Image):
    """PIL RGB -> float32 tensor CHW in [-1, 1] (Stable Diffusion's input range)."""
    import torch

    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def mask_to_tensor(mask: np.ndarray):
    """HxW {0,1} array -> float32 tensor 1xHxW."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(mask, dtype=np.float32))[None]

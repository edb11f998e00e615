"""The one image reader (seas.data.images): EXIF orientation is applied to images and masks alike (issue 25, item 5).

A camera stores a portrait photo as landscape pixels plus EXIF Orientation 6 (or 8); a viewer shows it rotated,
and the user draws the mask on what they saw -- a mask file without the tag, of the viewed size."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from seas.data.images import EXIF_ORIENTATION, image_size, load_image, load_mask, read_mask_array
from seas.data.split import _check_pair as check_pair


def _with_orientation(arr: np.ndarray, path, orientation: int, **save) -> None:
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    img.save(path, exif=exif.tobytes(), **save)


def _stored() -> np.ndarray:
    """A 6 x 4 (width x height) RGB image: black, one red pixel at stored row 0, column 5 (top right)."""
    arr = np.zeros((4, 6, 3), np.uint8)
    arr[0, 5] = (255, 0, 0)
    return arr


@pytest.mark.parametrize("orientation, viewed", [
    (1, lambda a: a),
    (3, lambda a: np.rot90(a, 2)),
    (6, lambda a: np.rot90(a, -1)),  # rotate 90 degrees clockwise to view
    (8, lambda a: np.rot90(a, 1)),   # counter-clockwise
    (2, lambda a: a[:, ::-1]),       # mirrored
])
def test_png_is_read_as_a_viewer_shows_it(tmp_path, orientation, viewed):
    p = tmp_path / "img.png"
    _with_orientation(_stored(), p, orientation)
    want = viewed(_stored())
    assert image_size(p) == (want.shape[1], want.shape[0])  # header only, as viewed
    np.testing.assert_array_equal(np.asarray(load_image(p)), want)


def test_mask_drawn_on_the_viewed_image_aligns(tmp_path):
    """Orientation 6: the stored top-right pixel is seen at the bottom right of a 4 x 6 portrait image; the user's
    mask (no tag, 4 x 6) marks it there, and the pair passes the split's size check and aligns pixel for pixel."""
    img_path, mask_path, tagged_mask = tmp_path / "000.png", tmp_path / "000_mask.png", tmp_path / "tagged_mask.png"
    _with_orientation(_stored(), img_path, 6)
    drawn = np.zeros((6, 4), np.uint8)
    drawn[5, 3] = 255
    Image.fromarray(drawn).save(mask_path)
    check_pair(img_path, mask_path)  # sizes agree (4 x 6 both), compared from the headers
    img = np.asarray(load_image(img_path))
    mask = load_mask(mask_path)
    assert img.shape[:2] == mask.shape == (6, 4)
    assert np.argwhere(mask).tolist() == [[5, 3]] == np.argwhere(img[..., 0] > 127).tolist()
    # a mask carrying the same tag as its image (saved by the same camera app) is turned alike
    stored_mask = np.zeros((4, 6), np.uint8)
    stored_mask[0, 5] = 255
    _with_orientation(stored_mask, tagged_mask, 6)
    np.testing.assert_array_equal(read_mask_array(tagged_mask), mask)
    # the geometry of a stage (resize to the run's resolution) follows the viewed image
    big = load_mask(mask_path, size=12, policy="resize")
    assert big.shape == (12, 12) and big[-1, -1] == 1 and big[0, 0] == 0


def test_jpeg_with_orientation(tmp_path):
    """A JPEG (lossy: compared by blocks) with Orientation 8: a bright block at the stored top left is seen at the
    bottom left of the upright image."""
    arr = np.zeros((32, 48, 3), np.uint8)
    arr[:16, :16] = 255
    p = tmp_path / "photo.jpg"
    _with_orientation(arr, p, 8, quality=95)
    assert Image.open(p).size == (48, 32)  # stored landscape
    assert image_size(p) == (32, 48)       # viewed portrait
    img = np.asarray(load_image(p)).mean(axis=2)
    assert img.shape == (48, 32)
    assert img[40, 8] > 200 and img[8, 8] < 50 and img[40, 24] < 50

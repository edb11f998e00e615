"""VisA and MVTec 3D AD converters on small fake trees: output layout, numbering, pixels, masks, errors."""
from __future__ import annotations

import csv
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from seas.data.convert import binarize_mask, convert_mvtec3d, convert_visa, defect_folder, main, natural_key
from seas.run.errors import DataError


def _rgb(path: Path, seed: int, size=(20, 14), fmt=None) -> np.ndarray:
    """A random RGB image saved at ``path``; returns the pixels as decoded back from the file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return np.asarray(Image.open(path).convert("RGB"))


def _mask(path: Path, seed: int, size=(20, 14), fg=255) -> np.ndarray:
    """A mask with values {0, fg}; returns its boolean foreground."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    m = np.zeros((size[1], size[0]), np.uint8)
    y, x = rng.integers(0, size[1] - 4), rng.integers(0, size[0] - 5)
    m[y: y + 4, x: x + 5] = fg
    Image.fromarray(m).save(path)
    return m > 0


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _read_map(dst: Path) -> dict[str, str]:
    with open(dst / "convert_map.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {r["new"]: r["original"] for r in rows}


# ----------------------------------------------------------------------------- VisA
#: defect labels of the fake VisA anomalies as image_anno.csv writes them (free text, commas between defects)
CANDLE_LABELS = {"10": "chunk of wax missing", "9": "weird candle wick,Chunk of wax missing",
                 "100": "Chunk Of Wax Missing", "11": "damaged corner of packaging, damaged corner of packaging",
                 "12": "wax melded out of the candle, weird candle wick"}
PCB1_LABELS = {"0": "melt", "1": "melt, scratch"}


def make_visa(root: Path) -> dict:
    """Objects candle (train normals 10,2,1; test normals 3,0; anomalies 10,9,100,11,12 — one 0/1 mask, two with
    several defects) and pcb1 (1 train normal, anomalies 0 and 1, 1 with two defects), as VisA ships them:
    split_csv/1cls.csv (rows shuffled) and <object>/image_anno.csv. Returns the expected pixels."""
    rows, pix, anno = [], {}, {}
    def normal(obj, name, split, seed):
        rel = f"{obj}/Data/Images/Normal/{name}.JPG"
        pix[rel] = _rgb(root / rel, seed, fmt="JPEG")
        rows.append([obj, split, "normal", rel, ""])
        anno.setdefault(obj, []).append([rel, "normal", ""])

    def anomaly(obj, name, seed, label, fg=255):
        rel, mrel = f"{obj}/Data/Images/Anomaly/{name}.JPG", f"{obj}/Data/Masks/Anomaly/{name}.png"
        pix[rel] = _rgb(root / rel, seed, fmt="JPEG")
        pix[mrel] = _mask(root / mrel, seed, fg=fg)
        rows.append([obj, "test", "anomaly", rel, mrel])
        anno.setdefault(obj, []).append([rel, label, mrel])

    for i, n in enumerate(["10", "2", "1"]):
        normal("candle", n, "train", i)
    for i, n in enumerate(["3", "0"]):
        normal("candle", n, "test", 10 + i)
    for i, n in enumerate(["10", "9", "100", "11", "12"]):
        anomaly("candle", n, 20 + i, CANDLE_LABELS[n], fg=1 if n == "9" else 255)
    normal("pcb1", "0", "train", 30)
    for i, n in enumerate(["0", "1"]):
        anomaly("pcb1", n, 31 + i, PCB1_LABELS[n])
    random.Random(0).shuffle(rows)
    (root / "split_csv").mkdir(parents=True)
    with open(root / "split_csv" / "1cls.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["object", "split", "label", "image", "mask"])
        w.writerows(rows)
    for obj, arows in anno.items():
        random.Random(1).shuffle(arows)
        with open(root / obj / "image_anno.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["image", "label", "mask"])
            w.writerows(arows)
    return pix


def test_natural_key_and_binarize():
    names = ["10.png", "9.png", "100.png", "a2", "a10"]
    assert sorted(names, key=natural_key) == ["9.png", "10.png", "100.png", "a2", "a10"]
    np.testing.assert_array_equal(binarize_mask(np.array([[0, 1], [1, 0]])), [[0, 255], [255, 0]])
    np.testing.assert_array_equal(binarize_mask(np.array([[0, 255], [3, 200]])), [[0, 255], [0, 255]])
    np.testing.assert_array_equal(binarize_mask(np.zeros((2, 2, 3), np.uint8) + [0, 0, 2]), np.full((2, 2), 255))


def test_visa_one_folder_per_defect_type_as_the_authors(tmp_path, caplog):
    src = tmp_path / "visa"
    pix = make_visa(src)
    with caplog.at_level("INFO", logger="seas.data.convert"):
        dst = convert_visa(src, tmp_path / "out")
    assert _listing(dst) == ["candle", "convert_map.csv", "pcb1"]
    c = dst / "candle"
    assert _listing(c / "train/good") == ["000.png", "001.png", "002.png"]
    assert _listing(c / "test/good") == ["000.png", "001.png"]
    # one folder per defect name (lower case, spaces -> _); several different defects -> combined
    assert _listing(c / "test") == ["chunk_of_wax_missing", "combined", "damaged_corner_of_packaging", "good"]
    assert _listing(c / "ground_truth") == ["chunk_of_wax_missing", "combined", "damaged_corner_of_packaging"]
    assert _listing(c / "test/chunk_of_wax_missing") == ["000.png", "001.png"]
    assert _listing(c / "ground_truth/combined") == ["000_mask.png", "001_mask.png"]
    assert _listing(dst / "pcb1/test") == ["combined", "melt"]

    mapping = _read_map(dst)
    base = str(src.resolve())
    expect = {
        "candle/train/good/000.png": "candle/Data/Images/Normal/1.JPG",
        "candle/train/good/001.png": "candle/Data/Images/Normal/2.JPG",
        "candle/train/good/002.png": "candle/Data/Images/Normal/10.JPG",
        "candle/test/good/000.png": "candle/Data/Images/Normal/0.JPG",
        "candle/test/good/001.png": "candle/Data/Images/Normal/3.JPG",
        "candle/test/chunk_of_wax_missing/000.png": "candle/Data/Images/Anomaly/10.JPG",
        "candle/test/chunk_of_wax_missing/001.png": "candle/Data/Images/Anomaly/100.JPG",
        "candle/ground_truth/chunk_of_wax_missing/001_mask.png": "candle/Data/Masks/Anomaly/100.png",
        "candle/test/combined/000.png": "candle/Data/Images/Anomaly/9.JPG",
        "candle/ground_truth/combined/000_mask.png": "candle/Data/Masks/Anomaly/9.png",
        "candle/test/combined/001.png": "candle/Data/Images/Anomaly/12.JPG",
        "candle/test/damaged_corner_of_packaging/000.png": "candle/Data/Images/Anomaly/11.JPG",  # twice = once
        "pcb1/test/melt/000.png": "pcb1/Data/Images/Anomaly/0.JPG",
        "pcb1/test/combined/000.png": "pcb1/Data/Images/Anomaly/1.JPG",
        "pcb1/ground_truth/combined/000_mask.png": "pcb1/Data/Masks/Anomaly/1.png",
        "pcb1/train/good/000.png": "pcb1/Data/Images/Normal/0.JPG",
    }
    for new, orig in expect.items():
        assert mapping[new] == f"{base}/{orig}", new
    assert len(mapping) == (10 + 5) + (3 + 2)  # candle 10 images + 5 masks, pcb1 3 images + 2 masks
    for new, orig in mapping.items():
        rel = orig[len(base) + 1:]
        out = Image.open(dst / new)
        assert out.format == "PNG"
        if "ground_truth" in new:
            assert out.mode == "L"
            arr = np.asarray(out)
            assert set(np.unique(arr)) == {0, 255}
            np.testing.assert_array_equal(arr > 0, pix[rel])  # 0/1 mask (9.png) binarised; combined: whole mask
        else:
            np.testing.assert_array_equal(np.asarray(out.convert("RGB")), pix[rel])  # JPG decoded, stored lossless
    # where a product's types differ from the authors' list, the log says so (candle lacks most of theirs)
    differ = [r.getMessage() for r in caplog.records if "differ from the authors'" in r.getMessage()]
    assert len(differ) == 2 and "candle" in differ[0] and "'foreign_particals_on_candle'" in differ[0]


def test_defect_folder_names():
    assert defect_folder("Chunk Of Wax Missing") == "chunk_of_wax_missing"
    assert defect_folder(" Color spot  similar to the Object ") == "color_spot_similar_to_the_object"
    assert defect_folder("wax/melt (side)") == "wax_melt_side"
    assert defect_folder("..") == "" and defect_folder(".hidden") == "hidden"


def test_visa_single_type_products_and_split_csv(tmp_path):
    src = tmp_path / "visa"
    make_visa(src)
    csv_copy = tmp_path / "my.csv"
    csv_copy.write_text((src / "split_csv/1cls.csv").read_text())
    (src / "split_csv/1cls.csv").unlink()
    (src / "pcb1/image_anno.csv").unlink()  # not read with a single type
    dst = convert_visa(src, tmp_path / "out", split_csv=csv_copy, single_type="defect", products=["pcb1"])
    assert _listing(dst) == ["convert_map.csv", "pcb1"]
    assert _listing(dst / "pcb1/test") == ["defect"]
    assert _listing(dst / "pcb1/ground_truth/defect") == ["000_mask.png", "001_mask.png"]
    with pytest.raises(DataError, match="reserved"):
        convert_visa(src, tmp_path / "o2", split_csv=csv_copy, single_type="good")
    with pytest.raises(DataError, match="tv"):
        convert_visa(src, tmp_path / "o3", split_csv=csv_copy, products=["tv"])
    # per type (the default), pcb1's missing annotation CSV is an error naming it
    with pytest.raises(DataError, match=r"annotation CSV .*pcb1/image_anno\.csv: not found"):
        convert_visa(src, tmp_path / "o4", split_csv=csv_copy, products=["pcb1"])
    assert not (tmp_path / "o4").exists()
    dst = convert_visa(src, tmp_path / "o5", split_csv=csv_copy, products=["candle"])
    assert _listing(dst) == ["candle", "convert_map.csv"]


def _edit_anno(src: Path, obj: str, fn) -> None:
    p = src / obj / "image_anno.csv"
    rows = list(csv.reader(open(p, newline="")))
    with open(p, "w", newline="") as f:
        csv.writer(f).writerows(fn(rows))


def _relabel(rows, image, label):
    return [[r[0], label, *r[2:]] if r[0] == image else r for r in rows]


def test_visa_annotation_errors(tmp_path, capsys):
    src = tmp_path / "visa"
    make_visa(src)
    anno = src / "candle/image_anno.csv"
    original = anno.read_text()
    # an annotation row naming an image that does not exist
    _edit_anno(src, "candle", lambda r: r + [["candle/Data/Images/Anomaly/404.JPG", "melt", ""]])
    with pytest.raises(DataError, match=r"candle/image_anno\.csv:\d+: image .*Anomaly/404\.JPG not found "
                                        r"\(unknown image"):
        convert_visa(src, tmp_path / "o")
    assert main(["visa", "--src", str(src), "--dst", str(tmp_path / "o")]) == 2
    assert "404.JPG not found" in capsys.readouterr().err
    anno.write_text(original)
    # an anomaly of the split CSV without an annotation row
    _edit_anno(src, "candle", lambda r: [x for x in r if x[0] != "candle/Data/Images/Anomaly/11.JPG"])
    with pytest.raises(DataError, match=r"1cls\.csv:\d+: anomaly image .*Anomaly/11\.JPG has no row in .*candle/"
                                        r"image_anno\.csv"):
        convert_visa(src, tmp_path / "o")
    anno.write_text(original)
    # the two CSVs disagree on normal vs anomaly
    _edit_anno(src, "candle", lambda r: _relabel(r, "candle/Data/Images/Anomaly/10.JPG", "normal"))
    with pytest.raises(DataError, match=r"Anomaly/10\.JPG is labelled normal but .*1cls\.csv:\d+ lists it as an "
                                        r"anomaly"):
        convert_visa(src, tmp_path / "o")
    anno.write_text(original)
    _edit_anno(src, "candle", lambda r: _relabel(r, "candle/Data/Images/Normal/3.JPG", "scratch"))
    with pytest.raises(DataError, match=r"Normal/3\.JPG is labelled 'scratch' but .* lists it as normal"):
        convert_visa(src, tmp_path / "o")
    anno.write_text(original)
    # unusable defect names, duplicates, a missing column
    _edit_anno(src, "candle", lambda r: _relabel(r, "candle/Data/Images/Anomaly/10.JPG", "Good"))
    with pytest.raises(DataError, match="'Good': 'good' is reserved"):
        convert_visa(src, tmp_path / "o")
    _edit_anno(src, "candle", lambda r: _relabel(r, "candle/Data/Images/Anomaly/10.JPG", " , "))
    with pytest.raises(DataError, match="empty label"):
        convert_visa(src, tmp_path / "o")
    anno.write_text(original)
    _edit_anno(src, "candle", lambda r: r + [r[1]])
    with pytest.raises(DataError, match="annotated twice"):
        convert_visa(src, tmp_path / "o")
    _edit_anno(src, "candle", lambda r: [[x[0], x[2]] for x in r])
    with pytest.raises(DataError, match=r"image_anno\.csv: missing column\(s\) \['label'\]"):
        convert_visa(src, tmp_path / "o")
    assert _listing(tmp_path) == ["visa"]  # nothing written by any failed run


def _edit_csv(src: Path, fn) -> None:
    p = src / "split_csv" / "1cls.csv"
    rows = list(csv.reader(open(p, newline="")))
    rows = fn(rows)
    with open(p, "w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_visa_errors(tmp_path):
    src = tmp_path / "visa"
    make_visa(src)
    with pytest.raises(DataError, match=r"1cls\.csv.*not found"):
        convert_visa(tmp_path, tmp_path / "o")
    # an image named in the CSV is missing
    (src / "candle/Data/Images/Anomaly/100.JPG").rename(tmp_path / "moved.JPG")
    with pytest.raises(DataError, match=r"Anomaly/100\.JPG not found"):
        convert_visa(src, tmp_path / "o")
    (tmp_path / "moved.JPG").rename(src / "candle/Data/Images/Anomaly/100.JPG")
    # a mask whose size differs from its image; nothing is left behind
    _mask(src / "candle/Data/Masks/Anomaly/10.png", 0, size=(21, 14))
    with pytest.raises(DataError, match=r"mask .*Anomaly/10\.png is 21x14 but its image .*10\.JPG is 20x14"):
        convert_visa(src, tmp_path / "o")
    assert _listing(tmp_path) == ["visa"]
    _mask(src / "candle/Data/Masks/Anomaly/10.png", 0)
    # bad label / missing column
    _edit_csv(src, lambda r: r[:1] + [[*r[1][:2], "weird", *r[1][3:]]] + r[2:])
    with pytest.raises(DataError, match=r"1cls\.csv:2: label 'weird'"):
        convert_visa(src, tmp_path / "o")
    _edit_csv(src, lambda r: [[c for i, c in enumerate(row) if i != 4] for row in r])
    with pytest.raises(DataError, match=r"missing column\(s\) \['mask'\]"):
        convert_visa(src, tmp_path / "o")


def test_dst_not_clobbered_without_overwrite(tmp_path):
    src = tmp_path / "visa"
    make_visa(src)
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="--overwrite"):
        convert_visa(src, dst)
    assert (dst / "keep.txt").read_text() == "mine"
    convert_visa(src, dst, overwrite=True)
    assert not (dst / "keep.txt").exists() and (dst / "candle/test/combined/001.png").is_file()


def test_visa_cli(tmp_path, capsys):
    src = tmp_path / "visa"
    make_visa(src)
    assert main(["visa", "--src", str(src), "--dst", str(tmp_path / "out")]) == 0
    assert _listing(tmp_path / "out/pcb1/test") == ["combined", "melt"]
    assert main(["visa", "--src", str(src), "--dst", str(tmp_path / "o1"), "--single-type", "anomaly"]) == 0
    assert _listing(tmp_path / "o1/candle/test") == ["anomaly", "good"]
    assert main(["visa", "--src", str(tmp_path / "nope"), "--dst", str(tmp_path / "o2")]) == 2
    assert "nope" in capsys.readouterr().err


# ----------------------------------------------------------------------------- MVTec 3D AD
def make_m3d(root: Path) -> dict:
    pix = {}
    b = root / "bagel"
    for i in range(3):
        pix[f"bagel/train/good/rgb/{i:03d}.png"] = _rgb(b / f"train/good/rgb/{i:03d}.png", i)
        (b / "train/good/xyz").mkdir(parents=True, exist_ok=True)
        (b / f"train/good/xyz/{i:03d}.tiff").write_bytes(b"ignored")
    pix["bagel/validation/good/rgb/000.png"] = _rgb(b / "validation/good/rgb/000.png", 5)
    for i in range(2):
        pix[f"bagel/test/good/rgb/{i:03d}.png"] = _rgb(b / f"test/good/rgb/{i:03d}.png", 10 + i)
        _mask(b / f"test/good/gt/{i:03d}.png", 0, fg=0)  # MVTec 3D ships empty gt for good: not copied
    for t, n in (("crack", 3), ("hole", 2)):
        for i in range(n):
            pix[f"bagel/test/{t}/rgb/{i:03d}.png"] = _rgb(b / f"test/{t}/rgb/{i:03d}.png", 20 + i)
            pix[f"bagel/test/{t}/gt/{i:03d}.png"] = _mask(b / f"test/{t}/gt/{i:03d}.png", 20 + i,
                                                           fg=1 if t == "hole" else 255)
    pix["foam/train/good/rgb/000.png"] = _rgb(root / "foam/train/good/rgb/000.png", 40)
    pix["foam/test/cut/rgb/000.png"] = _rgb(root / "foam/test/cut/rgb/000.png", 41)
    pix["foam/test/cut/gt/000.png"] = _mask(root / "foam/test/cut/gt/000.png", 41)
    (root / "readme.txt").write_text("not a class")
    return pix


def test_mvtec3d_layout_pixels_masks(tmp_path):
    src = tmp_path / "m3d"
    pix = make_m3d(src)
    dst = convert_mvtec3d(src, tmp_path / "out")
    assert _listing(dst) == ["bagel", "convert_map.csv", "foam"]
    b = dst / "bagel"
    assert _listing(b) == ["ground_truth", "test", "train"]
    assert _listing(b / "train/good") == ["000.png", "001.png", "002.png"]
    assert _listing(b / "test") == ["crack", "good", "hole"]
    assert _listing(b / "test/good") == ["000.png", "001.png"]
    assert _listing(b / "ground_truth") == ["crack", "hole"]
    assert _listing(b / "ground_truth/crack") == ["000_mask.png", "001_mask.png", "002_mask.png"]
    mapping = _read_map(dst)
    base = str(src.resolve())
    assert mapping["bagel/ground_truth/hole/001_mask.png"] == f"{base}/bagel/test/hole/gt/001.png"
    assert len(mapping) == 3 + 2 + 3 + 3 + 2 + 2 + 3
    for new, orig in mapping.items():
        rel = orig[len(base) + 1:]
        if "ground_truth" in new:
            arr = np.asarray(Image.open(dst / new))
            assert arr.ndim == 2 and set(np.unique(arr)) == {0, 255}
            np.testing.assert_array_equal(arr > 0, pix[rel])
        else:
            assert (dst / new).read_bytes() == Path(orig).read_bytes()  # PNG copied as is
            np.testing.assert_array_equal(np.asarray(Image.open(dst / new)), pix[rel])


def test_mvtec3d_validation_and_workers(tmp_path):
    src = tmp_path / "m3d"
    make_m3d(src)
    dst = convert_mvtec3d(src, tmp_path / "out", include_validation=True, products=["bagel"], workers=2)
    assert _listing(dst) == ["bagel", "convert_map.csv"]
    assert _listing(dst / "bagel/train/good") == ["000.png", "001.png", "002.png", "003.png"]
    assert _read_map(dst)["bagel/train/good/003.png"].endswith("bagel/validation/good/rgb/000.png")


def test_mvtec3d_errors(tmp_path, capsys):
    src = tmp_path / "m3d"
    make_m3d(src)
    (src / "bagel/test/crack/gt/001.png").unlink()
    with pytest.raises(DataError, match=r"crack/gt/001\.png .*not found"):
        convert_mvtec3d(src, tmp_path / "o")
    _mask(src / "bagel/test/crack/gt/001.png", 0, size=(20, 15))
    with pytest.raises(DataError, match=r"crack/gt/001\.png is 20x15"):
        convert_mvtec3d(src, tmp_path / "o", workers=2)  # the error crosses the process boundary intact
    assert not (tmp_path / "o").exists()
    with pytest.raises(DataError, match="no class folder"):
        convert_mvtec3d(src, tmp_path / "o", products=["tire"])
    with pytest.raises(DataError, match="no class folders"):
        convert_mvtec3d(src / "bagel/test", tmp_path / "o")
    assert main(["mvtec3d", "--src", str(src), "--dst", str(tmp_path / "o")]) == 2
    assert "20x15" in capsys.readouterr().err

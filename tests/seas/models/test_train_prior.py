"""Stage train_prior (seas.models.train_prior) and the prior choice (seas.models.prior_choice): a prior pretrained
on a run's own normal training images -- exactly its products' train/good images, never a test image or an anomaly
--, resumable, labelled with what it saw; ``model.tiny_prior: auto`` keeps the committed demo prior for the demo."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from seas.data.split import build_split
from seas.models import prior_choice, train_prior as tp_stage
from seas.models.prior_file import read_prior_manifest, sha256_file
from seas.run.errors import CheckpointError
from seas.run.labels import prior_label, tiny_label

RES = 32
#: a few steps of each phase: real forward/backward, seconds on a CPU
RECIPE = {"vae_steps": 4, "vae_batch": 2, "vae_crop": 16, "unet_steps": 4, "unet_batch": 2, "unet_crop": 4,
          "unet_crop_steps": 1, "warmup": 1, "checkpoint_every": 2}
N_GOOD = 4


def _draw(product: str, i: int, defect: bool = False) -> np.ndarray:
    """Products unlike the demo's washer / weave: a greyscale checker tile and a dial with a needle."""
    rng = np.random.default_rng(sum(map(ord, product)) * 1000 + 2 * i + int(defect))
    yy, xx = np.mgrid[:RES, :RES]
    if product == "tile":
        s = int(rng.integers(3, 6))
        img = np.where(((yy // s) + (xx // s)) % 2 == 0, 200, 60).astype(np.uint8)
    else:
        r = np.hypot(yy - RES / 2, xx - RES / 2)
        img = np.where(r < RES * 0.4, 170, 30).astype(np.uint8)
        a = rng.uniform(0, 2 * np.pi)
        for t in np.linspace(0, RES * 0.35, 40):
            img[int(RES / 2 + t * np.sin(a)), int(RES / 2 + t * np.cos(a))] = 255
    img = np.stack([img] * 3, -1)
    if defect:
        img[RES // 3:RES // 3 + 3, 4:RES - 4] = (255, 0, 0)  # a red scratch: never in a prior's training set
    return img


@pytest.fixture(scope="module")
def own_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("own") / "own_data"
    mask = np.zeros((RES, RES), np.uint8)
    mask[RES // 3:RES // 3 + 3, 4:RES - 4] = 255
    for product in ("tile", "dial"):
        p = root / product
        for sub in ("train/good", "test/good", "test/scratch", "ground_truth/scratch"):
            (p / sub).mkdir(parents=True)
        for i in range(N_GOOD):
            Image.fromarray(_draw(product, i)).save(p / "train/good" / f"{i:03d}.png")
        for i in range(2):
            Image.fromarray(_draw(product, 100 + i)).save(p / "test/good" / f"{i:03d}.png")
        for i in range(3):
            Image.fromarray(_draw(product, 200 + i, defect=True)).save(p / "test/scratch" / f"{i:03d}.png")
            Image.fromarray(mask).save(p / "ground_truth/scratch" / f"{i:03d}_mask.png")
    return root


@pytest.fixture
def own_cfg(make_cfg, own_tree, tmp_path):
    cfg = make_cfg({"dataset.name": "custom", "dataset.root": str(own_tree), "model.resolution": RES,
                    "model.tiny_prior": "auto", "model.prior": RECIPE, "split.num_normal_images": 2})
    path = tmp_path / "own.yaml"
    path.write_text(yaml.safe_dump(cfg))
    splits = []
    for product in ("dial", "tile"):
        out = tmp_path / "split" / f"{product}.json"
        build_split(own_tree, product, "1/3", 2).save(out)
        splits.append(str(out))
    return cfg, path, splits


def test_the_prior_sees_exactly_the_train_good_images_and_is_labelled_own_normals(own_cfg, own_tree, tmp_path):
    cfg, path, splits = own_cfg
    out = tmp_path / "prior" / "tiny_prior.safetensors"
    assert tp_stage.main(["--config", str(path), "--splits", *splits, "--out", str(out)]) == 0
    m = read_prior_manifest(out)  # sha256-checked
    want = sorted(str(p) for p in own_tree.glob("*/train/good/*.png"))
    assert sorted(m["data"]["files"]) == want and len(want) == 2 * N_GOOD  # all train/good, not the split's 2
    assert not any("/test/" in f or "ground_truth" in f for f in m["data"]["files"])
    assert m["data"]["source"] == prior_choice.OWN_SOURCE and m["data"]["products"] == ["dial", "tile"]
    assert {n: h for n, h in m["data"]["sha256"].items()} == {
        f"{Path(f).parts[-4]}/{Path(f).name}": sha256_file(f) for f in want}
    assert m["recipe"]["vae_steps"] == RECIPE["vae_steps"] and "checkpoint_every" not in m["recipe"]
    assert m["captions"][1][0] == "a dial" and m["captions"][2][0] == "a tile"
    assert not (tmp_path / "prior" / "tiny_prior.safetensors.work").exists()
    record = json.loads((tmp_path / "prior" / "run_record.json").read_text())
    assert record["stage"] == "prior" and record["images"] == 8 and record["products"] == 2
    # the tiny model assembled from it says what the prior saw
    from seas.models.sd import load_sd
    from seas.models.tiny_sd import read_marker, write_tiny_sd

    model = write_tiny_sd(tmp_path / "m", prior=out)
    marker = read_marker(model)
    assert marker["prior_data"]["source"] == "train_prior" and marker["prior_data"]["images"] == 8
    assert tiny_label(marker) == "tiny-pretrained (own normals: 8 images, 2 products)"
    assert load_sd(model).label == "tiny-pretrained (own normals: 8 images, 2 products)"
    # the prior covers these products (by the hashes of their train/good images), not a changed one
    hashes = {p: [sha256_file(f) for f in sorted((own_tree / p / "train/good").glob("*.png"))]
              for p in ("dial", "tile")}
    assert prior_choice.unseen_products(m, cfg, ["dial", "tile"], hashes.get) == []
    assert prior_choice.unseen_products(m, cfg, ["dial", "tile"], {"dial": ["0" * 64], "tile": hashes["tile"]}.get) \
        == ["dial"]


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.parametrize("stop", [3, RECIPE["vae_steps"] + 2])  # inside the VAE phase / inside the U-Net phase
def test_an_interrupted_prior_resumes_to_the_same_weights(own_cfg, tmp_path, stop):
    cfg, _, splits = own_cfg
    torch.set_num_threads(1)
    full = tp_stage.train_prior(cfg, splits, tmp_path / "full" / "p.safetensors")
    out = tmp_path / "resumed" / "p.safetensors"
    assert tp_stage.train_prior(cfg, splits, out, stop_after=stop) is None
    state = torch.load(out.with_name("p.safetensors.work") / "state.pt", weights_only=False)
    assert state["phase"] == ("vae" if stop < RECIPE["vae_steps"] else "unet") and not out.exists()
    # other settings refuse the saved state
    other = {**cfg, "model": {**cfg["model"], "prior": {**cfg["model"]["prior"], "unet_lr": 5e-4}}}
    with pytest.raises(CheckpointError, match="model.prior.unet_lr"):
        tp_stage.train_prior(other, splits, out)
    assert tp_stage.train_prior(cfg, splits, out) == out
    a, b = _weights(full), _weights(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert read_prior_manifest(out)["resumed_from"]["step"] == (stop if stop < RECIPE["vae_steps"]
                                                                 else stop - RECIPE["vae_steps"])


def test_split_without_train_good_is_refused(own_cfg, tmp_path):
    from seas.data.split import Split
    from seas.run.errors import DataError

    _, _, splits = own_cfg
    s = Split.load(splits[0])
    s.all_train_normals, s.train_normals = [], []
    with pytest.raises(DataError, match="no train/good images"):
        tp_stage.training_files([s])


# ----------------------------------------------------------------------------- the choice and the labels
def test_auto_keeps_the_committed_prior_for_the_demo_and_trains_for_other_data(make_cfg, own_tree):
    demo = make_cfg({"model.tiny_prior": "auto", "model.resolution": 128,
                     "dataset.demo": {"seed": 0, "image_size": 128, "num_train_good": 24, "num_test_good": 6,
                                      "num_per_type": 9}})
    assert prior_choice.choose(demo, ["washer", "weave"]) == prior_choice.PriorChoice(
        "file", str(prior_choice.DEMO_PRIOR))
    assert not prior_choice.auto_trains(demo)
    # the demo with other parameters (other images), another resolution, other products: a prior of their own
    for over in ({"dataset.demo": {"num_train_good": 8}}, {"model.resolution": 64},
                 {"dataset.name": "custom", "dataset.root": str(own_tree)}):
        cfg = make_cfg({"model.tiny_prior": "auto", "model.resolution": 128,
                        "dataset.demo": {"seed": 0, "image_size": 128, "num_train_good": 24, "num_test_good": 6,
                                         "num_per_type": 9}, **over})
        assert prior_choice.choose(cfg, ["washer", "weave"]).mode == "train" and prior_choice.auto_trains(cfg)
    # without SeaS nothing uses the prior: nothing to train
    assert not prior_choice.auto_trains(make_cfg({"model.tiny_prior": "auto", "downstream.methods": ["cutpaste"]}))
    assert prior_choice.choose(make_cfg(), ["washer"]).mode == "random"


def test_a_pinned_demo_prior_on_other_products_warns_and_says_so(make_cfg, own_tree):
    cfg = make_cfg({"dataset.name": "custom", "dataset.root": str(own_tree), "model.resolution": 128,
                    "model.tiny_prior": str(prior_choice.DEMO_PRIOR)})
    choice = prior_choice.choose(cfg, ["dial", "tile"])
    assert choice.mode == "file" and choice.unseen == ("dial", "tile")
    assert "never saw the normal images of dial, tile" in prior_choice.warning_text(choice)
    demo = make_cfg({"model.tiny_prior": str(prior_choice.DEMO_PRIOR), "model.resolution": 128,
                     "dataset.demo": {"seed": 0, "image_size": 128, "num_train_good": 24, "num_test_good": 6,
                                      "num_per_type": 9}})
    assert prior_choice.warning_text(prior_choice.choose(demo, [])) is None  # the demo's products: it saw them


def test_labels_say_what_the_prior_saw():
    own = {"source": "train_prior", "images": 48, "products": ["dial", "tile"]}
    assert prior_label(own) == "tiny-pretrained (own normals: 48 images, 2 products)"
    assert prior_label({"source": "train_prior", "images": 1, "products": ["x"]}) == \
        "tiny-pretrained (own normals: 1 image, 1 product)"
    assert prior_label({"source": "demo", "images": 48, "products": ["washer", "weave"]}) == \
        "tiny-pretrained (demo prior)"
    assert prior_label({"source": "demo"}, ["dial"]) == "tiny-pretrained (demo prior; never saw: dial)"
    assert prior_label(own, ["gear"]) == "tiny-pretrained (prior normals: 48 images, 2 products; never saw: gear)"
    assert prior_label(None) == "tiny-pretrained"  # a model folder built before the marker recorded it
    assert tiny_label({"weights": "random"}) == "tiny-random (not SD v1-4)"


def test_the_committed_prior_manifest_records_the_demo_it_saw():
    m = json.loads(prior_choice.DEMO_PRIOR.with_suffix(".json").read_text())
    assert prior_choice.prior_products(m) == ["washer", "weave"] and "demo" in m["data"]


def test_schema_defaults_are_the_committed_recipe(make_cfg):
    from seas.models.tiny_prior import DEFAULT_RECIPE

    prior = make_cfg()["model"]["prior"]
    assert {k: v for k, v in prior.items() if k not in tp_stage.NON_RECIPE} == DEFAULT_RECIPE


def test_every_table_row_says_which_products_the_pinned_prior_never_saw(make_cfg, own_tree, tmp_path):
    """generator_label (every table's generator_model): a model built from the demo prior on other products says
    'never saw' for each, checked against the run's split manifests; the demo's own products pass."""
    import shutil

    from downstream.report.tables import generator_label
    from seas.models.tiny_sd import TINY_MARKER, _marker
    from seas.run.layout import Layout

    model = tmp_path / "tiny"
    model.mkdir()
    (model / TINY_MARKER).write_text(json.dumps(_marker(0, 128, prior_choice.DEMO_PRIOR)))
    cfg = make_cfg({"dataset.name": "custom", "dataset.root": str(own_tree), "model.resolution": 128,
                    "model.pretrained": str(model), "model.tiny_prior": str(prior_choice.DEMO_PRIOR)})
    run = tmp_path / "run"
    split_dir = Path(Layout(run, cfg).split_dir())
    for product in ("dial", "tile"):
        build_split(own_tree, product, "1/3", 2).save(split_dir / f"{product}.json")
    assert generator_label(cfg, run) == "tiny-pretrained (demo prior; never saw: dial, tile)"
    assert generator_label(cfg) == "tiny-pretrained (demo prior)"  # no run to check against
    shutil.rmtree(split_dir)
    assert generator_label(cfg, run) == "tiny-pretrained (demo prior)"

"""The anomaly detectors (issue 23): each trains and scores on the demo data at a tiny budget through anomalib's
models; draem_pairs and glass_pairs train on the pairs, never on the built-in synthesis; a detector row's scores come from our
metric code (a known anomaly map gives the known answer); the backbones load offline or fail naming the file."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import downstream.detection.models as det_models
from downstream.baselines import generate_baseline
from downstream.detection.backbones import check_detector_backbones, load_backbone_weights, \
    resolve_detector_backbone
from downstream.detection.data import REFERENCES, MissingTargetError
from downstream.evaluate import MEAN_ROW, read_scores
from downstream.segmentation.data import SegTestDataset
from downstream.train_detector import SCORES, TRAIN_JSON, main, train_detector
from seas.data.pairs import IMAGES
from seas.data.split import Split
from seas.run.errors import CheckpointError, ConfigError

torch.set_num_threads(1)
PRODUCT = "weave"
TINY = {"downstream.detector_backbones": {"wide_resnet50_2": "random", "resnet18": "random"},
        "downstream.detector_train.patchcore.batch_size": 4,
        "downstream.detector_train.stfpm.iterations": 2, "downstream.detector_train.stfpm.batch_size": 2,
        "downstream.detector_train.draem.iterations": 2, "downstream.detector_train.draem.batch_size": 2,
        "downstream.detector_train.draem_pairs.iterations": 2, "downstream.detector_train.draem_pairs.batch_size": 2,
        "downstream.normal_images": 4,
        # GLASS: 2 steps of batch 2, 2 gradient-ascent steps, small adaptor/discriminator (the backbone stays WRN-50)
        **{f"downstream.detector_train.{g}.{k}": v for g in ("glass", "glass_pairs")
           for k, v in {"iterations": 2, "batch_size": 2, "step": 2, "pretrain_embed_dim": 64,
                        "target_embed_dim": 64, "discriminator_hidden": 32}.items()}}


def _with_twins(pairs_root: Path, product: str, normal: str) -> None:
    """Give every pair of the product a references/ twin (a training normal stands in for the normal-prompt twin)."""
    for type_dir in (pairs_root / product).iterdir():
        if (type_dir / IMAGES).is_dir():
            (type_dir / REFERENCES).mkdir(exist_ok=True)
            for img in (type_dir / IMAGES).iterdir():
                shutil.copy(normal, type_dir / REFERENCES / img.name)


@pytest.fixture
def setup(make_cfg, split_path, tmp_path):
    cfg = make_cfg(TINY)
    sp = split_path(PRODUCT)
    split = Split.load(sp)
    root = tmp_path / "methods" / "cutpaste"
    generate_baseline(cfg, "cutpaste", split, root / PRODUCT, num_per_type=2, progress=False)
    _with_twins(root, PRODUCT, split.all_train_normals[0])
    return cfg, sp, root


# ----------------------------------------------------------------------------- each detector, tiny budget
@pytest.mark.parametrize("model,params", [("patchcore", 24.86e6), ("stfpm", 5.57e6), ("draem", 97.42e6),
                                          ("draem_pairs", 97.42e6), ("glass", 24.86e6 + 6_273),
                                          ("glass_pairs", 24.86e6 + 6_273)])
def test_each_detector_trains_and_scores_on_the_demo(setup, tmp_path, model, params, capsys):
    cfg, sp, root = setup
    pairs = root if det_models.uses_pairs(model) else None
    t0 = time.process_time()
    info = train_detector(cfg, model, [sp], tmp_path / "out", pairs_root=pairs,
                          method="cutpaste" if pairs else "none")
    cpu = time.process_time() - t0
    rows = read_scores(tmp_path / "out" / SCORES)
    assert [r["product"] for r in rows] == [PRODUCT, MEAN_ROW]
    test = Split.load(sp).test
    assert int(rows[0]["n_images"]) == len(test) and int(rows[0]["n_anomalous"]) == sum(d["label"] for d in test)
    for c in ("pixel_auroc", "image_auroc", "pixel_pro"):
        assert 0 <= rows[0][c] <= 100
    meta = json.loads((tmp_path / "out" / TRAIN_JSON).read_text())
    assert meta == info and meta["family"] == "detector" and meta["anomalib"] == det_models.anomalib_version()
    assert meta["parameters"] == pytest.approx(params, rel=0.01)
    assert meta["backbone_init"] == ("none (trained from scratch)" if "draem" in model else "random-init")
    if model == "glass_pairs":
        assert meta["products"][PRODUCT]["twin_targets"] == meta["products"][PRODUCT]["pairs"] > 0
        assert meta["target"] == "GLASS normal image: normal-prompt twin"
    if model == "draem_pairs":
        assert meta["products"][PRODUCT]["twin_targets"] == meta["products"][PRODUCT]["pairs"] > 0
        assert meta["target"] == "DRAEM target: normal-prompt twin"
    with capsys.disabled():
        print(f"\n[{model}] {meta['parameters'] / 1e6:.2f}M parameters, {cpu:.1f} CPU-s (demo product, tiny budget)")


# ----------------------------------------------------------------------------- the pairs reach DRAEM's batches
def test_draem_pairs_trains_on_the_pairs_and_never_on_the_builtin_synthesis(make_cfg, monkeypatch):
    from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator

    calls = []
    monkeypatch.setattr(PerlinAnomalyGenerator, "forward", lambda self, *a, **k: calls.append(1) or 1 / 0)
    cfg = make_cfg({**TINY, "downstream.detector_train.draem_pairs.iterations": 3,
                    "downstream.detector_train.draem_pairs.anomaly_probability": 1.0})
    det = det_models.build_detector("draem_pairs", cfg)
    assert det.augmenter is None
    rng = np.random.default_rng(0)
    size = 32
    normal = rng.random((3, size, size)).astype(np.float32)
    mask = np.zeros((1, size, size), np.float32)
    mask[0, 5:11, 20:29] = 1  # a known 6x9 mask
    pair = {"image": rng.random((3, size, size)).astype(np.float32), "mask": mask, "target": normal}
    seen = []
    det.batch_hook = seen.append
    det.fit([normal], [pair], seed=0)
    assert len(seen) == 3 and not calls
    b = seen[0]
    assert torch.equal(b["mask"][0], torch.from_numpy(mask)) and torch.equal(b["image"][0], torch.from_numpy(pair["image"]))
    assert torch.equal(b["target"][0], torch.from_numpy(normal))
    # the plain DRAEM calls anomalib's synthesis (what draem_pairs switches off)
    plain = det_models.build_detector("draem", cfg)
    with pytest.raises(ZeroDivisionError):
        plain.fit([normal], seed=0)
    assert calls


# ----------------------------------------------------------------------------- the pairs reach GLASS's batches
def test_glass_pairs_trains_on_the_pairs_and_never_on_the_builtin_synthesis(make_cfg, monkeypatch):
    from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator
    from anomalib.models.image.glass.torch_model import GlassModel

    calls = []
    monkeypatch.setattr(PerlinAnomalyGenerator, "forward", lambda self, *a, **k: calls.append(1) or 1 / 0)
    cfg = make_cfg({**TINY, "downstream.detector_train.glass_pairs.iterations": 3,
                    "downstream.detector_train.glass_pairs.anomaly_probability": 1.0})
    det = det_models.build_detector("glass_pairs", cfg)
    assert isinstance(det.model, GlassModel) and isinstance(det.model.augmentor, det_models.PairSource)
    assert not any(isinstance(m, PerlinAnomalyGenerator) for m in det.model.modules())
    rng = np.random.default_rng(0)
    size = 64
    normal = rng.random((3, size, size)).astype(np.float32)
    mask = np.zeros((1, size, size), np.float32)
    mask[0, 8:24, 30:50] = 1  # a known 16x20 mask
    pair = {"image": rng.random((3, size, size)).astype(np.float32), "mask": mask, "target": normal}
    seen, fed = [], []
    det.batch_hook = seen.append
    orig = GlassModel.forward
    monkeypatch.setattr(GlassModel, "forward", lambda self, img: fed.append(img.clone()) or orig(self, img))
    det.fit([normal], [pair], seed=0)
    assert len(seen) == 3 and not calls and all(np.isfinite(det.history))
    b = seen[0]  # what GLASS's augmentor call returned inside its training forward
    assert torch.equal(b["mask"][0], torch.from_numpy(mask)) and torch.equal(b["image"][0], torch.from_numpy(pair["image"]))
    # GLASS's own img (its normal side) is the pair's clean target
    assert torch.allclose(fed[0][0], det_models._imagenet(torch.from_numpy(normal)[None])[0])
    # an unstaged batch never falls back on a synthesis
    det.model.train()
    with pytest.raises(RuntimeError, match="not staged"):
        det.model(torch.zeros(1, 3, size, size))
    # the plain GLASS calls anomalib's synthesis (what glass_pairs switches off)
    plain = det_models.build_detector("glass", cfg)
    assert isinstance(plain.model.augmentor, PerlinAnomalyGenerator)
    with pytest.raises(ZeroDivisionError):
        plain.fit([normal], seed=0)
    assert calls


def test_glass_backbone_loads_offline_frozen(make_cfg, tmp_path):
    import torchvision

    ref = torchvision.models.wide_resnet50_2()
    path = tmp_path / "wide_resnet50_2-95faca4d.pth"
    torch.save(ref.state_dict(), path)
    cfg = make_cfg({**TINY, "downstream.detector_backbones.wide_resnet50_2": str(path)})
    det = det_models.build_detector("glass", cfg)
    fx = det.model.forward_modules["feature_aggregator"]
    assert det.backbone_init == "pretrained:wide_resnet50_2-95faca4d.pth"
    assert torch.equal(fx.feature_extractor.layer3[0].conv1.weight, ref.layer3[0].conv1.weight)
    assert det.model.pre_trained and not any(p.requires_grad for p in fx.parameters())
    cfg = make_cfg({"downstream.detectors": ["glass_pairs"]})
    with pytest.raises(ConfigError, match="glass uses it.*wide_resnet50_2-95faca4d.pth"):
        check_detector_backbones(cfg, source="cfg.yaml")


def test_a_pair_without_a_twin_is_an_error_or_gets_the_nearest_normal(setup, tmp_path, make_cfg):
    cfg, sp, root = setup
    for twins in (root / PRODUCT).glob(f"*/{REFERENCES}"):
        shutil.rmtree(twins)
    with pytest.raises(MissingTargetError, match="missing_target: nearest_normal"):
        train_detector(cfg, "draem_pairs", [sp], tmp_path / "a", pairs_root=root, method="cutpaste")
    cfg = make_cfg({**TINY, "downstream.detector_train.draem_pairs.missing_target": "nearest_normal"})
    info = train_detector(cfg, "draem_pairs", [sp], tmp_path / "b", pairs_root=root, method="cutpaste")
    assert info["products"][PRODUCT]["nearest_normal_targets"] == info["products"][PRODUCT]["pairs"] > 0
    assert info["target"].endswith("else nearest normal")


# ----------------------------------------------------------------------------- scores come from our metrics
class _KnownAnswer(det_models.Detector):
    """A stand-in detector: maps = the test masks (perfect), image scores = minus the labels (perfectly wrong),
    so the row must read pixel AUROC / AP / PRO 100 and image AUROC 0 -- the max of the map would give 100."""

    name = "draem"

    def __init__(self, cfg, test):
        self.history, self.backbone_init, self.model = [], "random-init", torch.nn.Linear(2, 3)  # 9 parameters
        self.masks = [d["mask"].numpy().astype(np.float32) for d in test]
        self.labels = [d["label"] for d in test]
        self.i = 0

    def fit(self, normals, pairs=(), seed=0):
        pass

    def predict(self, x):
        n = len(x)
        maps = np.stack(self.masks[self.i:self.i + n])
        scores = -np.asarray(self.labels[self.i:self.i + n], np.float64)
        self.i += n
        return maps, scores


def test_a_known_anomaly_map_gives_the_known_scores_through_the_detector_row(setup, tmp_path, monkeypatch):
    cfg, sp, _ = setup
    test = SegTestDataset([str(sp)], cfg["downstream"]["image_size"], cfg["dataset"]["image_policy"])
    monkeypatch.setattr(det_models, "build_detector", lambda name, cfg, device="cpu": _KnownAnswer(cfg, test))
    train_detector(cfg, "draem", [sp], tmp_path / "out")
    row = read_scores(tmp_path / "out" / SCORES)[0]
    for c in ("pixel_auroc", "pixel_ap", "pixel_f1max", "pixel_iou_best", "pixel_pro", "pixel_iou_fixed"):
        assert row[c] == pytest.approx(100.0), c
    assert row["image_auroc"] == pytest.approx(0.0)
    assert json.loads((tmp_path / "out" / TRAIN_JSON).read_text())["parameters"] == 9


def test_the_cli_writes_scores_and_resumes_per_product(setup, write_cfg, tmp_path, monkeypatch):
    cfg, sp, _ = setup
    path, _ = write_cfg(TINY)
    assert main(["--config", str(path), "--model", "draem", "--splits", str(sp), "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / SCORES).is_file() and (tmp_path / "o" / "run_record.json").is_file()
    # a finished product's row in <out>.work/ is reused: the rerun trains nothing
    from downstream.train_detector import train_product
    from seas.run.resume import work_dir

    row, info = train_product(cfg, "draem", sp, None, "none", "cpu")
    work = work_dir(tmp_path / "p")
    work.mkdir()
    from seas.run.stages import fingerprint

    meta = fingerprint(cfg, "train_detector", {"model": "draem"}, model="draem", method="none", splits=[str(sp)],
                       pairs_root="None")
    (work / f"{PRODUCT}.json").write_text(json.dumps({"meta": meta, "row": row, "info": info}, default=float))
    monkeypatch.setattr(det_models, "build_detector", lambda *a, **k: 1 / 0)
    train_detector(cfg, "draem", [sp], tmp_path / "p")
    assert read_scores(tmp_path / "p" / SCORES)[0]["image_auroc"] == pytest.approx(row["image_auroc"])
    assert not work.exists()


# ----------------------------------------------------------------------------- offline backbones
def test_backbones_load_offline_or_fail_naming_the_file(make_cfg, tmp_path, monkeypatch):
    import torchvision
    from anomalib.models.components import TimmFeatureExtractor

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    cfg = make_cfg({"downstream.detectors": ["patchcore", "stfpm"]})
    with pytest.raises(ConfigError, match="wide_resnet50_2-95faca4d.pth"):
        check_detector_backbones(cfg, source="cfg.yaml")
    cfg = make_cfg({"downstream.detectors": ["stfpm"], "downstream.detector_backbones.resnet18": "resnet18-f37072fd.pth"})
    with pytest.raises(ConfigError, match=r"cfg.yaml: downstream.detector_backbones.resnet18: weights file "
                                          r"resnet18-f37072fd.pth not found .*th/hub/checkpoints"):
        check_detector_backbones(cfg, source="cfg.yaml")
    hub = tmp_path / "th" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    ref = torchvision.models.resnet18()
    torch.save(ref.state_dict(), hub / "resnet18-f37072fd.pth")
    assert resolve_detector_backbone(cfg, "resnet18") == hub / "resnet18-f37072fd.pth"
    fx = TimmFeatureExtractor(backbone="resnet18", pre_trained=False, layers=["layer1", "layer2"])
    load_backbone_weights(fx.feature_extractor, hub / "resnet18-f37072fd.pth")
    assert torch.equal(fx.feature_extractor.layer2[0].conv1.weight, ref.layer2[0].conv1.weight)
    # the STFPM teacher is the file's network, the student is not
    det = det_models.build_detector("stfpm", cfg)
    assert det.backbone_init == "pretrained:resnet18-f37072fd.pth"
    assert torch.equal(det.model.teacher_model.feature_extractor.conv1.weight, ref.conv1.weight)
    assert not torch.equal(det.model.student_model.feature_extractor.conv1.weight, ref.conv1.weight)
    (hub / "bad.pth").write_bytes(b"no")
    with pytest.raises(CheckpointError, match="bad.pth"):
        load_backbone_weights(fx.feature_extractor, hub / "bad.pth")

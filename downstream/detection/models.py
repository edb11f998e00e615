"""The detectors: anomalib's torch models driven by a small training loop over our data (no fork of anomalib).

``patchcore``   anomalib ``PatchcoreModel`` (Wide-ResNet-50-2 layer2+layer3 features, coreset memory bank)
``stfpm``       anomalib ``STFPMModel`` (ResNet-18 teacher, student trained with ``STFPMLoss``); the subclass
                :func:`offline_stfpm` builds the teacher from the local weights file instead of timm's download
``draem``       anomalib ``DraemModel`` + ``DraemLoss``, anomalies synthesised by anomalib's
                ``PerlinAnomalyGenerator`` (Perlin noise as the anomaly source: the DTD textures are not downloaded)
``draem_pairs`` the same model and loss with the built-in synthesis off: :class:`DraemPairs` replaces the
                augmenter with a method's generated pairs (image, mask, clean target: downstream.detection.data)

Each detector is built by :func:`build_detector`; ``fit(normals, pairs)`` trains on one product (arrays in [0, 1],
[3,H,W]); ``predict(x)`` takes float[B,3,H,W] in [0, 1] and returns ``(maps float[B,H,W], scores float[B])``.
Maps of the feature-distance detectors (PatchCore, STFPM) are brought to [0, 1) by ``m / (m + t)``, t = the largest
map value over the product's training normals (monotone: every curve metric is unchanged; ``pixel_iou_fixed`` at
0.5 thresholds at the highest normal training score); DRAEM's maps are already probabilities.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from seas.run.errors import ConfigError
from seas.run.runtime import derive_seed

from downstream.detection.backbones import BACKBONE_OF, backbone_label, load_backbone_weights, \
    resolve_detector_backbone

__all__ = ["DETECTORS", "uses_pairs", "anomalib_version", "Detector", "PatchCore", "Stfpm", "Draem", "DraemPairs",
           "offline_stfpm", "build_detector", "detector_seed", "count_parameters"]

log = logging.getLogger(__name__)

DETECTORS = ("patchcore", "stfpm", "draem", "draem_pairs")
IMAGENET_MEAN = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)


def uses_pairs(name: str) -> bool:
    """The ``+ pairs`` variants train on a method's generated pairs (one job per method)."""
    return name.endswith("_pairs")


def anomalib_version() -> str:
    import anomalib

    return str(anomalib.__version__)


def count_parameters(module: nn.Module) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _imagenet(x: torch.Tensor) -> torch.Tensor:
    return (x - IMAGENET_MEAN.to(x)) / IMAGENET_STD.to(x)


def _batches(arrays: Sequence[np.ndarray], batch_size: int):
    for i in range(0, len(arrays), batch_size):
        yield torch.from_numpy(np.stack(arrays[i:i + batch_size]))


class Detector:
    """One product's detector: ``fit`` then ``predict``. Subclasses set :attr:`model`."""

    name = ""
    model: nn.Module
    #: True: the raw maps are feature distances, brought to [0, 1) by m / (m + t) (module docstring)
    distance_maps = True

    def __init__(self, cfg: Mapping, device: torch.device | str = "cpu"):
        self.cfg = cfg
        self.tcfg = cfg["downstream"]["detector_train"][self.name]
        self.device = torch.device(device)
        self.backbone_init = "none (trained from scratch)"
        self.scale = 1.0
        self.history: list[float] = []

    @property
    def parameters(self) -> int:
        return count_parameters(self.model)

    def _raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.model.eval()
        with torch.no_grad():
            out = self.model(x.to(self.device))
        amap = out.anomaly_map
        if amap.dim() == 4:
            amap = amap[:, 0]
        return amap.float().cpu(), out.pred_score.float().reshape(-1).cpu()

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        maps, scores = self._raw(x)
        if self.distance_maps:
            maps, scores = maps.clamp_min(0), scores.clamp_min(0)
            maps, scores = maps / (maps + self.scale), scores / (scores + self.scale)
        return maps, scores

    def calibrate(self, normals: Sequence[np.ndarray]) -> None:
        """t of m / (m + t): the largest raw map value over the training normals."""
        if not self.distance_maps:
            return
        bs = int(self.tcfg["batch_size"])
        t = max(float(self._raw(x)[0].max()) for x in _batches(normals, bs))
        self.scale = t if t > 0 else 1.0

    def fit(self, normals: Sequence[np.ndarray], pairs: Sequence[dict] = (), seed: int = 0) -> None:
        raise NotImplementedError


# ----------------------------------------------------------------------------- PatchCore
class PatchCore(Detector):
    name = "patchcore"

    def __init__(self, cfg: Mapping, device="cpu"):
        super().__init__(cfg, device)
        from anomalib.models.image.patchcore.torch_model import PatchcoreModel

        weights = resolve_detector_backbone(cfg, BACKBONE_OF[self.name])
        self.model = PatchcoreModel(layers=list(self.tcfg["layers"]), backbone=BACKBONE_OF[self.name],
                                    pre_trained=False, num_neighbors=int(self.tcfg["num_neighbors"]))
        if weights is not None:
            load_backbone_weights(self.model.feature_extractor.feature_extractor, weights)
        self.backbone_init = backbone_label(weights)
        self.model.to(self.device)

    def fit(self, normals, pairs=(), seed: int = 0) -> None:
        torch.manual_seed(seed % 2**32)
        self.model.train()
        with torch.no_grad():
            for x in _batches(normals, int(self.tcfg["batch_size"])):
                self.model(_imagenet(x).to(self.device))
        self.model.subsample_embedding(float(self.tcfg["coreset_ratio"]))
        self.calibrate(normals)

    def _raw(self, x):
        return super()._raw(_imagenet(x))


# ----------------------------------------------------------------------------- STFPM
def _stfpm_classes():
    from anomalib.models.image.stfpm.torch_model import STFPMModel

    return STFPMModel


def offline_stfpm(layers: Sequence[str], backbone: str, weights: Path | None) -> nn.Module:
    """anomalib's ``STFPMModel`` whose teacher comes from ``weights`` (or stays random), never from a download:
    ``STFPMModel.__init__`` asks timm for pretrained weights; this subclass builds the same two feature extractors
    with ``pre_trained=False`` and loads the local file into the teacher."""
    from anomalib.models.components import TimmFeatureExtractor
    from anomalib.models.image.stfpm.anomaly_map import AnomalyMapGenerator

    base = _stfpm_classes()

    class _Offline(base):
        def __init__(self):
            nn.Module.__init__(self)
            self.tiler = None
            self.backbone = backbone
            self.teacher_model = TimmFeatureExtractor(backbone=backbone, pre_trained=False, layers=layers).eval()
            if weights is not None:
                load_backbone_weights(self.teacher_model.feature_extractor, weights)
            self.student_model = TimmFeatureExtractor(backbone=backbone, pre_trained=False, layers=layers,
                                                      requires_grad=True)
            for p in self.teacher_model.parameters():
                p.requires_grad = False
            self.anomaly_map_generator = AnomalyMapGenerator()

    _Offline.__name__ = _Offline.__qualname__ = "OfflineSTFPM"
    return _Offline()


class Stfpm(Detector):
    name = "stfpm"

    def __init__(self, cfg: Mapping, device="cpu"):
        super().__init__(cfg, device)
        from anomalib.models.image.stfpm.loss import STFPMLoss

        weights = resolve_detector_backbone(cfg, BACKBONE_OF[self.name])
        self.model = offline_stfpm(list(self.tcfg["layers"]), BACKBONE_OF[self.name], weights).to(self.device)
        self.loss = STFPMLoss()
        self.backbone_init = backbone_label(weights)

    def fit(self, normals, pairs=(), seed: int = 0) -> None:
        t = self.tcfg
        torch.manual_seed(seed % 2**32)
        opt = torch.optim.SGD(self.model.student_model.parameters(), lr=t["lr"], momentum=t["momentum"],
                              weight_decay=t["weight_decay"])
        rng = np.random.default_rng(seed)
        for _ in range(int(t["iterations"])):
            idx = rng.integers(0, len(normals), size=int(t["batch_size"]))
            x = _imagenet(torch.from_numpy(np.stack([normals[i] for i in idx]))).to(self.device)
            self.model.train()
            self.model.teacher_model.eval()
            teacher, student = self.model(x)
            loss = self.loss(teacher, student)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.history.append(float(loss.detach()))
        self.calibrate(normals)

    def _raw(self, x):
        return super()._raw(_imagenet(x))


# ----------------------------------------------------------------------------- DRAEM
class Draem(Detector):
    """DRAEM trained on the product's normals; :meth:`augment` is anomalib's Perlin-noise synthesis."""

    name = "draem"
    distance_maps = False

    def __init__(self, cfg: Mapping, device="cpu"):
        super().__init__(cfg, device)
        from anomalib.models.image.draem.loss import DraemLoss
        from anomalib.models.image.draem.torch_model import DraemModel

        self.model = DraemModel(sspcab=False).to(self.device)
        self.loss = DraemLoss()
        self.augmenter = self._builtin_augmenter()
        #: called with every training batch (image, mask, target) after augmentation (tests capture batches)
        self.batch_hook: Callable[[dict], None] | None = None

    def _builtin_augmenter(self):
        from anomalib.data.utils.generators.perlin import PerlinAnomalyGenerator

        return PerlinAnomalyGenerator(anomaly_source_path=None, probability=float(self.tcfg["anomaly_probability"]),
                                      blend_factor=(0.1, 1.0))

    def draw(self, rng, normals, pairs) -> dict:
        """One training batch before augmentation: clean normals."""
        idx = rng.integers(0, len(normals), size=int(self.tcfg["batch_size"]))
        return {"image": torch.from_numpy(np.stack([normals[i] for i in idx]))}

    def augment(self, batch: dict) -> dict:
        """anomalib's synthesis: the augmented image and its mask; the target is the clean input."""
        image, mask = self.augmenter(batch["image"])
        return {"image": image, "mask": mask, "target": batch["image"]}

    def fit(self, normals, pairs=(), seed: int = 0) -> None:
        t = self.tcfg
        torch.manual_seed(seed % 2**32)
        opt = torch.optim.Adam(self.model.parameters(), lr=t["lr"])
        rng = np.random.default_rng(seed)
        for _ in range(int(t["iterations"])):
            batch = self.augment(self.draw(rng, normals, pairs))
            if self.batch_hook is not None:
                self.batch_hook(batch)
            self.model.train()
            dev = {k: v.to(self.device) for k, v in batch.items()}
            reconstruction, prediction = self.model(dev["image"])
            loss = self.loss(dev["target"], reconstruction, dev["mask"], prediction)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            self.history.append(float(loss.detach()))


class DraemPairs(Draem):
    """DRAEM whose synthetic anomalies are a method's generated pairs: the built-in augmenter is removed
    (``augmenter = None``), each batch sample is a pair (image, its mask, its clean target) with probability
    ``anomaly_probability`` (the built-in synthesis' own rate), else a training normal (empty mask, itself as
    target). ``pairs``: dicts ``{image, mask, target}`` of arrays (downstream.train_detector prepares them)."""

    name = "draem_pairs"

    def _builtin_augmenter(self):
        return None

    def draw(self, rng, normals, pairs) -> dict:
        if not len(pairs):
            raise ConfigError("draem_pairs: no generated pairs to train on")
        n = int(self.tcfg["batch_size"])
        take_pair = rng.random(n) < float(self.tcfg["anomaly_probability"])
        images, masks, targets = [], [], []
        for use_pair in take_pair:
            if use_pair:
                p = pairs[int(rng.integers(0, len(pairs)))]
                images.append(p["image"])
                masks.append(p["mask"])
                targets.append(p["target"])
            else:
                x = normals[int(rng.integers(0, len(normals)))]
                images.append(x)
                masks.append(np.zeros((1, *x.shape[1:]), np.float32))
                targets.append(x)
        return {"image": torch.from_numpy(np.stack(images)), "mask": torch.from_numpy(np.stack(masks)),
                "target": torch.from_numpy(np.stack(targets))}

    def augment(self, batch: dict) -> dict:
        return batch


_CLASSES = {"patchcore": PatchCore, "stfpm": Stfpm, "draem": Draem, "draem_pairs": DraemPairs}


def build_detector(name: str, cfg: Mapping, device="cpu") -> Detector:
    if name not in _CLASSES:
        raise ConfigError(f"unknown detector {name!r} (choose from {', '.join(DETECTORS)})")
    return _CLASSES[name](cfg, device)


def detector_seed(cfg: Mapping, name: str, method: str, product: str) -> int:
    return derive_seed(cfg["seed"], "detector", name, method, product)

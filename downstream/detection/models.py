"""The detectors: anomalib's torch models driven by a small training loop over our data (no fork of anomalib).

``patchcore``   anomalib ``PatchcoreModel`` (Wide-ResNet-50-2 layer2+layer3 features, coreset memory bank)
``stfpm``       anomalib ``STFPMModel`` (ResNet-18 teacher, student trained with ``STFPMLoss``); the subclass
                :func:`offline_stfpm` builds the teacher from the local weights file instead of timm's download
``draem``       anomalib ``DraemModel`` + ``DraemLoss``, anomalies synthesised by anomalib's
                ``PerlinAnomalyGenerator`` (Perlin noise as the anomaly source: the DTD textures are not downloaded)
``draem_pairs`` the same model and loss with the built-in synthesis off: :class:`DraemPairs` replaces the
                augmenter with a method's generated pairs (image, mask, clean target: downstream.detection.data)
``glass``       anomalib ``GlassModel`` (Wide-ResNet-50-2 layer2+layer3 features, frozen and loaded offline; feature
                adaptor + discriminator trained on global (Gaussian noise + gradient ascent) and local anomalies, the
                local ones from anomalib's ``PerlinAnomalyGenerator``, Perlin noise as the source: no DTD download)
``glass_pairs`` the same model and loss with the image-level synthesis off: :class:`GlassPairs` replaces
                ``GlassModel.augmentor`` with :class:`PairSource`, which hands GLASS a method's pairs (pair image and
                mask as the local anomaly, its clean target as the normal image); the feature-level global
                synthesis (gradient ascent on the target's features) is GLASS's own and stays

Each detector is built by :func:`build_detector`; ``fit(normals, pairs)`` trains on one product (arrays in [0, 1],
[3,H,W]); ``predict(x)`` takes float[B,3,H,W] in [0, 1] and returns ``(maps float[B,H,W], scores float[B])``.
Maps of the feature-distance detectors (PatchCore, STFPM) are brought to [0, 1) by ``m / (m + t)``, t = the largest
map value over the product's training normals (monotone: every curve metric is unchanged; ``pixel_iou_fixed`` at
0.5 thresholds at the highest normal training score); DRAEM's and GLASS's maps are already probabilities.
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
           "offline_stfpm", "Glass", "GlassPairs", "PairSource", "build_detector", "detector_seed", "count_parameters"]

log = logging.getLogger(__name__)

DETECTORS = ("patchcore", "stfpm", "draem", "draem_pairs", "glass", "glass_pairs")
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


# ----------------------------------------------------------------------------- GLASS
class Glass(Detector):
    """GLASS trained on the product's normals with anomalib's own synthesis. The backbone is built with
    ``pre_trained=False`` (no download), filled from the local weights file (or left random) and frozen: GLASS's
    ``pre_trained=True`` path (features under no_grad, backbone not optimised), switched on after construction.
    Optimisers as anomalib's ``Glass.configure_optimizers``: AdamW(discriminator, 2 lr), Adam(projection, lr, wd
    1e-5); the centre of the normal features is recomputed at every pass over the normals (``on_train_epoch_start``)."""

    name = "glass"
    distance_maps = False  # the discriminator's sigmoid output

    def __init__(self, cfg: Mapping, device="cpu"):
        super().__init__(cfg, device)
        from anomalib.models.image.glass.torch_model import GlassModel

        t = self.tcfg
        size = int(cfg["downstream"]["image_size"])
        weights = resolve_detector_backbone(cfg, BACKBONE_OF["glass"])
        self.model = GlassModel(
            input_shape=(size, size), anomaly_source_path=None, backbone=BACKBONE_OF["glass"], pre_trained=False,
            layers=list(t["layers"]), pretrain_embed_dim=int(t["pretrain_embed_dim"]),
            target_embed_dim=int(t["target_embed_dim"]), patchsize=int(t["patchsize"]),
            patchstride=int(t["patchstride"]), pre_projection=int(t["pre_projection"]),
            discriminator_layers=int(t["discriminator_layers"]), discriminator_hidden=int(t["discriminator_hidden"]),
            step=int(t["step"]), svd=int(bool(t["svd"])), gaussian_noise_std=float(t["gaussian_noise_std"]),
            radius_quantile=float(t["radius_quantile"]),
            focal_loss_quantile_threshold=float(t["focal_loss_quantile_threshold"]), mining=bool(t["mining"]))
        extractor = self.model.forward_modules["feature_aggregator"]
        if weights is not None:
            load_backbone_weights(extractor.feature_extractor, weights)
        for p in extractor.parameters():
            p.requires_grad = False
        self.model.pre_trained = True  # frozen backbone: GLASS's pretrained-feature path
        self.backbone_init = backbone_label(weights)
        self._hook_synthesis()
        self.model.to(self.device)
        #: called with every training batch GLASS consumes (glass_pairs: image, mask, target; tests capture them)
        self.batch_hook: Callable[[dict], None] | None = None

    def _hook_synthesis(self) -> None:
        """glass keeps anomalib's ``augmentor`` (PerlinAnomalyGenerator, probability 1, dual mask)."""

    def draw(self, rng, normals, pairs) -> dict:
        """One training batch: clean normals in [0, 1] (GLASS synthesises its anomalies inside ``forward``)."""
        idx = rng.integers(0, len(normals), size=int(self.tcfg["batch_size"]))
        return {"image": torch.from_numpy(np.stack([normals[i] for i in idx]))}

    def stage(self, batch: dict) -> torch.Tensor:
        """The images GLASS's ``forward`` takes as normal (it synthesises the anomalies of this batch itself)."""
        if self.batch_hook is not None:
            self.batch_hook(batch)
        return batch["image"]

    def _centre(self, normals) -> None:
        from types import SimpleNamespace

        loader = [SimpleNamespace(image=_imagenet(x)) for x in _batches(normals, int(self.tcfg["batch_size"]))]
        self.model.calculate_center(loader, self.device)

    def fit(self, normals, pairs=(), seed: int = 0) -> None:
        t = self.tcfg
        torch.manual_seed(seed % 2**32)
        m, lr = self.model, float(t["lr"])
        opts = [torch.optim.AdamW(m.discriminator.parameters(), lr=2 * lr)]
        if m.pre_projection > 0:
            opts.append(torch.optim.Adam(m.projection.parameters(), lr=lr, weight_decay=1e-5))
        rng = np.random.default_rng(seed)
        per_pass = max(1, -(-len(normals) // int(t["batch_size"])))
        for it in range(int(t["iterations"])):
            if it % per_pass == 0:
                self._centre(normals)
            img = self.stage(self.draw(rng, normals, pairs))
            m.train()
            for o in opts:
                o.zero_grad(set_to_none=True)
            *_, loss = m(_imagenet(img).to(self.device))
            loss.backward()
            for o in reversed(opts):  # anomalib steps the projection, then the discriminator
                o.step()
            self.history.append(float(loss.detach()))

    def _raw(self, x):
        return super()._raw(_imagenet(x))


class PairSource(nn.Module):
    """Stands in for ``GlassModel.augmentor`` (called as ``aug, mask = augmentor(img_raw)`` on the [0, 1] images):
    returns the staged pair images and masks of the batch whose clean targets GLASS was given as ``img``. Anything
    else (nothing staged, another batch) is an error, so the built-in synthesis can never be fallen back on."""

    def __init__(self):
        super().__init__()
        self.staged: dict | None = None
        self.hook: Callable[[dict], None] | None = None

    def forward(self, img_raw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b = self.staged
        if b is None or b["target"].shape != img_raw.shape or not torch.allclose(
                b["target"].to(img_raw), img_raw, atol=1e-4):
            raise RuntimeError("glass_pairs: GLASS asked for anomalies of a batch that was not staged")
        self.staged = None
        if self.hook is not None:
            self.hook(b)
        return b["image"].to(img_raw), b["mask"].to(img_raw)


class GlassPairs(Glass):
    """GLASS whose local (image-level) synthetic anomalies are a method's generated pairs: ``augmentor`` is a
    :class:`PairSource`; each batch sample is a pair (GLASS's normal image = the pair's clean target, its anomaly =
    the pair image with its mask) with probability ``anomaly_probability`` (GLASS's own: 1), else a training normal
    with an empty mask (itself on both sides). ``pairs``: dicts ``{image, mask, target}`` (as for draem_pairs)."""

    name = "glass_pairs"

    def _hook_synthesis(self) -> None:
        self.model.augmentor = PairSource()

    def draw(self, rng, normals, pairs) -> dict:
        if not len(pairs):
            raise ConfigError("glass_pairs: no generated pairs to train on")
        return DraemPairs.draw(self, rng, normals, pairs)

    def stage(self, batch: dict) -> torch.Tensor:
        """The pairs go to the PairSource (which calls the batch hook when GLASS takes them); GLASS's ``img``
        is the clean targets."""
        src = self.model.augmentor
        src.hook, src.staged = self.batch_hook, batch
        return batch["target"]


_CLASSES = {"patchcore": PatchCore, "stfpm": Stfpm, "draem": Draem, "draem_pairs": DraemPairs, "glass": Glass,
            "glass_pairs": GlassPairs}


def build_detector(name: str, cfg: Mapping, device="cpu") -> Detector:
    if name not in _CLASSES:
        raise ConfigError(f"unknown detector {name!r} (choose from {', '.join(DETECTORS)})")
    return _CLASSES[name](cfg, device)


def detector_seed(cfg: Mapping, name: str, method: str, product: str) -> int:
    return derive_seed(cfg["seed"], "detector", name, method, product)

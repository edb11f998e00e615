"""Refined Mask Prediction (RMP) branch: predicts the anomaly mask of an image from frozen-generator features.

Architecture (docs/METHOD.md, "Refined Mask Prediction"; the authors' module), every input channel count read from the models' configs:

* U-Net features: outputs of ``unet.up_blocks[1]`` (SD v1-4: 1280 ch at 32x32) and ``unet.up_blocks[2]``
  (640 ch at 64x64), captured with forward hooks (``rmp.unet_features``, paper Tab. 25: any increasing list of
  up-block indices). The time embedding does not condition the branch.
* Coarse branch: 1x1 convs without bias to 128 and 64 ch (``rmp.reduce_channels``, one per feature), every map not
  at the latent size (the 32x32 one) upsampled to it (bilinear, align_corners False), concatenated coarse -> fine
  [low, high] (192 ch), then one diffusers
  ``Transformer2DModel`` (GroupNorm -> proj_in -> ``rmp.num_layers`` self-attention ``BasicTransformerBlock`` s
  with plain LayerNorm, 8 heads x 24 -> proj_out -> + residual) -> F 192 ch at the latent resolution.
* Mask Refinement Modules (MRM), one per x2 level of the VAE (SD: 3, to 128, 256, 512 px), each on its input u and
  the VAE feature v of that resolution: ``u' = up2(u)`` (bilinear, align_corners True); ``m = C131(u')``;
  ``out = CBR1(v) * (m + CBR1(u') + C131(m)) + u'`` with CBR = conv (no bias) + BatchNorm + ReLU and
  C131 = CBR 1x1 -> CBR 3x3 -> CBR 1x1. The VAE features are the outputs of ``vae.decoder.up_blocks[0..n-1]``
  (SD: 512 ch 128², 512 ch 256², 256 ch 512²) or, for the encoder ablation, of
  ``vae.encoder.down_blocks[n-1..0].resnets[-1]``.
* One shared head (BatchNorm, ReLU, 3x3 conv to 2 classes; softmax in :func:`anomaly_probability`) gives both the
  coarse mask (on F of every image) and the image-size mask. ``forward(..., n_refined=k)`` refines the first k
  images through the MRMs and upsamples F of the others (normal images in training) bilinearly to the image size,
  and runs the head once over that joint batch, so BatchNorm sees abnormal and normal images together (the image-
  size head runs before the coarse one, as in the authors' module: the order of BatchNorm's running-statistics
  updates).

Switches: ``mrm: false`` (no MRM: F upsampled to the image size for every image), ``progressive: false`` (one MRM
straight from the latent to the image size with the finest VAE feature), ``vae_features: encoder``,
``unet_features`` (which up blocks, Tab. 25), ``mrm_variant`` (the MRM's structure, Tab. 28:
:func:`mrm_fuse`).

Feature capture: :func:`capture_outputs` registers forward hooks and removes them on exit;
:func:`unet_features` / :func:`vae_features` wrap the frozen models' forward passes.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Iterator, Mapping, Sequence
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from seas.run.config import check_rmp_features as check_features, check_rmp_widths as check_widths
from seas.run.errors import CheckpointError, ConfigError
from seas.run.runtime import atomic_write_text, save_safetensors_atomic
# Lazy imports: diffusers / safetensors are imported where the branch is built or loaded (heavy optional imports).

__all__ = [
    "RMPArch",
    "RMPOutput",
    "RefinedMaskPredictor",
    "MaskRefinementModule",
    "MRM_VARIANTS",
    "MRM_PAPER_CASES",
    "MRM_MODULES",
    "mrm_fuse",
    "latent_size",
    "arch_from_configs",
    "capture_outputs",
    "unet_feature_modules",
    "vae_feature_modules",
    "unet_features",
    "vae_features",
    "anomaly_probability",
]


# ----------------------------------------------------------------------------- architecture arguments
@dataclass(frozen=True)
class RMPArch:
    """Everything needed to rebuild the branch (stored as ``rmp.json`` next to the weights)."""

    unet_channels: tuple[int, ...]  # outputs of unet.up_blocks[i] for i in unet_features
    vae_channels: tuple[int, ...]  # VAE features, coarse -> fine (one per x2 level)
    reduce_channels: tuple[int, ...] = (128, 64)
    num_layers: int = 4
    num_heads: int = 8
    head_dim: int = 24
    norm_num_groups: int = 32
    mrm: bool = True
    progressive: bool = True
    vae_features: str = "decoder"
    unet_features: tuple[int, ...] = (1, 2)  # indices of unet.up_blocks, coarse -> fine
    mrm_variant: str = "full"

    @property
    def dim(self) -> int:
        return sum(self.reduce_channels)

    @property
    def upscale(self) -> int:
        """Image side / coarse (latent) side."""
        return 2 ** len(self.vae_channels)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["unet_channels"] = list(self.unet_channels)
        d["vae_channels"] = list(self.vae_channels)
        d["reduce_channels"] = list(self.reduce_channels)
        d["unet_features"] = list(self.unet_features)
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "RMPArch":
        d = dict(d)
        for k in ("unet_channels", "vae_channels", "reduce_channels", "unet_features"):
            if k in d:
                d[k] = tuple(int(v) for v in d[k])
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise CheckpointError(f"rmp.json: unknown architecture keys {sorted(unknown)} (a checkpoint of an older "
                                  "RMP architecture: retrain the RMP)")
        return cls(**d)


def _cfg_get(config, key, default=None):
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


def arch_from_configs(unet_config, vae_config, rmp_cfg: Mapping | None = None) -> RMPArch:
    """Derive the architecture from a diffusers U-Net config and AutoencoderKL config (dicts or FrozenDicts).

    ``rmp_cfg`` is the run config's ``rmp`` section (switches ``mrm``, ``mrm_variant``, ``progressive``,
    ``vae_features``, ``unet_features``; widths ``reduce_channels``, ``num_heads``, ``head_dim``, ``num_layers``,
    ``norm_num_groups``). Only the input channel counts come from the models.
    """
    rmp_cfg = rmp_cfg or {}
    boc = list(_cfg_get(unet_config, "block_out_channels"))
    ups = list(_cfg_get(unet_config, "up_block_types"))
    if len(boc) != 4 or len(ups) != 4:
        raise CheckpointError(
            f"RMP expects a U-Net with 4 resolution levels like SD v1-4 (up_blocks[2] at the latent size); "
            f"got block_out_channels={boc}"
        )
    rev = boc[::-1]
    vboc = list(_cfg_get(vae_config, "block_out_channels"))
    n = len(vboc) - 1  # number of x2 levels = log2(VAE scale factor)
    if n < 1:
        raise CheckpointError(f"VAE with block_out_channels={vboc} has no up-sampling level")
    kind = rmp_cfg.get("vae_features", "decoder")
    if kind == "decoder":
        vae_channels = tuple(vboc[::-1][i] for i in range(n))
    elif kind == "encoder":
        vae_channels = tuple(vboc[n - 1 - i] for i in range(n))
    else:
        raise CheckpointError(f"rmp.vae_features: unknown value {kind!r}")
    blocks = tuple(int(i) for i in rmp_cfg.get("unet_features", (1, 2)))
    if any(not 0 <= i < len(ups) for i in blocks):
        raise ConfigError(f"rmp.unet_features = {list(blocks)}: the U-Net has up_blocks[0..{len(ups) - 1}]")
    red = tuple(int(c) for c in rmp_cfg.get("reduce_channels", (128, 64)))
    check_features(blocks, red)
    heads, hdim = int(rmp_cfg.get("num_heads", 8)), int(rmp_cfg.get("head_dim", 24))
    groups = int(rmp_cfg.get("norm_num_groups", 32))
    check_widths(red, heads, hdim, groups)
    variant = rmp_cfg.get("mrm_variant", "full")
    if variant not in MRM_VARIANTS:
        raise ConfigError(f"rmp.mrm_variant: unknown value {variant!r} (one of {list(MRM_VARIANTS)})")
    return RMPArch(
        unet_channels=tuple(int(rev[i]) for i in blocks),
        vae_channels=tuple(int(c) for c in vae_channels),
        reduce_channels=red,
        num_layers=int(rmp_cfg.get("num_layers", 4)),
        num_heads=heads,
        head_dim=hdim,
        norm_num_groups=groups,
        mrm=bool(rmp_cfg.get("mrm", True)),
        progressive=bool(rmp_cfg.get("progressive", True)),
        vae_features=kind,
        unet_features=blocks,
        mrm_variant=variant,
    )


# ----------------------------------------------------------------------------- modules
def _cbr(cin: int, cout: int, k: int) -> nn.Sequential:
    """CBR: conv (no bias) + BatchNorm + ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def _c131(dim: int) -> nn.Sequential:
    """C131: CBR 1x1 -> CBR 3x3 -> CBR 1x1."""
    return nn.Sequential(_cbr(dim, dim, 1), _cbr(dim, dim, 3), _cbr(dim, dim, 1))


#: ``rmp.mrm_variant`` (paper Tab. 28): the structures :func:`mrm_fuse` computes. ``one_conv`` / ``one_block`` /
#: ``full`` are the paper's cases (a) / (b) / (c) (Sec. A.8: "without conv blocks" -- one convolution alone; "one
#: conv block" of two 1x1 and one 3x3 convolutions; "chained conv blocks"), the others component ablations of (c)
MRM_VARIANTS = ("full", "one_block", "one_conv", "additive", "no_branches", "no_residual")
#: the paper's letter of each variant it prints (Tab. 28)
MRM_PAPER_CASES = {"one_conv": "(a)", "one_block": "(b)", "full": "(c)"}
#: the modules of one MRM per variant: project = CBR1(v), mid = C131(u'), skip = CBR1(u'), post = C131(m)
MRM_MODULES = {"full": ("project", "mid", "skip", "post"), "one_block": ("project", "mid", "skip"),
               "one_conv": ("project", "skip"), "additive": ("project", "mid", "skip", "post"),
               "no_branches": ("project", "mid"), "no_residual": ("project", "mid", "skip", "post")}


def mrm_fuse(variant: str, v: torch.Tensor, u: torch.Tensor, m: torch.Tensor | None = None,
             skip: torch.Tensor | None = None, post: torch.Tensor | None = None) -> torch.Tensor:
    """One MRM's output from its pieces: ``v = CBR1(vae feature)``, ``u`` the upsampled input, ``m = C131(u)``,
    ``skip = CBR1(u)``, ``post = C131(m)`` (each variant reads only its own, :data:`MRM_MODULES`).

    ``full`` (the method, Tab. 28 (c)): ``v * (m + skip + post) + u``; ``one_block`` ((b), one conv block):
    ``v * (m + skip) + u``; ``one_conv`` ((a), one convolution alone): ``v * skip + u``; ``additive``:
    ``v + (m + skip + post) + u``; ``no_branches``: ``v * m + u``; ``no_residual``: ``v * (m + skip + post)``.
    """
    if variant not in MRM_VARIANTS:
        raise ValueError(f"unknown MRM variant {variant!r} (one of {list(MRM_VARIANTS)})")
    given = {"mid": m, "skip": skip, "post": post}
    lacking = [k for k in MRM_MODULES[variant][1:] if given[k] is None]
    if lacking:
        raise ValueError(f"MRM variant {variant!r} needs the {', '.join(lacking)} branches")
    if variant == "no_branches":
        return v * m + u
    if variant == "one_conv":
        return v * skip + u
    if variant == "one_block":
        return v * (m + skip) + u
    if variant == "full":
        return v * (m + skip + post) + u
    if variant == "additive":
        return v + (m + skip + post) + u
    return v * (m + skip + post)  # no_residual


class MaskRefinementModule(nn.Module):
    """``u' = up(u)``; ``m = C131(u')``; ``out = CBR1(v) * (m + CBR1(u') + C131(m)) + u'`` (``variant`` "full";
    the others: :func:`mrm_fuse`; only the modules a variant uses are built, :data:`MRM_MODULES`)."""

    def __init__(self, dim: int, vae_channels: int, scale: int = 2, variant: str = "full"):
        super().__init__()
        if variant not in MRM_VARIANTS:
            raise ValueError(f"unknown MRM variant {variant!r} (one of {list(MRM_VARIANTS)})")
        self.scale = scale
        self.variant = variant
        mods = MRM_MODULES[variant]
        self.project = _cbr(vae_channels, dim, 1)  # CBR1(v)
        if "mid" in mods:
            self.mid = _c131(dim)  # m = C131(u')
        if "skip" in mods:
            self.skip = _cbr(dim, dim, 1)  # CBR1(u')
        if "post" in mods:
            self.post = _c131(dim)  # C131(m)

    def forward(self, x: torch.Tensor, vae_feature: torch.Tensor) -> torch.Tensor:
        u = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=True)
        if vae_feature.shape[-2:] != u.shape[-2:]:
            raise ValueError(
                f"MRM: VAE feature {tuple(vae_feature.shape[-2:])} does not match the upsampled map {tuple(u.shape[-2:])}"
            )
        mods = MRM_MODULES[self.variant]
        v = self.project(vae_feature.to(u.dtype))
        m = self.mid(u) if "mid" in mods else None
        skip = self.skip(u) if "skip" in mods else None
        post = self.post(m) if "post" in mods else None
        return mrm_fuse(self.variant, v, u, m, skip, post)


def _head(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(dim), nn.ReLU(), nn.Conv2d(dim, 2, 3, padding=1))


@dataclass
class RMPOutput:
    coarse_logits: torch.Tensor  # [B, 2, h, w] at the latent resolution
    fine_logits: torch.Tensor  # [B, 2, H, W] at the image resolution


class RefinedMaskPredictor(nn.Module):
    """The RMP branch. ``forward(unet_feats, vae_feats=None, n_refined=None)``; see the module docstring."""

    def __init__(self, arch: RMPArch):
        super().__init__()
        from diffusers import Transformer2DModel

        self.arch = arch
        dim = arch.dim
        try:
            check_features(arch.unet_features, arch.reduce_channels)
            check_widths(arch.reduce_channels, arch.num_heads, arch.head_dim, arch.norm_num_groups)
        except ConfigError as e:
            raise CheckpointError(f"RMP architecture: {e}") from None
        if len(arch.unet_channels) != len(arch.unet_features):
            raise CheckpointError(f"RMP architecture: {len(arch.unet_channels)} U-Net channel counts for the "
                                  f"{len(arch.unet_features)} features {list(arch.unet_features)}")
        # one 1x1 reduction per U-Net feature, coarse -> fine (default: up_blocks[1] -> 128, up_blocks[2] -> 64)
        self.reduce = nn.ModuleList(nn.Conv2d(c, r, 1, bias=False)
                                    for c, r in zip(arch.unet_channels, arch.reduce_channels))
        self.transformer = Transformer2DModel(num_attention_heads=arch.num_heads, attention_head_dim=arch.head_dim,
                                              in_channels=dim, num_layers=arch.num_layers, cross_attention_dim=None,
                                              norm_num_groups=arch.norm_num_groups, use_linear_projection=False)
        if arch.mrm:
            if arch.progressive:
                self.mrms = nn.ModuleList(MaskRefinementModule(dim, c, 2, arch.mrm_variant) for c in arch.vae_channels)
            else:
                self.mrms = nn.ModuleList([MaskRefinementModule(dim, arch.vae_channels[-1], arch.upscale,
                                                                arch.mrm_variant)])
        else:
            self.mrms = nn.ModuleList()
        self.head = _head(dim)

    # -- pieces
    def coarse_features(self, unet_feats: Sequence[torch.Tensor]) -> torch.Tensor:
        """F̂ ``[B, dim, h, w]`` at the latent size from the U-Net features (``arch.unet_features``, coarse -> fine;
        default f_low at h/2, f_high at h)."""
        feats = list(unet_feats)
        blocks = self.arch.unet_features
        if len(feats) != len(blocks):
            raise ValueError(f"RMP: expected {len(blocks)} U-Net features (up_blocks {list(blocks)}), got {len(feats)}")
        dtype = self.reduce[0].weight.dtype
        size = latent_size(blocks[-1], feats[-1].shape[-2:])
        maps = []
        for conv, f in zip(self.reduce, feats):
            f = conv(f.to(dtype))
            if f.shape[-2:] != size:
                f = F.interpolate(f, size=size, mode="bilinear", align_corners=False)
            maps.append(f)
        x = torch.cat(maps, dim=1)
        return self.transformer(x, return_dict=False)[0]

    def refine(self, feats: torch.Tensor, vae_feats: Sequence[torch.Tensor] | None) -> torch.Tensor:
        """Image-size features from F̂ through the MRMs (``mrm: false``: bilinear upsampling)."""
        if not self.arch.mrm:
            return self.upsample(feats)
        if vae_feats is None:
            raise ValueError("RMP: the MRMs need the VAE features of the refined images")
        vae_feats = list(vae_feats)
        if self.arch.progressive:
            if len(vae_feats) != len(self.mrms):
                raise ValueError(f"RMP: expected {len(self.mrms)} VAE features, got {len(vae_feats)}")
            x = feats
            for mrm, v in zip(self.mrms, vae_feats):
                x = mrm(x, v)
            return x
        return self.mrms[0](feats, vae_feats[-1])

    def upsample(self, feats: torch.Tensor) -> torch.Tensor:
        size = (feats.shape[-2] * self.arch.upscale, feats.shape[-1] * self.arch.upscale)
        return F.interpolate(feats, size=size, mode="bilinear", align_corners=False)

    def forward(self, unet_feats: Sequence[torch.Tensor], vae_feats: Sequence[torch.Tensor] | None = None,
                n_refined: int | None = None) -> RMPOutput:
        """Coarse and image-size logits of every image. The first ``n_refined`` images (default: all) go through
        the MRMs with ``vae_feats`` (features of those images only); the others' F̂ is upsampled."""
        feats = self.coarse_features(unet_feats)
        b = feats.shape[0]
        n = b if n_refined is None else int(n_refined)
        if not 0 <= n <= b:
            raise ValueError(f"RMP: n_refined={n} for a batch of {b}")
        parts = []
        if n:
            parts.append(self.refine(feats[:n], vae_feats))
        if n < b:
            parts.append(self.upsample(feats[n:]))
        fine = self.head(parts[0] if len(parts) == 1 else torch.cat(parts))
        coarse = self.head(feats)
        return RMPOutput(coarse, fine)


def anomaly_probability(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the 2 classes; the anomaly channel [B, H, W]."""
    return logits.float().softmax(dim=1)[:, 1]


def set_inference_mode(model: RefinedMaskPredictor, bn_batch_stats: bool = False) -> RefinedMaskPredictor:
    """eval() for inference; ``bn_batch_stats`` keeps BatchNorm on batch statistics (the authors' quirk)."""
    model.eval()
    if bn_batch_stats:
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.train()
    return model


# ----------------------------------------------------------------------------- feature capture
@contextlib.contextmanager
def capture_outputs(modules: Sequence[nn.Module]) -> Iterator[list]:
    """Register a forward hook on each module; the yielded list holds each one's latest output.

    Hooks are removed on exit, also after an exception. A module returning a tuple contributes its first element.
    """
    store: list = [None] * len(modules)
    handles = []

    def make(i):
        def hook(_mod, _inp, out):
            store[i] = out[0] if isinstance(out, (tuple, list)) else out

        return hook

    try:
        for i, m in enumerate(modules):
            handles.append(m.register_forward_hook(make(i)))
        yield store
    finally:
        for h in handles:
            h.remove()


def latent_size(block: int, side: Sequence[int]) -> tuple[int, int]:
    """The latent (coarse-mask) size from the spatial size ``side`` of ``unet.up_blocks[block]``'s output: the
    up blocks of a 4-level SD U-Net end at 1/4, 1/2, 1 and 1 x the latent side (the first three upsample x2)."""
    f = 2 ** max(0, 2 - int(block))
    return int(side[0]) * f, int(side[1]) * f


def unet_feature_modules(unet, blocks: Sequence[int] = (1, 2)) -> list[nn.Module]:
    """``[up_blocks[i] for i in blocks]`` of a diffusers UNet2DConditionModel (default: [1], [2], the method)."""
    return [unet.up_blocks[i] for i in blocks]


def vae_feature_modules(vae, kind: str, n: int) -> list[nn.Module]:
    """The VAE modules whose outputs feed the MRMs, coarse -> fine."""
    if kind == "decoder":
        return [vae.decoder.up_blocks[i] for i in range(n)]
    if kind == "encoder":
        return [vae.encoder.down_blocks[n - 1 - i].resnets[-1] for i in range(n)]
    raise ValueError(f"unknown VAE feature kind {kind!r}")


def unet_features(unet, latents, timesteps, encoder_hidden_states, take: slice | None = None,
                  blocks: Sequence[int] = (1, 2)):
    """One U-Net forward with hooks: returns (noise_pred, features), the outputs of ``up_blocks[i] for i in
    blocks`` (default (f_low, f_high) of up_blocks[1], [2]) as a tuple, sliced by ``take``."""
    with capture_outputs(unet_feature_modules(unet, blocks)) as store:
        pred = unet(latents, timesteps, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]
    feats = tuple(store) if take is None else tuple(f[take] for f in store)
    return pred, feats


class _DecodeDone(Exception):
    """Raised by a forward hook to stop a VAE decode once the last feature the RMP reads exists."""


def vae_features(vae, latents: torch.Tensor, kind: str, n: int) -> list:
    """The MRM features of ``latents`` (in the U-Net's scaled space), coarse -> fine.

    ``decoder``: the outputs of ``vae.decoder.up_blocks[0..n-1]``; the decode stops there (a forward hook ends it
    after the last feature), so the decoder's last up block and ``conv_out`` at full resolution -- about a fifth of
    an SD v1-4 decode, which the branch never reads -- are not computed. ``encoder`` (ablation): the latents are
    decoded fully and the image re-encoded; the features are the encoder's.
    """
    sf = vae.config.scaling_factor
    if kind == "decoder":
        mods = vae_feature_modules(vae, "decoder", n)

        def stop(_mod, _inp, _out):
            raise _DecodeDone

        with capture_outputs(mods) as store:
            handle = mods[-1].register_forward_hook(stop)  # after the capture hook of the same module
            try:
                vae.decode(latents / sf, return_dict=False)
            except _DecodeDone:
                pass
            finally:
                handle.remove()
        return list(store)
    decoded = vae.decode(latents / sf, return_dict=False)[0]
    with capture_outputs(vae_feature_modules(vae, "encoder", n)) as store:
        vae.encode(decoded)
    return list(store)


def num_vae_levels(vae) -> int:
    return len(vae.config.block_out_channels) - 1


def check_compatible(arch: RMPArch, unet, vae) -> None:
    """Raise CheckpointError when an RMP checkpoint does not fit the generator it is used with."""
    want = arch_from_configs(unet.config, vae.config, {
        "vae_features": arch.vae_features, "unet_features": list(arch.unet_features),
        "reduce_channels": list(arch.reduce_channels), "num_heads": arch.num_heads, "head_dim": arch.head_dim,
        "norm_num_groups": arch.norm_num_groups})
    if (want.unet_channels, want.vae_channels) != (arch.unet_channels, arch.vae_channels):
        raise CheckpointError(
            f"RMP checkpoint expects U-Net channels {arch.unet_channels}, VAE channels {arch.vae_channels}; the "
            f"generator has {want.unet_channels}, {want.vae_channels}"
        )



# ----------------------------------------------------------------------------- checkpoint
WEIGHTS_NAME = "rmp.safetensors"
ARCH_NAME = "rmp.json"


def save_rmp(model: RefinedMaskPredictor, out_dir, extra: Mapping | None = None) -> None:
    """Write ``rmp.safetensors`` + ``rmp.json`` (architecture + ``extra`` info) into ``out_dir`` (atomic per file)."""
    out_dir = Path(out_dir)
    save_safetensors_atomic(model.state_dict(), out_dir / WEIGHTS_NAME)
    info = {"arch": model.arch.to_dict(), **dict(extra or {})}
    atomic_write_text(out_dir / ARCH_NAME, json.dumps(info, indent=2, sort_keys=True))


def load_rmp(ckpt_dir, device="cpu", dtype=torch.float32) -> RefinedMaskPredictor:
    """Rebuild the branch from ``rmp.json`` and load ``rmp.safetensors``; CheckpointError names a missing file."""
    from safetensors.torch import load_file

    ckpt_dir = Path(ckpt_dir)
    for name in (ARCH_NAME, WEIGHTS_NAME):
        if not (ckpt_dir / name).is_file():
            raise CheckpointError(f"{ckpt_dir / name}: RMP checkpoint file missing (run seas.method.train_rmp first)")
    from seas.data.integrity import check_checkpoint_dir

    check_checkpoint_dir(ckpt_dir)  # the weights against their header, before building anything
    try:
        info = json.loads((ckpt_dir / ARCH_NAME).read_text())
        arch = RMPArch.from_dict(info["arch"])
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{ckpt_dir / ARCH_NAME}: not a valid RMP architecture file ({e})") from e
    model = RefinedMaskPredictor(arch)
    state = load_file(str(ckpt_dir / WEIGHTS_NAME))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{ckpt_dir / WEIGHTS_NAME}: weights do not match rmp.json (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.to(device=device, dtype=dtype)

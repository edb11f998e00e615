"""Refined Mask Prediction (RMP) branch: predicts the anomaly mask of an image from frozen-generator features.

Architecture (seas-method.md, "Refined Mask Prediction"), with every channel count read from the models' configs:

* U-Net features: outputs of ``unet.up_blocks[1]`` (SD v1-4: 1280 ch at 32x32) and ``unet.up_blocks[2]``
  (640 ch at 64x64), captured with forward hooks, plus the U-Net's time embedding (output of
  ``unet.time_embedding``), which conditions the transformer blocks (adaptive LayerNorm).
* Coarse branch: 1x1 convs to 128 and 64 ch, the low-resolution map upsampled to the fine grid, concatenated
  (192 ch), 4 self-attention ``diffusers.models.attention.BasicTransformerBlock`` (8 heads x 24) -> F 192 ch at
  the latent resolution; a 2-class head gives the coarse mask.
* Mask Refinement Modules (MRM), one per x2 level of the VAE (SD: 3, to 128, 256, 512 px): upsample x2, two chained
  conv blocks + a 1x1 skip, multiplied by the VAE feature of that resolution (1x1 conv to 192 ch), plus the upsampled
  input. The VAE features are the outputs of ``vae.decoder.up_blocks[0..n-1]`` (SD: 512 ch 128², 512 ch 256²,
  256 ch 512²) or, for the encoder ablation, of ``vae.encoder.down_blocks[n-1..0].resnets[-1]``.
* Head: BatchNorm, ReLU, 3x3 conv to 2 classes (softmax is applied by :func:`anomaly_probability`).

Normal images (and the ``mrm: false`` / no-VAE-feature path) skip the MRMs: their coarse features are upsampled
to the image size directly before the fine head (``mrm: false`` upsamples the coarse logits instead).

Feature capture: :func:`capture_outputs` registers forward hooks and removes them on exit;
:func:`unet_features` / :func:`vae_features` wrap the frozen models' forward passes.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .errors import CheckpointError, ConfigError

__all__ = [
    "RMPArch",
    "RMPOutput",
    "RefinedMaskPredictor",
    "MaskRefinementModule",
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

    unet_channels: tuple[int, int]  # outputs of unet.up_blocks[1], unet.up_blocks[2]
    temb_dim: int  # U-Net time-embedding width
    vae_channels: tuple[int, ...]  # VAE features, coarse -> fine (one per x2 level)
    reduce_channels: tuple[int, int] = (128, 64)
    num_layers: int = 4
    num_heads: int = 8
    head_dim: int = 24
    mrm: bool = True
    progressive: bool = True
    vae_features: str = "decoder"

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
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "RMPArch":
        d = dict(d)
        for k in ("unet_channels", "vae_channels", "reduce_channels"):
            if k in d:
                d[k] = tuple(int(v) for v in d[k])
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise CheckpointError(f"rmp.json: unknown architecture keys {sorted(unknown)}")
        return cls(**d)


def _cfg_get(config, key, default=None):
    if isinstance(config, Mapping):
        return config.get(key, default)
    return getattr(config, key, default)


def arch_from_configs(unet_config, vae_config, rmp_cfg: Mapping | None = None) -> RMPArch:
    """Derive the architecture from a diffusers U-Net config and AutoencoderKL config (dicts or FrozenDicts).

    ``rmp_cfg`` is the run config's ``rmp`` section (switches ``mrm``, ``progressive``, ``vae_features``; widths
    ``reduce_channels``, ``num_heads``, ``head_dim``, ``num_layers``). Only the input channel counts come from
    the models.
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
    temb_dim = _cfg_get(unet_config, "time_embedding_dim") or boc[0] * 4
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
    red = tuple(int(c) for c in rmp_cfg.get("reduce_channels", (128, 64)))
    heads, hdim = int(rmp_cfg.get("num_heads", 8)), int(rmp_cfg.get("head_dim", 24))
    if heads * hdim != sum(red):
        raise ConfigError(f"rmp.num_heads x rmp.head_dim = {heads} x {hdim} must equal sum(rmp.reduce_channels) "
                          f"= {sum(red)}")
    return RMPArch(
        unet_channels=(int(rev[1]), int(rev[2])),
        temb_dim=int(temb_dim),
        vae_channels=tuple(int(c) for c in vae_channels),
        reduce_channels=red,
        num_layers=int(rmp_cfg.get("num_layers", 4)),
        num_heads=heads,
        head_dim=hdim,
        mrm=bool(rmp_cfg.get("mrm", True)),
        progressive=bool(rmp_cfg.get("progressive", True)),
        vae_features=kind,
    )


# ----------------------------------------------------------------------------- modules
def _conv(cin: int, cout: int, k: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class MaskRefinementModule(nn.Module):
    """Upsample by ``scale``; two chained conv blocks plus a 1x1 skip, summed; times the projected VAE feature;
    plus the upsampled input.

    block 1: a = 1x1(u) + [1x1 -> 3x3](u)
    block 2: b = a + [1x1 -> 3x3 -> 1x1](a)
    out    = (b + skip1x1(u)) * proj1x1(vae_feature) + u
    """

    def __init__(self, dim: int, vae_channels: int, scale: int = 2):
        super().__init__()
        self.scale = scale
        self.b1_a = _conv(dim, dim, 1)
        self.b1_b = nn.Sequential(_conv(dim, dim, 1), _conv(dim, dim, 3))
        self.b2 = nn.Sequential(_conv(dim, dim, 1), _conv(dim, dim, 3), _conv(dim, dim, 1))
        self.skip = nn.Conv2d(dim, dim, 1)
        self.proj = nn.Conv2d(vae_channels, dim, 1)

    def forward(self, x: torch.Tensor, vae_feature: torch.Tensor) -> torch.Tensor:
        u = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        if vae_feature.shape[-2:] != u.shape[-2:]:
            raise ValueError(
                f"MRM: VAE feature {tuple(vae_feature.shape[-2:])} does not match the upsampled map {tuple(u.shape[-2:])}"
            )
        a = self.b1_a(u) + self.b1_b(u)
        b = a + self.b2(a)
        y = (b + self.skip(u)) * self.proj(vae_feature.to(u.dtype))
        return y + u


def _head(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.BatchNorm2d(dim), nn.ReLU(inplace=True), nn.Conv2d(dim, 2, 3, padding=1))


@dataclass
class RMPOutput:
    coarse_logits: torch.Tensor  # [B, 2, h, w] at the latent resolution
    fine_logits: torch.Tensor  # [B, 2, H, W] at the image resolution


class RefinedMaskPredictor(nn.Module):
    """The RMP branch. ``forward(unet_feats, temb, vae_feats=None)``; see the module docstring."""

    def __init__(self, arch: RMPArch):
        super().__init__()
        from diffusers.models.attention import BasicTransformerBlock

        self.arch = arch
        c_low, c_high = arch.unet_channels
        r_low, r_high = arch.reduce_channels
        dim = arch.dim
        if arch.num_heads * arch.head_dim != dim:
            raise CheckpointError(f"RMP: num_heads*head_dim = {arch.num_heads}*{arch.head_dim} != feature dim {dim}")
        self.reduce_low = nn.Conv2d(c_low, r_low, 1)
        self.reduce_high = nn.Conv2d(c_high, r_high, 1)
        self.blocks = nn.ModuleList(
            BasicTransformerBlock(
                dim,
                arch.num_heads,
                arch.head_dim,
                norm_type="ada_norm_continuous",
                ada_norm_continous_conditioning_embedding_dim=arch.temb_dim,
                ada_norm_bias=True,
                activation_fn="geglu",
            )
            for _ in range(arch.num_layers)
        )
        self.coarse_head = _head(dim)
        if arch.mrm:
            if arch.progressive:
                self.mrms = nn.ModuleList(MaskRefinementModule(dim, c, 2) for c in arch.vae_channels)
            else:
                self.mrms = nn.ModuleList([MaskRefinementModule(dim, arch.vae_channels[-1], arch.upscale)])
        else:
            self.mrms = nn.ModuleList()
        self.fine_head = _head(dim)

    # -- pieces
    def coarse_features(self, unet_feats: Sequence[torch.Tensor], temb: torch.Tensor) -> torch.Tensor:
        low, high = unet_feats
        dtype = self.reduce_low.weight.dtype
        high = self.reduce_high(high.to(dtype))
        low = self.reduce_low(low.to(dtype))
        low = F.interpolate(low, size=high.shape[-2:], mode="bilinear", align_corners=False)
        x = torch.cat([low, high], dim=1)  # [B, dim, h, w]
        b, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # [B, h*w, dim]
        cond = {"pooled_text_emb": temb.to(dtype)}
        for blk in self.blocks:
            tokens = blk(tokens, added_cond_kwargs=cond)
        return tokens.transpose(1, 2).reshape(b, c, h, w)

    def refine(self, feats: torch.Tensor, vae_feats: Sequence[torch.Tensor] | None) -> torch.Tensor:
        """Fine logits at the image resolution from the coarse features F."""
        size = (feats.shape[-2] * self.arch.upscale, feats.shape[-1] * self.arch.upscale)
        if vae_feats is None or not self.arch.mrm:
            up = F.interpolate(feats, size=size, mode="bilinear", align_corners=False)
            return self.fine_head(up)
        vae_feats = list(vae_feats)
        if self.arch.progressive:
            if len(vae_feats) != len(self.mrms):
                raise ValueError(f"RMP: expected {len(self.mrms)} VAE features, got {len(vae_feats)}")
            x = feats
            for mrm, v in zip(self.mrms, vae_feats):
                x = mrm(x, v)
        else:
            x = self.mrms[0](feats, vae_feats[-1])
        return self.fine_head(x)

    def forward(
        self,
        unet_feats: Sequence[torch.Tensor],
        temb: torch.Tensor,
        vae_feats: Sequence[torch.Tensor] | None = None,
    ) -> RMPOutput:
        feats = self.coarse_features(unet_feats, temb)
        coarse = self.coarse_head(feats)
        if not self.arch.mrm:
            size = (feats.shape[-2] * self.arch.upscale, feats.shape[-1] * self.arch.upscale)
            fine = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
        else:
            fine = self.refine(feats, vae_feats)
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


def unet_feature_modules(unet) -> list[nn.Module]:
    """[up_blocks[1], up_blocks[2], time_embedding] of a diffusers UNet2DConditionModel."""
    return [unet.up_blocks[1], unet.up_blocks[2], unet.time_embedding]


def vae_feature_modules(vae, kind: str, n: int) -> list[nn.Module]:
    """The VAE modules whose outputs feed the MRMs, coarse -> fine."""
    if kind == "decoder":
        return [vae.decoder.up_blocks[i] for i in range(n)]
    if kind == "encoder":
        return [vae.encoder.down_blocks[n - 1 - i].resnets[-1] for i in range(n)]
    raise ValueError(f"unknown VAE feature kind {kind!r}")


def unet_features(unet, latents, timesteps, encoder_hidden_states, take: slice | None = None):
    """One U-Net forward with hooks: returns (noise_pred, (f_low, f_high), temb), features sliced by ``take``."""
    with capture_outputs(unet_feature_modules(unet)) as store:
        pred = unet(latents, timesteps, encoder_hidden_states=encoder_hidden_states, return_dict=False)[0]
    low, high, temb = store
    if take is not None:
        low, high, temb = low[take], high[take], temb[take]
    return pred, (low, high), temb


def vae_features(vae, latents: torch.Tensor, kind: str, n: int):
    """Decode ``latents`` (in the U-Net's scaled space) and collect the MRM features, coarse -> fine.

    Returns (decoded image in [-1, 1], features). ``kind == "encoder"`` (ablation) re-encodes the decoded image and
    takes the encoder's features instead of the decoder's.
    """
    sf = vae.config.scaling_factor
    if kind == "decoder":
        with capture_outputs(vae_feature_modules(vae, "decoder", n)) as store:
            decoded = vae.decode(latents / sf, return_dict=False)[0]
        return decoded, list(store)
    decoded = vae.decode(latents / sf, return_dict=False)[0]
    with capture_outputs(vae_feature_modules(vae, "encoder", n)) as store:
        vae.encode(decoded)
    return decoded, list(store)


def num_vae_levels(vae) -> int:
    return len(vae.config.block_out_channels) - 1


def check_compatible(arch: RMPArch, unet, vae) -> None:
    """Raise CheckpointError when an RMP checkpoint does not fit the generator it is used with."""
    want = arch_from_configs(unet.config, vae.config, {"vae_features": arch.vae_features})
    if (want.unet_channels, want.temb_dim, want.vae_channels) != (arch.unet_channels, arch.temb_dim, arch.vae_channels):
        raise CheckpointError(
            f"RMP checkpoint expects U-Net channels {arch.unet_channels}, time embedding {arch.temb_dim}, VAE channels "
            f"{arch.vae_channels}; the generator has {want.unet_channels}, {want.temb_dim}, {want.vae_channels}"
        )



# ----------------------------------------------------------------------------- checkpoint
WEIGHTS_NAME = "rmp.safetensors"
ARCH_NAME = "rmp.json"


def save_rmp(model: RefinedMaskPredictor, out_dir, extra: Mapping | None = None) -> None:
    """Write ``rmp.safetensors`` + ``rmp.json`` (architecture + ``extra`` info) into ``out_dir`` (atomic per file)."""
    import json
    from pathlib import Path

    from .runtime import atomic_write_text, save_safetensors_atomic

    out_dir = Path(out_dir)
    save_safetensors_atomic(model.state_dict(), out_dir / WEIGHTS_NAME)
    info = {"arch": model.arch.to_dict(), **dict(extra or {})}
    atomic_write_text(out_dir / ARCH_NAME, json.dumps(info, indent=2, sort_keys=True))


def load_rmp(ckpt_dir, device="cpu", dtype=torch.float32) -> RefinedMaskPredictor:
    """Rebuild the branch from ``rmp.json`` and load ``rmp.safetensors``; CheckpointError names a missing file."""
    import json
    from pathlib import Path

    from safetensors.torch import load_file

    ckpt_dir = Path(ckpt_dir)
    for name in (ARCH_NAME, WEIGHTS_NAME):
        if not (ckpt_dir / name).is_file():
            raise CheckpointError(f"{ckpt_dir / name}: RMP checkpoint file missing (run seas.train_rmp first)")
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

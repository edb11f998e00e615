"""Capturing cross-attention maps for the DA loss through diffusers' attention-processor API.

:func:`install_capture` gives the cross-attention layers (``attn2``) of the U-Net's down-path blocks at the chosen
resolutions a :class:`CaptureCrossAttnProcessor`; every other attention layer gets diffusers' fused
``AttnProcessor2_0``. The capture processor *is* ``AttnProcessor2_0``: the layer's output is always the fused
kernel's ordinary attention over the whole batch. While it runs, forward hooks on the layer's ``to_q`` / ``to_k``
keep the projected queries and keys of the first ``store.rows`` images (the abnormal half), from which the map is
computed separately (docs/METHOD.md, "Generator fine-tuning"):

* ``da_map = "pixels"`` (the paper's appendix A.2 and the authors' code, the default): for each image, head and
  text position k, ``A_k = softmax over the h*w query (pixel) positions of  Q K^T * scale`` -- a distribution over
  pixels per token;
* ``da_map = "tokens"`` (ablation; Prompt-to-Prompt's map): the softmax over the 77 text positions per pixel.

Scores and softmax run in float32 with autocast off. The :class:`AttentionStore` keeps, per resolution, the maps
averaged over heads and over that resolution's captured layers: ``store.maps() -> {h: [rows, h, w, 77]}``.

Resolutions are named as at SD v1-4's 64x64 latent (512 px): 64 -> ``down_blocks[0]``, 32 -> ``[1]``,
16 -> ``[2]``, 8 -> ``mid_block`` (the paper's A^4: the authors' "8" map; :func:`capture_layer_names`); on a
smaller latent the same blocks run at proportionally smaller sizes, and the maps are keyed by their actual side.

With gradient checkpointing the U-Net re-runs its blocks during backward: call ``store.freeze()`` after the
forward pass so the re-run computes the same operations without recording again.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from seas.run.errors import ConfigError

__all__ = ["AttentionStore", "CaptureCrossAttnProcessor", "attention_map", "DA_MAPS", "capture_layer_names", "install_capture",
           "restore_default_processors", "SD_LATENT"]

SD_LATENT = 64  # latent side of SD v1-4 at 512 px, the reference for resolution names


class AttentionStore:
    """Per-resolution sums of head-averaged cross-attention probabilities of the first ``rows`` images."""

    def __init__(self) -> None:
        self.rows = 0
        self.recording = False
        self.latent_hw: tuple[int, int] | None = None
        self._sum: dict[int, torch.Tensor] = {}
        self._count: dict[int, int] = {}

    def begin(self, rows: int, latent_hw: tuple[int, int] | None = None) -> None:
        """Start a forward pass whose first ``rows`` images are captured (0: none, everything stays fused)."""
        self.rows, self.recording, self.latent_hw = int(rows), int(rows) > 0, latent_hw
        self._sum, self._count = {}, {}

    def freeze(self) -> None:
        """Stop recording but keep the row split (gradient-checkpoint re-runs must repeat the same computation)."""
        self.recording = False

    def end(self) -> None:
        self.rows, self.recording = 0, False
        self._sum, self._count = {}, {}

    def add(self, size: int, probs: torch.Tensor) -> None:
        if not self.recording:
            return
        if size in self._sum:
            self._sum[size] = self._sum[size] + probs
            self._count[size] += 1
        else:
            self._sum[size], self._count[size] = probs, 1

    @property
    def counts(self) -> dict[int, int]:
        return dict(self._count)

    def maps(self) -> dict[int, torch.Tensor]:
        """{h: ``[rows, h, w, T]``} float32 probabilities averaged over heads and over layers of that size."""
        out = {}
        for size, s in self._sum.items():
            mean = s / self._count[size]
            b, hw, t = mean.shape
            w = hw // size
            out[size] = mean.reshape(b, size, w, t)
        return out


DA_MAPS = ("pixels", "tokens")


def attention_map(query: torch.Tensor, key: torch.Tensor, scale: float, mode: str = "pixels",
                  bias: torch.Tensor | None = None) -> torch.Tensor:
    """Head-averaged attention map ``[B, P, T]`` of queries ``[B, heads, P, d]`` and keys ``[B, heads, T, d]``.

    ``mode="pixels"``: softmax over the P query positions (each token's map sums to 1 over the pixels);
    ``"tokens"``: softmax over the T key positions (each pixel's row sums to 1). ``bias``: an additive attention
    mask broadcastable to ``[B, heads, P, T]``. Computed in float32.
    """
    if mode not in DA_MAPS:
        raise ValueError(f"attention_map: unknown mode {mode!r} ({', '.join(DA_MAPS)})")
    scores = torch.matmul(query.float(), key.float().transpose(-1, -2)) * float(scale)
    if bias is not None:
        scores = scores + bias.float()
    probs = scores.softmax(dim=-2 if mode == "pixels" else -1)
    return probs.mean(dim=1)


class CaptureCrossAttnProcessor(AttnProcessor2_0):
    """``AttnProcessor2_0`` (output unchanged) that also records the DA map of the first ``store.rows`` images."""

    def __init__(self, store: AttentionStore, factor: int, mode: str = "pixels") -> None:
        super().__init__()
        if mode not in DA_MAPS:
            raise ConfigError(f"generator.da_map: unknown value {mode!r} ({', '.join(DA_MAPS)})")
        self.store = store
        self.factor = int(factor)  # latent side / map side
        self.mode = mode

    def _map_hw(self, hw: int) -> tuple[int, int]:
        if self.store.latent_hw is not None:
            h, w = self.store.latent_hw[0] // self.factor, self.store.latent_hw[1] // self.factor
        else:
            h = w = math.isqrt(hw)
        if h * w != hw:
            raise ValueError(f"cross-attention over {hw} positions is not a {h}x{w} map (latent "
                             f"{self.store.latent_hw}, factor {self.factor}); pass latent_hw to store.begin")
        return h, w

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        k = self.store.rows
        if k <= 0 or encoder_hidden_states is None:
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if k > hidden_states.shape[0]:
            raise ValueError(f"attention store expects {k} captured rows, the batch has {hidden_states.shape[0]}")
        kept: dict[str, torch.Tensor] = {}

        def keep(name):
            def hook(_mod, _inp, out):
                kept[name] = out[:k]
            return hook

        handles = [attn.to_q.register_forward_hook(keep("q")), attn.to_k.register_forward_hook(keep("k"))]
        try:
            out = super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        finally:
            for h in handles:
                h.remove()
        heads = attn.heads
        q, key = kept["q"], kept["k"]
        d = q.shape[-1] // heads
        q = q.reshape(k, -1, heads, d).transpose(1, 2)
        key = key.reshape(k, -1, heads, d).transpose(1, 2)
        if getattr(attn, "norm_q", None) is not None:
            q = attn.norm_q(q)
        if getattr(attn, "norm_k", None) is not None:
            key = attn.norm_k(key)
        bias = None
        if attention_mask is not None:
            bias = attn.prepare_attention_mask(attention_mask[:k], key.shape[2], k).reshape(k, heads, -1, key.shape[2])
        with torch.autocast(q.device.type, enabled=False):
            amap = attention_map(q, key, attn.scale, self.mode, bias)  # [k, P, 77]
        mh, _ = self._map_hw(amap.shape[1])
        self.store.add(mh, amap)
        return out


def _down_block_index(resolution: int) -> int:
    factor = SD_LATENT // int(resolution)
    if factor < 1 or SD_LATENT % int(resolution) or factor & (factor - 1):
        raise ConfigError(f"generator.da_resolutions: {resolution} is not 64/2**k")
    return int(math.log2(factor))


def capture_layer_names(unet, resolutions: Iterable[int]) -> dict[str, int]:
    """{processor name: factor} of the cross-attention layers at ``resolutions`` (SD-64 names).

    64 / 32 / 16 are the ``attn2`` layers of ``down_blocks[0]`` / ``[1]`` / ``[2]``. 8 (the paper's A^4, Tab. 24,
    "down-4"): SD v1-4's ``down_blocks[3]`` is a ``DownBlock2D`` without attention, and the only cross-attention at
    8x8 is the mid block's; the authors' U-Net files the mid block's map under "8" (``cross_map_di["8"]``, their
    ``models/modules/_unet_2d_condition.py``), so 8 taps ``mid_block``'s ``attn2`` (at the bottom of the down path,
    factor 8 at SD's latent).
    """
    names = list(unet.attn_processors)
    out: dict[str, int] = {}
    for res in resolutions:
        i = _down_block_index(res)
        last = len(unet.down_blocks) - 1
        if i < len(unet.down_blocks) and getattr(unet.down_blocks[i], "attentions", None):
            prefix, where = f"down_blocks.{i}.", f"down_blocks[{i}]"
        elif i == last and getattr(getattr(unet, "mid_block", None), "attentions", None):
            prefix, where = "mid_block.", f"mid_block (down_blocks[{i}] has no attention)"
        else:
            raise ConfigError(f"generator.da_resolutions: resolution {res} is down_blocks[{i}], which has no "
                              "cross-attention layers in this U-Net")
        sel = [n for n in names if n.startswith(prefix) and n.endswith(".attn2.processor")]
        if not sel:
            raise ConfigError(f"generator.da_resolutions: no attn2 layers found in {where}")
        out.update({n: 1 << i for n in sel})
    return out


def install_capture(unet, store: AttentionStore, resolutions: Sequence[int], others=AttnProcessor2_0,
                    mode: str = "pixels") -> list[str]:
    """Capture processors (map ``mode``: pixels | tokens) on the chosen layers, ``others()`` (fused
    ``AttnProcessor2_0``) everywhere else.

    Returns the captured processor names.
    """
    chosen = capture_layer_names(unet, resolutions)
    procs = {}
    shared: dict[int, CaptureCrossAttnProcessor] = {}
    for name in unet.attn_processors:
        if name in chosen:
            f = chosen[name]
            procs[name] = shared.setdefault(f, CaptureCrossAttnProcessor(store, f, mode))
        else:
            procs[name] = others()
    unet.set_attn_processor(procs)
    return sorted(chosen)


def restore_default_processors(unet) -> None:
    """Back to the fused processor everywhere (``set_default_attn_processor`` refuses custom processors)."""
    unet.set_attn_processor(AttnProcessor2_0())

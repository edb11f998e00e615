"""Capturing cross-attention probabilities for the DA loss through diffusers' attention-processor API.

:func:`install_capture` gives the cross-attention layers (``attn2``) of the U-Net's down-path blocks at the chosen
resolutions a :class:`CaptureCrossAttnProcessor`; every other attention layer gets diffusers' fused
``AttnProcessor2_0``. The capture processor computes the softmax probabilities explicitly (with the layer's own
``get_attention_scores``) only for the first ``store.rows`` images of the batch — the abnormal half — and runs
the fused kernel of ``AttnProcessor2_0`` on the rest. The :class:`AttentionStore` keeps, per resolution, the maps
averaged over heads and over that resolution's layers: ``store.maps() -> {h: [rows, h, w, 77]}``.

Resolutions are named as at SD v1-4's 64×64 latent (512 px): 64 -> ``down_blocks[0]``, 32 -> ``[1]``,
16 -> ``[2]``; on a smaller latent the same blocks run at proportionally smaller sizes, and the maps are keyed
by their actual side.

With gradient checkpointing the U-Net re-runs its blocks during backward: call ``store.freeze()`` after the
forward pass so the re-run computes the same operations without recording again.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from .errors import ConfigError

__all__ = ["AttentionStore", "CaptureCrossAttnProcessor", "capture_layer_names", "install_capture",
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


class CaptureCrossAttnProcessor(AttnProcessor2_0):
    """``AttnProcessor2_0`` that, for the first ``store.rows`` images, computes and records the probabilities."""

    def __init__(self, store: AttentionStore, factor: int) -> None:
        super().__init__()
        self.store = store
        self.factor = int(factor)  # latent side / map side

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
        batch = hidden_states.shape[0]
        if k > batch:
            raise ValueError(f"attention store expects {k} captured rows, the batch has {batch}")
        mask_k = attention_mask[:k] if attention_mask is not None else None
        out_k = self._explicit(attn, hidden_states[:k], encoder_hidden_states[:k], mask_k, temb)
        if k == batch:
            return out_k
        rest = super().__call__(attn, hidden_states[k:], encoder_hidden_states[k:],
                                attention_mask[k:] if attention_mask is not None else None,
                                temb[k:] if temb is not None else None, *args, **kwargs)
        return torch.cat([out_k, rest.to(out_k.dtype)], dim=0)

    def _explicit(self, attn, hidden_states, encoder_hidden_states, attention_mask, temb):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        batch, seq, _ = hidden_states.shape
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, encoder_hidden_states.shape[1], batch)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        query, key, value = (attn.head_to_batch_dim(x) for x in (query, key, value))
        probs = attn.get_attention_scores(query, key, attention_mask)  # [batch*heads, seq, T]
        out = attn.batch_to_head_dim(torch.bmm(probs, value))
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        out = out / attn.rescale_output_factor

        mh, _ = self._map_hw(seq)
        self.store.add(mh, probs.float().reshape(batch, attn.heads, seq, -1).mean(dim=1))
        return out


def _down_block_index(resolution: int) -> int:
    factor = SD_LATENT // int(resolution)
    if factor < 1 or SD_LATENT % int(resolution) or factor & (factor - 1):
        raise ConfigError(f"generator.da_resolutions: {resolution} is not 64/2**k")
    return int(math.log2(factor))


def capture_layer_names(unet, resolutions: Iterable[int]) -> dict[str, int]:
    """{processor name: factor} of the down-path cross-attention layers at ``resolutions`` (SD-64 names)."""
    names = list(unet.attn_processors)
    out: dict[str, int] = {}
    for res in resolutions:
        i = _down_block_index(res)
        if i >= len(unet.down_blocks) or not getattr(unet.down_blocks[i], "attentions", None):
            raise ConfigError(f"generator.da_resolutions: resolution {res} is down_blocks[{i}], which has no "
                              "cross-attention layers in this U-Net")
        sel = [n for n in names if n.startswith(f"down_blocks.{i}.") and n.endswith(".attn2.processor")]
        if not sel:
            raise ConfigError(f"generator.da_resolutions: no attn2 layers found in down_blocks[{i}]")
        out.update({n: 1 << i for n in sel})
    return out


def install_capture(unet, store: AttentionStore, resolutions: Sequence[int], others=AttnProcessor2_0) -> list[str]:
    """Capture processors on the chosen layers, ``others()`` (fused ``AttnProcessor2_0``) everywhere else.

    Returns the captured processor names.
    """
    chosen = capture_layer_names(unet, resolutions)
    procs = {}
    shared: dict[int, CaptureCrossAttnProcessor] = {}
    for name in unet.attn_processors:
        if name in chosen:
            f = chosen[name]
            procs[name] = shared.setdefault(f, CaptureCrossAttnProcessor(store, f))
        else:
            procs[name] = others()
    unet.set_attn_processor(procs)
    return sorted(chosen)


def restore_default_processors(unet) -> None:
    """Back to the fused processor everywhere (``set_default_attn_processor`` refuses custom processors)."""
    unet.set_attn_processor(AttnProcessor2_0())

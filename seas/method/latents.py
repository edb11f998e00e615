"""The VAE latents of a few-shot training set, encoded once per (image, augmentation) instead of at every step.

The generator and the RMP train on a handful of images under 8 rot90/flip variants; encoding them with the VAE at
every step was the largest cost of a generator step beyond the U-Net. :class:`LatentCache` keeps the posterior
(mean, std) of every variant the training draws, encoded on first use, one image at a time: a value never depends on
which other images were encoded with it, so a resumed run sees the same latents as an uninterrupted one.
:meth:`LatentCache.sample` then draws ``mean + std * eps`` with the step's generator, exactly as
``AutoencoderKL.encode(x).latent_dist.sample(generator)`` does, so training stays deterministic and resumable.
"""
from __future__ import annotations

import time
from typing import Hashable, Mapping, Sequence

import torch

from seas.data.augment import apply_augmentation

__all__ = ["LatentCache", "LatentKey", "sample_posterior", "training_set_cache"]

LatentKey = tuple  # (image key, k quarter turns, flipped)


def sample_posterior(mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """``mean + std * eps`` with eps ~ N(0, I) drawn from ``generator`` on its own device (as diffusers'
    ``DiagonalGaussianDistribution.sample``), returned on ``mean``'s device."""
    dev = generator.device if generator is not None else mean.device
    eps = torch.randn(mean.shape, generator=generator, device=dev, dtype=mean.dtype)
    return mean + std * eps.to(mean.device)


class LatentCache:
    """Posterior (mean, std) of ``vae`` for ``images[key]`` under each augmentation, computed on first use.

    ``images``: {key: image tensor [3, H, W] in [-1, 1]} (CPU). ``amp_dtype``: the autocast dtype the encoder runs
    under (None: fp32). Values are stored as float32 on ``device``.
    """

    def __init__(self, vae, images: Mapping[Hashable, torch.Tensor], device, amp_dtype=None) -> None:
        self.vae = vae
        self.images = images
        self.device = torch.device(device)
        self.amp_dtype = amp_dtype
        self._dist: dict[LatentKey, tuple[torch.Tensor, torch.Tensor]] = {}
        self.encode_seconds = 0.0

    def __len__(self) -> int:
        return len(self._dist)

    @torch.no_grad()
    def _encode(self, key: LatentKey) -> tuple[torch.Tensor, torch.Tensor]:
        image_key, k, flipped = key
        x = apply_augmentation(self.images[image_key], k, flipped)[None].to(self.device, self.vae.dtype)
        t0 = time.perf_counter()
        with torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            dist = self.vae.encode(x).latent_dist
        self.encode_seconds += time.perf_counter() - t0
        return dist.mean[0].float(), dist.std[0].float()

    def dist(self, keys: Sequence[LatentKey]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std), each ``[len(keys), C, h, w]``, of the given (image key, k, flipped) variants."""
        for key in keys:
            if key not in self._dist:
                self._dist[key] = self._encode(key)
        means, stds = zip(*(self._dist[key] for key in keys))
        return torch.stack(means), torch.stack(stds)

    def sample(self, keys: Sequence[LatentKey], generator: torch.Generator | None) -> torch.Tensor:
        """Scaled latents (``vae.config.scaling_factor`` applied) sampled from the posteriors of ``keys``."""
        mean, std = self.dist(keys)
        return sample_posterior(mean, std, generator) * self.vae.config.scaling_factor


def training_set_cache(vae, anomaly_images: Sequence[torch.Tensor], normal_images: Sequence[torch.Tensor], device,
                       amp_dtype=None) -> LatentCache:
    """The cache of a split's training set, keyed ``("a", i)`` (anomaly i) and ``("n", i)`` (normal image i)."""
    images = {("a", i): img for i, img in enumerate(anomaly_images)}
    images.update({("n", i): img for i, img in enumerate(normal_images)})
    return LatentCache(vae, images, device, amp_dtype)

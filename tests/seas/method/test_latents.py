"""The training-latent cache, the per-prompt text encoding and the truncated VAE decode change no result."""
from __future__ import annotations

import torch

from seas.data.augment import apply_augmentation
from seas.method.latents import LatentCache, training_set_cache


def _images(n=3, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, size, size, generator=g) * 2 - 1 for _ in range(n)]


def test_cached_posterior_samples_equal_encoding_at_every_step(tiny_sd):
    """cache.sample == vae.encode(augmented image).latent_dist.sample(generator) for the same generator state."""
    imgs = _images()
    cache = training_set_cache(tiny_sd.vae, imgs[:2], imgs[2:], "cpu")
    keys = [(("a", 1), 3, True), (("n", 0), 0, False), (("a", 1), 3, True)]
    got = cache.sample(keys, torch.Generator().manual_seed(7))
    g = torch.Generator().manual_seed(7)
    sf = tiny_sd.vae.config.scaling_factor
    with torch.no_grad():
        dists = [tiny_sd.vae.encode(apply_augmentation(img, k, f)[None]).latent_dist
                 for img, k, f in ((imgs[1], 3, True), (imgs[2], 0, False), (imgs[1], 3, True))]
        mean = torch.cat([d.mean for d in dists])
        std = torch.cat([d.std for d in dists])
        want = (mean + std * torch.randn(mean.shape, generator=g)) * sf
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    assert len(cache) == 2  # the repeated variant was encoded once


def test_cache_values_do_not_depend_on_the_order_of_first_use(tiny_sd):
    imgs = _images()
    keys = [((("a", i), k, f)) for i in range(2) for k in range(4) for f in (False, True)]
    a = LatentCache(tiny_sd.vae, {("a", i): im for i, im in enumerate(imgs)}, "cpu")
    b = LatentCache(tiny_sd.vae, {("a", i): im for i, im in enumerate(imgs)}, "cpu")
    ma, sa = a.dist(keys)
    b.dist(keys[::-1])
    mb, sb = b.dist(keys)
    assert torch.equal(ma, mb) and torch.equal(sa, sb)


def test_truncated_decode_gives_the_full_decode_features(tiny_sd):
    from seas.method.rmp import capture_outputs, num_vae_levels, vae_feature_modules, vae_features

    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    n = num_vae_levels(tiny_sd.vae)
    with torch.no_grad():
        got = vae_features(tiny_sd.vae, z, "decoder", n)
        with capture_outputs(vae_feature_modules(tiny_sd.vae, "decoder", n)) as full:
            tiny_sd.vae.decode(z / tiny_sd.vae.config.scaling_factor)
    assert len(got) == n and all(torch.equal(a, b) for a, b in zip(got, full))
    assert not any(m._forward_hooks for m in tiny_sd.vae.decoder.up_blocks)
    # the decode really stopped: the last up block and conv_out never ran
    ran = []
    h = tiny_sd.vae.decoder.conv_out.register_forward_hook(lambda *a: ran.append(1))
    with torch.no_grad():
        vae_features(tiny_sd.vae, z, "decoder", n)
    h.remove()
    assert ran == []


def test_prompt_encoding_once_per_distinct_prompt(tiny_sd):
    from seas.method.train_generator import encode_prompt_ids

    te = tiny_sd.text_encoder
    ids = torch.tensor([[49406, 320, 1125, 49407] + [49407] * 73, [49406, 320, 49407] + [49407] * 74] * 2)
    ids = ids[[0, 1, 1, 0]]
    emb = te.get_input_embeddings().weight
    emb.requires_grad_(True)
    full = te(ids)[0]
    (g_full,) = torch.autograd.grad(full.square().sum(), emb)
    dedup = encode_prompt_ids(te, ids, grad=True)
    (g_dedup,) = torch.autograd.grad(dedup.square().sum(), emb)
    torch.testing.assert_close(dedup, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(g_dedup, g_full, atol=1e-5, rtol=1e-4)
    emb.requires_grad_(False)
    cache: dict = {}
    calls = []
    h = te.register_forward_hook(lambda m, a, o: calls.append(a[0].shape[0]))
    first = encode_prompt_ids(te, ids, grad=False, cache=cache)
    again = encode_prompt_ids(te, ids, grad=False, cache=cache)
    h.remove()
    assert calls == [2] and len(cache) == 2  # two distinct prompts, encoded once, then from the cache
    torch.testing.assert_close(first, full.detach(), atol=1e-5, rtol=1e-5)
    assert torch.equal(first, again)

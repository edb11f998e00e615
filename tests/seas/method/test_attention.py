"""Capture of cross-attention probabilities on the tiny SD-shaped U-Net (same block structure as SD v1-4)."""
import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor2_0

from seas.method.attention import (AttentionStore, CaptureCrossAttnProcessor, capture_layer_names, install_capture, restore_default_processors)
from seas.run.errors import ConfigError

LATENT = 8  # 64 px images -> 8x8 latent: SD's "32" level runs at 4x4, "16" at 2x2


@pytest.fixture
def unet(tiny_sd_dir):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    return UNet2DConditionModel.from_pretrained(tiny_sd_dir / "unet")


def _inputs(unet, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 4, LATENT, LATENT, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    ehs = torch.randn(batch, 77, unet.config.cross_attention_dim, generator=g)
    return x, t, ehs


def test_processors_only_on_chosen_attn2_layers(unet):
    store = AttentionStore()
    names = install_capture(unet, store, [32, 16])
    assert names == sorted(f"down_blocks.{b}.attentions.{i}.transformer_blocks.0.attn2.processor"
                           for b in (1, 2) for i in (0, 1))
    procs = unet.attn_processors
    for name, proc in procs.items():
        if name in names:
            assert isinstance(proc, CaptureCrossAttnProcessor)
        else:
            assert type(proc) is AttnProcessor2_0, name  # fused kernel everywhere else
    assert capture_layer_names(unet, [64]) == {f"down_blocks.0.attentions.{i}.transformer_blocks.0.attn2.processor": 1
                                               for i in (0, 1)}
    # 8 (Tab. 24's A^4): down_blocks[3] is a DownBlock2D without attention; the authors' "8" map is the mid block's
    assert capture_layer_names(unet, [8]) == {"mid_block.attentions.0.transformer_blocks.0.attn2.processor": 8}
    assert set(capture_layer_names(unet, [32, 16, 8])) == set(names) | {
        "mid_block.attentions.0.transformer_blocks.0.attn2.processor"}
    with pytest.raises(ConfigError, match="no cross-attention"):
        capture_layer_names(unet, [4])  # below the bottom of the down path
    with pytest.raises(ConfigError):
        capture_layer_names(unet, [48])
    restore_default_processors(unet)
    assert all(type(p) is AttnProcessor2_0 for p in unet.attn_processors.values())


def test_output_unchanged_and_maps_are_probabilities_of_the_abnormal_half(unet):
    x, t, ehs = _inputs(unet)
    with torch.no_grad():
        ref = unet(x, t, encoder_hidden_states=ehs).sample
        store = AttentionStore()
        install_capture(unet, store, [32, 16])
        store.begin(2, (LATENT, LATENT))
        out = unet(x, t, encoder_hidden_states=ehs).sample
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    maps = store.maps()
    assert set(maps) == {4, 2}
    assert maps[4].shape == (2, 4, 4, 77) and maps[2].shape == (2, 2, 2, 77)
    assert store.counts == {4: 2, 2: 2}  # two cross-attention layers per resolution
    for m in maps.values():  # each token's map is a distribution over the pixels (head-averaged)
        torch.testing.assert_close(m.sum((1, 2)), torch.ones(m.shape[0], m.shape[-1]), atol=1e-5, rtol=0)
        assert m.min() >= 0
    # nothing captured when no row is asked for; freeze stops recording but keeps the computation
    store.begin(0)
    with torch.no_grad():
        unet(x, t, encoder_hidden_states=ehs)
    assert store.maps() == {}
    store.begin(2, (LATENT, LATENT))
    store.freeze()
    with torch.no_grad():
        out2 = unet(x, t, encoder_hidden_states=ehs).sample
    assert store.maps() == {}
    torch.testing.assert_close(out2, ref, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("mode,dim", [("pixels", -2), ("tokens", -1)])
def test_captured_maps_equal_hand_computed_softmax(unet, mode, dim):
    """Recompute softmax(q kᵀ / sqrt(d)) per head from the layers' inputs (over pixels, or over tokens for the
    ablation), average heads and layers."""
    x, t, ehs = _inputs(unet, batch=3, seed=1)
    seen = []

    def hook(mod, args, kwargs):
        seen.append((mod, args[0].detach(), kwargs["encoder_hidden_states"].detach()))

    layers = [unet.down_blocks[1].attentions[i].transformer_blocks[0].attn2 for i in (0, 1)]
    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in layers]
    store = AttentionStore()
    install_capture(unet, store, [32], mode=mode)
    store.begin(1, (LATENT, LATENT))
    with torch.no_grad():
        unet(x, t, encoder_hidden_states=ehs)
    for h in handles:
        h.remove()
    assert len(seen) == 2
    expected = 0
    for attn, hs, e in seen:
        q = attn.to_q(hs[:1])
        k = attn.to_k(e[:1])
        heads, d = attn.heads, q.shape[-1] // attn.heads
        q = q.view(1, -1, heads, d).transpose(1, 2)
        k = k.view(1, -1, heads, d).transpose(1, 2)
        p = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5, dim=dim)  # [1, heads, 16, 77]
        expected = expected + p.mean(dim=1) / 2
    got = store.maps()[4]
    assert got.shape == (1, 4, 4, 77)
    torch.testing.assert_close(got.reshape(1, 16, 77), expected, atol=1e-6, rtol=1e-5)


def test_gradient_flows_from_maps_into_the_unet(unet):
    x, t, ehs = _inputs(unet)
    ehs.requires_grad_(True)
    store = AttentionStore()
    install_capture(unet, store, [16])
    store.begin(2, (LATENT, LATENT))
    unet(x, t, encoder_hidden_states=ehs)
    m = store.maps()[2]
    m[..., 5].sum().backward()
    q = unet.down_blocks[2].attentions[0].transformer_blocks[0].attn2.to_q.weight
    assert q.grad is not None and q.grad.abs().sum() > 0
    # only the captured (abnormal) rows of the text input receive gradient from the maps
    assert ehs.grad[:2].abs().sum() > 0 and ehs.grad[2:].abs().sum() == 0


def test_a4_mid_block_map_feeds_the_da_loss(unet):
    """da_resolutions 8 (Tab. 24's A^4): the mid block's map is captured at latent/8 and the DA loss pools the mask
    to it (on this 8x8 latent: 16 -> 2x2, 8 -> 1x1)."""
    from seas.method.losses import da_loss

    x, t, ehs = _inputs(unet)
    store = AttentionStore()
    install_capture(unet, store, [16, 8])
    store.begin(2, (LATENT, LATENT))
    with torch.no_grad():
        unet(x, t, encoder_hidden_states=ehs)
    maps = store.maps()
    assert {k: tuple(v.shape) for k, v in maps.items()} == {2: (2, 2, 2, 77), 1: (2, 1, 1, 77)}
    assert store.counts == {2: 2, 1: 1}  # one transformer in the mid block
    masks = torch.zeros(2, 64, 64)
    masks[:, :16, :16] = 1
    loss = da_loss(maps, [[4, 5]] * 2, [[2]] * 2, masks, base_size=LATENT, normalize="image")
    assert torch.isfinite(loss.total)
    restore_default_processors(unet)

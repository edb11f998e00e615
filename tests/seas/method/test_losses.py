"""Known-answer tests of seas.method.losses (hand-computed values; torch's cross-entropy as reference for γ = 0)."""
import math

import pytest
import torch
import torch.nn.functional as F

from seas.method.losses import (da_loss, eps_mse, focal_loss, gather_token_maps, minmax_normalize, na_loss, pool_mask_pyramid)


def test_eps_mse_and_na_loss_known_values():
    pred = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    target = torch.zeros(2, 2)
    assert eps_mse(pred, target).item() == pytest.approx((1 + 4 + 0 + 1) / 4)
    assert na_loss(pred[1:], target[1:]).item() == pytest.approx(0.5)
    assert na_loss(pred[:0], target[:0]).item() == 0.0
    with pytest.raises(ValueError):
        eps_mse(pred, target[:1])
    # computed in float32 even for bf16 inputs
    assert eps_mse(pred.bfloat16(), target.bfloat16()).dtype == torch.float32


def test_focal_loss_known_values():
    # two pixels, logits (0, ln 3): p(class 1) = 3/4
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 1] = math.log(3.0)
    target = torch.tensor([[[1, 0]]])
    l1 = -(0.25 ** 2) * math.log(0.75)    # pixel with class 1: p_t = 3/4
    l0 = -(0.75 ** 2) * math.log(0.25)    # pixel with class 0: p_t = 1/4
    assert focal_loss(logits, target, gamma=2.0).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    per_pixel = focal_loss(logits, target, gamma=2.0, reduction="none")
    assert per_pixel.shape == (1, 1, 2)
    assert per_pixel[0, 0].tolist() == pytest.approx([l1, l0], rel=1e-6)
    # alpha weights per class
    assert focal_loss(logits, target, gamma=2.0, alpha=[0.25, 0.75]).item() == pytest.approx(
        (0.75 * l1 + 0.25 * l0) / 2, rel=1e-6)


def test_focal_loss_gamma0_is_cross_entropy_and_focuses():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 5, 4, generator=g, requires_grad=True)
    target = torch.randint(0, 2, (2, 5, 4), generator=g)
    ce = F.cross_entropy(logits, target)
    assert focal_loss(logits, target, gamma=0.0).item() == pytest.approx(ce.item(), rel=1e-6)
    # γ > 0 down-weights every pixel (p_t > 0), so the loss is strictly smaller; gradients flow
    fl = focal_loss(logits, target, gamma=2.0)
    assert fl.item() < ce.item()
    fl.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        focal_loss(logits, target[:, :4])


def test_pool_mask_pyramid_bilinear_then_maxpool():
    # 16x16 mask -> bilinear to base 8: a 2x stride, so each output pixel is the mean of a 2x2 source block
    mask = torch.zeros(1, 1, 16, 16)
    mask[0, 0, 4:6, 8:10] = 1.0   # a full block -> output (2, 4) == 1
    mask[0, 0, 0, 0] = 1.0        # one pixel of a block -> output (0, 0) == 0.25 (soft)
    out = pool_mask_pyramid(mask, [8, 4, 2], base_size=8)
    assert set(out) == {8, 4, 2}
    m8 = out[8][0]
    assert m8.shape == (8, 8)
    assert m8[2, 4].item() == pytest.approx(1.0)
    assert m8[0, 0].item() == pytest.approx(0.25)
    assert m8.sum().item() == pytest.approx(1.25)
    m4 = out[4][0]  # max-pool 2x2 once
    assert m4[1, 2].item() == pytest.approx(1.0) and m4[0, 0].item() == pytest.approx(0.25)
    assert m4.sum().item() == pytest.approx(1.25)
    m2 = out[2][0]  # twice
    assert m2.flatten().tolist() == pytest.approx([0.25, 1.0, 0.0, 0.0])
    # [B, H, W] input, already at base size: no interpolation
    same = pool_mask_pyramid(torch.eye(4)[None], [2], base_size=4)[2][0]
    assert same.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(ValueError):
        pool_mask_pyramid(mask, [3], base_size=8)


def test_minmax_normalize_modes():
    x = torch.tensor([[[[0.0, 2.0]]], [[[4.0, 8.0]]]])  # [B=2, K=1, 1, 2]
    assert minmax_normalize(x, "batch").flatten().tolist() == pytest.approx([0, 0.25, 0.5, 1.0])
    assert minmax_normalize(x, "image").flatten().tolist() == pytest.approx([0, 1, 0, 1])
    assert torch.equal(minmax_normalize(x, "none"), x)
    # each of the K maps separately; a constant map becomes 0
    y = torch.stack([x[:, 0], torch.full_like(x[:, 0], 3.0)], dim=1)
    n = minmax_normalize(y, "batch")
    assert n[:, 1].abs().max().item() == 0.0
    assert n[:, 0].flatten().tolist() == pytest.approx([0, 0.25, 0.5, 1.0])
    with pytest.raises(ValueError):
        minmax_normalize(x, "pixel")


def test_gather_token_maps_per_image_positions():
    maps = torch.arange(2 * 1 * 1 * 6, dtype=torch.float32).reshape(2, 1, 1, 6)
    out = gather_token_maps(maps, [[1, 4], [0, 5]])
    assert out.shape == (2, 2, 1, 1)
    assert out.flatten().tolist() == [1, 4, 6, 11]


def _hand_maps():
    """One image, 2x2 map, 5 text positions: <ob> at 1, two <df> at 2 and 3."""
    maps = torch.zeros(1, 2, 2, 5)
    maps[0, :, :, 1] = torch.tensor([[0.2, 0.6], [0.3, 0.9]])
    maps[0, :, :, 2] = torch.tensor([[0.5, 0.1], [0.1, 0.1]])
    maps[0, :, :, 3] = torch.tensor([[0.3, 0.1], [0.1, 0.1]])
    mask = torch.tensor([[[1.0, 0.0], [0.0, 0.5]]])
    return maps, mask


def test_da_loss_known_values_without_normalisation():
    maps, mask = _hand_maps()
    res = da_loss({2: maps}, [[2, 3]], [[1]], {2: mask}, normalize="none")
    # mean df map [[.4,.1],[.1,.1]] vs M [[1,0],[0,.5]]
    assert res.term1.item() == pytest.approx((0.36 + 0.01 + 0.01 + 0.16) / 4)
    # <ob> pushed to 0 where M == 1: the single pixel (0,0), value 0.2
    assert res.term2.item() == pytest.approx(0.04)
    assert res.total.item() == pytest.approx(0.135 + 0.04)
    # gt0: pixels (0,0) and (1,1), target 1 - M there: (0.2 - 0)^2 and (0.9 - 0.5)^2
    res = da_loss({2: maps}, [[2, 3]], [[1]], {2: mask}, normalize="none", ob_region="gt0")
    assert res.term2.item() == pytest.approx((0.04 + 0.16) / 2)
    # "with AT": <ob> against the background 1 - M over all pixels
    res = da_loss({2: maps}, [[2, 3]], [[1]], {2: mask}, normalize="none", ob_term="background")
    assert res.term2.item() == pytest.approx((0.04 + 0.16 + 0.49 + 0.16) / 4)
    # ablation: no second term
    assert da_loss({2: maps}, [[2, 3]], [[1]], {2: mask}, normalize="none", ob_term="none").term2.item() == 0.0


def test_da_loss_known_values_with_batch_minmax():
    maps, mask = _hand_maps()
    res = da_loss({2: maps}, [[2, 3]], [[1]], {2: mask}, normalize="batch")
    # each df map normalises to [[1,0],[0,0]]; only (1,1) differs from M: (0 - .5)^2 / 4
    assert res.term1.item() == pytest.approx(0.0625)
    # the <ob> map normalises to 0 at (0,0)
    assert res.term2.item() == pytest.approx(0.0)
    # gt0: the normalised <ob> map is [[0, 4/7], [1/7, 1]]: (0 - 0)^2 at (0,0), (1 - 0.5)^2 at (1,1)
    res = da_loss({2: maps}, [[2, 3]], [[1]], {2: mask}, normalize="batch", ob_region="gt0")
    assert res.term2.item() == pytest.approx(0.125)


def test_da_loss_averages_the_df_maps_before_normalising():
    maps, mask = _hand_maps()
    maps[0, :, :, 3] = torch.tensor([[0.3, 0.3], [0.1, 0.1]])
    # mean [[.4,.2],[.1,.1]] -> normalised [[1,1/3],[0,0]] (normalising each first would give [[1,.5],[0,0]])
    res = da_loss({2: maps}, [[2, 3]], [[1]], {2: mask}, normalize="batch")
    assert res.term1.item() == pytest.approx(((1 / 3) ** 2 + 0.25) / 4)


def test_da_loss_sums_resolutions_pools_raw_masks_and_never_nans():
    maps, _ = _hand_maps()
    coarse = torch.zeros(1, 1, 1, 5)
    coarse[0, 0, 0, 2] = coarse[0, 0, 0, 3] = 0.5
    coarse[0, 0, 0, 1] = 0.7
    full = torch.zeros(1, 4, 4)
    full[0, :2, :2] = 1.0                     # top-left quadrant
    # base 4 (the "latent" side): pooled once -> [[1,0],[0,0]], twice -> [[1]]
    res = da_loss({2: maps, 1: coarse}, [[2, 3]], [[1]], full, base_size=4, normalize="none")
    t1_2 = ((0.4 - 1) ** 2 + 3 * 0.01) / 4
    t1_1 = (0.5 - 1.0) ** 2
    assert res.term1.item() == pytest.approx(t1_2 + t1_1)
    assert res.term2.item() == pytest.approx(0.2 ** 2 + 0.7 ** 2)
    # an empty mask: term 2 is 0, not NaN
    res = da_loss({2: maps}, [[2, 3]], [[1]], torch.zeros(1, 4, 4), base_size=4, normalize="batch")
    assert res.term2.item() == 0.0 and math.isfinite(res.term1.item())


def test_da_loss_gradient_reaches_the_maps():
    maps, mask = _hand_maps()
    maps.requires_grad_(True)
    res = da_loss({2: maps}, [[2, 3]], [[1]], {2: mask}, normalize="none")
    res.total.backward()
    g = maps.grad[0]
    # d term1 / d df_n(0,0) = 2 (0.4 - 1) / 4 * 1/2 ; d term2 / d ob(0,0) = 2 * 0.2
    assert g[0, 0, 2].item() == pytest.approx(2 * (0.4 - 1) / 4 / 2)
    assert g[0, 0, 1].item() == pytest.approx(0.4)
    assert g[..., 0].abs().sum().item() == 0.0 and g[..., 4].abs().sum().item() == 0.0

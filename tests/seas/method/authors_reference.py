"""Reference implementations of the authors' computations, for the differential tests (tests/seas/method/test_fidelity.py).

Attribution: each function and module here is a short, plain-torch re-derivation, written by us from reading the
authors' public code -- HUST-SLOW/SeaS (its DA loss over the U-Net's cross-attention maps, its Refined Mask
Prediction branch with Mask Refinement Modules, its focal + coarse supervision, its DPM-Solver sampling) -- not
copied from it. They use the authors' structure and index arithmetic (text positions first, per-image baddbmm,
their module nesting and parameter names) so that our implementation, which does the same computation our own way,
can be checked against them on the same random tensors. Not imported by the package.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# ============================================================================ DA loss
def authors_token_probs(query: torch.Tensor, key: torch.Tensor, scale: float) -> torch.Tensor:
    """Their separate map computation: per image, baddbmm scores of [heads, P, d] x [heads, d, T], softmax over
    the *pixel* axis (dim -2). -> [B, heads, P, T]."""
    b, h, p, _ = query.shape
    out = torch.empty(b, h, p, key.shape[2])
    for i in range(b):
        scores = torch.baddbmm(torch.empty(h, p, key.shape[2]), query[i], key[i].transpose(-1, -2), beta=0,
                               alpha=scale)
        out[i] = scores.softmax(dim=-2)
    return out



def authors_da_loss(token_maps: dict, mask: torch.Tensor, base: int, n_ob: int, n_df: int,
                    tiny_defects: bool) -> torch.Tensor:
    """Their DA loss. ``token_maps``: {level: [T, B, h, w]} (text positions first, as their U-Net returns them),
    levels from fine to coarse; ``mask`` [B, 1, H, W]. Their prompt is ``a <ob..> with <df..>``, so ``<ob>`` sits at
    2 and the ``<df>`` at 3 + n_ob ... (their index arithmetic, single-token ``<ob>`` case)."""
    gt = F.interpolate(mask, size=(base, base), mode="bilinear", align_corners=False)
    total = torch.zeros(())
    for level in sorted(token_maps, reverse=True):
        while gt.shape[-1] > level:
            gt = F.max_pool2d(gt, kernel_size=2, stride=2)
        sel = gt > 0 if tiny_defects else gt == 1
        cm = token_maps[level]
        ob = cm[2]
        df = cm[3 + n_ob: 3 + n_ob + n_df].mean(dim=0) if n_df > 1 else cm[3 + n_ob]
        ob = (ob - ob.min()) / (ob.max() - ob.min())
        df = (df - df.min()) / (df.max() - df.min())
        loss = ((df.unsqueeze(1).float() - gt.float()) ** 2).mean()
        loss = loss + F.mse_loss(ob.unsqueeze(1)[sel].float(), (1 - gt)[sel].float(), reduction="mean")
        total = total + loss
    return total



# ============================================================================ RMP module
class _AuthorsBN(nn.Module):
    """Their batch norm: gain/bias parameters, stored_mean/stored_var buffers, F.batch_norm."""

    def __init__(self, c):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.register_buffer("stored_mean", torch.zeros(c))
        self.register_buffer("stored_var", torch.ones(c))

    def forward(self, x):
        return F.batch_norm(x, self.stored_mean, self.stored_var, self.gain, self.bias, self.training, 0.1, 1e-5)



def _acbr(cin, cout, k):
    return nn.Sequential(nn.Conv2d(cin, cout, k, bias=False, padding=k // 2), _AuthorsBN(cout), nn.ReLU())



class _AuthorsMRM(nn.Module):
    def __init__(self, in_c, out_c):
        super().__init__()
        ks = {1: 1, 2: 1, 3: 3, 4: 1, 5: 1, 6: 3, 7: 1, 8: 3, 9: 1}
        for i, k in ks.items():
            setattr(self, f"conv{i}", _acbr(in_c if i == 1 else out_c, out_c, k))  # conv6 is built, never used

    def forward(self, coarse, fine):
        coarse = F.interpolate(coarse, scale_factor=2, mode="bilinear", align_corners=True)
        skip1, skip2 = self.conv5(coarse), coarse
        coarse = self.conv4(self.conv3(self.conv2(coarse)))
        skip3 = self.conv9(self.conv8(self.conv7(coarse)))
        coarse = coarse + skip1 + skip3
        return self.conv1(fine) * coarse + skip2



class _AuthorsRMP(nn.Module):
    def __init__(self, unet_ch=(1280, 640), vae_ch=(512, 512, 256), red=(128, 64), heads=8, layers=4, groups=32):
        super().__init__()
        from diffusers import Transformer2DModel

        dim = sum(red)
        self.low_feature_conv = nn.Sequential(nn.Conv2d(unet_ch[0], red[0], 1, bias=False))
        self.mid_feature_conv = nn.Sequential(nn.Conv2d(unet_ch[1], red[1], 1, bias=False))
        self.out_layer = nn.Sequential(_AuthorsBN(dim), nn.ReLU(), nn.Conv2d(dim, 2, 3, padding=1))
        self.attn = Transformer2DModel(heads, dim // heads, in_channels=dim, num_layers=layers, cross_attention_dim=None,
                                       norm_num_groups=groups, use_linear_projection=False, upcast_attention=False)
        self.MRM1, self.MRM2, self.MRM3 = (_AuthorsMRM(c, dim) for c in vae_ch)

    def forward(self, feature, vae_features, forward_type, size):
        low = F.interpolate(self.low_feature_conv(feature[0]), size=feature[1].shape[-1], mode="bilinear",
                            align_corners=False)
        high = self.attn(torch.cat([low, self.mid_feature_conv(feature[1])], dim=1), return_dict=False)[0]
        feat_full = F.interpolate(high, size, mode="bilinear", align_corners=False)
        if forward_type == "train":
            _, normal = torch.chunk(feat_full, 2, dim=0)
            anomaly, _ = torch.chunk(high, 2, dim=0)
            x = self.MRM3(self.MRM2(self.MRM1(anomaly, vae_features[0]), vae_features[1]), vae_features[2])
            out = torch.softmax(self.out_layer(torch.cat((x, normal), dim=0)), dim=1)
            out_64 = torch.softmax(self.out_layer(high), dim=1)
            return out, out_64
        x = self.MRM3(self.MRM2(self.MRM1(high, vae_features[0]), vae_features[1]), vae_features[2])
        return torch.softmax(self.out_layer(x), dim=1)



def _bn_keys(ours: str, theirs: str) -> dict:
    return {f"{ours}.weight": f"{theirs}.gain", f"{ours}.bias": f"{theirs}.bias",
            f"{ours}.running_mean": f"{theirs}.stored_mean", f"{ours}.running_var": f"{theirs}.stored_var"}



def _cbr_keys(ours: str, theirs: str) -> dict:
    return {f"{ours}.0.weight": f"{theirs}.0.weight", **_bn_keys(f"{ours}.1", f"{theirs}.1")}



def ours_to_authors(state: dict) -> dict:
    """Our RMP state dict under the authors' module names (num_batches_tracked has no counterpart)."""
    names = {"reduce.0.weight": "low_feature_conv.0.weight", "reduce.1.weight": "mid_feature_conv.0.weight",
             **_bn_keys("head.0", "out_layer.0"), "head.2.weight": "out_layer.2.weight",
             "head.2.bias": "out_layer.2.bias"}
    for i in range(3):
        a, t = f"mrms.{i}", f"MRM{i + 1}"
        names.update(_cbr_keys(f"{a}.project", f"{t}.conv1"))
        for j, c in enumerate((2, 3, 4)):
            names.update(_cbr_keys(f"{a}.mid.{j}", f"{t}.conv{c}"))
        names.update(_cbr_keys(f"{a}.skip", f"{t}.conv5"))
        for j, c in enumerate((7, 8, 9)):
            names.update(_cbr_keys(f"{a}.post.{j}", f"{t}.conv{c}"))
    out = {}
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            continue
        out[names[k] if k in names else k.replace("transformer.", "attn.", 1)] = v
    return out



def authors_focal(prob: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, smooth: float = 1e-5):
    """Their focal loss on softmax outputs [B, 2, H, W] and integer-valued targets [B, 1 or -, H, W]."""
    c = prob.shape[1]
    logit = prob.view(prob.size(0), c, -1).permute(0, 2, 1).reshape(-1, c)
    idx = target.reshape(-1, 1).long()
    one_hot = torch.zeros(idx.shape[0], c).scatter_(1, idx, 1)
    if smooth:
        one_hot = one_hot.clamp(smooth / (c - 1), 1.0 - smooth)
    pt = (one_hot * logit).sum(1) + smooth
    return (-1 * torch.pow(1 - pt, gamma) * pt.log()).mean()

"""Loss functions of SeaS, as pure functions of tensors (no models, no state).

- :func:`eps_mse`        MSE between true and predicted noise (L_SD on abnormal images).
- :func:`na_loss`        Normal-image Alignment: the same ε-MSE on the normal half, prompted with ``a <ob>``.
- :func:`da_loss`        Decoupled Anomaly Alignment on cross-attention maps: term 1 pulls the min-max normalised
                         mean of the ``<df>`` maps towards the pooled mask, term 2 pulls the normalised ``<ob>`` map
                         towards 1 - M inside the anomaly (or over the whole image: the "with AT" ablation).
- :func:`pool_mask_pyramid`  the mask at the attention resolutions: bilinear to the latent side (64 for SD at
                         512 px), then 2×2 max pooling once per halving.
- :func:`minmax_normalize`   min-max normalisation of attention maps over the batch, per image, or not at all.
- :func:`focal_loss`     softmax focal loss for the 2-class mask head of the RMP branch.

Shapes: attention maps are ``[B, h, w, T]`` (T = 77 text positions), masks ``[B, H, W]`` or ``[B, 1, H, W]``.
"""
from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "eps_mse", "na_loss", "focal_loss", "pool_mask_pyramid", "minmax_normalize", "gather_token_maps",
    "DALoss", "da_loss", "OB_TERMS",
]


# ----------------------------------------------------------------------------- ε-MSE / NA
def eps_mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error, computed in float32 (the U-Net may run under bf16 autocast)."""
    if pred.shape != target.shape:
        raise ValueError(f"eps_mse: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    return F.mse_loss(pred.float(), target.float(), reduction="mean")


def na_loss(pred_normal: torch.Tensor, target_normal: torch.Tensor) -> torch.Tensor:
    """L_NA: ε-MSE on the normal images (prompt ``a <ob>``); 0 when the normal half is empty."""
    if pred_normal.shape[0] == 0:
        return pred_normal.new_zeros((), dtype=torch.float32)
    return eps_mse(pred_normal, target_normal)


# ----------------------------------------------------------------------------- focal loss
def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0, alpha: Sequence[float] | None = None,
               reduction: str = "mean") -> torch.Tensor:
    """Softmax focal loss  −α_y (1 − p_y)^γ log p_y  averaged over pixels.

    ``logits``: ``[B, C, H, W]`` (C = 2 for the RMP head), ``target``: ``[B, H, W]`` class indices (long).
    ``alpha``: optional per-class weights (length C). ``gamma = 0`` and no ``alpha`` is plain cross-entropy.
    mmseg's and torchvision's focal losses are sigmoid (one-vs-rest) losses; SeaS's head is a softmax over the
    classes, hence this small function.
    """
    if logits.dim() != 4 or target.dim() != 3:
        raise ValueError(f"focal_loss: expected logits [B,C,H,W] and target [B,H,W], got {tuple(logits.shape)} and "
                         f"{tuple(target.shape)}")
    if logits.shape[0] != target.shape[0] or logits.shape[2:] != target.shape[1:]:
        raise ValueError(f"focal_loss: logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
    target = target.long()
    logp = F.log_softmax(logits.float(), dim=1)
    logp_t = logp.gather(1, target.unsqueeze(1)).squeeze(1)  # [B, H, W]
    p_t = logp_t.exp()
    loss = -((1.0 - p_t).clamp_min(0.0) ** gamma) * logp_t
    if alpha is not None:
        a = torch.as_tensor(alpha, dtype=loss.dtype, device=loss.device)
        if a.numel() != logits.shape[1]:
            raise ValueError(f"focal_loss: alpha has {a.numel()} weights for {logits.shape[1]} classes")
        loss = loss * a[target]
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"focal_loss: unknown reduction {reduction!r}")


# ----------------------------------------------------------------------------- masks and maps
def _as_bhw(mask: torch.Tensor) -> torch.Tensor:
    if mask.dim() == 4:
        if mask.shape[1] != 1:
            raise ValueError(f"mask: expected [B,1,H,W], got {tuple(mask.shape)}")
        mask = mask[:, 0]
    if mask.dim() != 3:
        raise ValueError(f"mask: expected [B,H,W] or [B,1,H,W], got {tuple(mask.shape)}")
    return mask.float()


def pool_mask_pyramid(mask: torch.Tensor, sizes: Sequence[int], base_size: int = 64) -> dict[int, torch.Tensor]:
    """{size: M [B, size, size]}: ``mask`` resized (bilinear) to ``base_size``², then max-pooled 2×2 until ``size``.

    ``base_size`` is the latent side (64 for SD v1-4 at 512 px; the tiny model's latent side otherwise), and every
    ``size`` must be ``base_size / 2**k``. The result is soft (bilinear edges survive the max pooling).
    """
    m = _as_bhw(mask)[:, None]
    if tuple(m.shape[-2:]) != (base_size, base_size):
        m = F.interpolate(m, size=(base_size, base_size), mode="bilinear", align_corners=False)
    out: dict[int, torch.Tensor] = {}
    for size in sorted(set(int(s) for s in sizes), reverse=True):
        k = 0
        while (base_size >> k) > size:
            k += 1
        if (base_size >> k) != size or base_size % (1 << k):
            raise ValueError(f"pool_mask_pyramid: size {size} is not base_size {base_size} / 2**k")
        p = m
        for _ in range(k):
            p = F.max_pool2d(p, kernel_size=2, stride=2)
        out[size] = p[:, 0]
    return out


def minmax_normalize(x: torch.Tensor, mode: str = "batch", eps: float = 1e-8) -> torch.Tensor:
    """Min-max normalise maps ``x [B, K, h, w]`` to [0, 1], separately for each of the K maps.

    ``batch``: min and max over all images and pixels (the authors' choice); ``image``: per image;
    ``none``: unchanged. A constant map becomes 0 (denominator clamped at ``eps``).
    """
    if mode == "none":
        return x
    if x.dim() != 4:
        raise ValueError(f"minmax_normalize: expected [B,K,h,w], got {tuple(x.shape)}")
    if mode == "batch":
        dims = (0, 2, 3)
    elif mode == "image":
        dims = (2, 3)
    else:
        raise ValueError(f"minmax_normalize: unknown mode {mode!r} (batch, image, none)")
    lo = x.amin(dim=dims, keepdim=True)
    hi = x.amax(dim=dims, keepdim=True)
    return (x - lo) / (hi - lo).clamp_min(eps)


def gather_token_maps(maps: torch.Tensor, positions) -> torch.Tensor:
    """``maps [B, h, w, T]`` and positions ``[B, K]`` (one row of token indices per image) -> ``[B, K, h, w]``."""
    pos = torch.as_tensor(positions, dtype=torch.long, device=maps.device)
    if pos.dim() == 1:
        pos = pos[None].expand(maps.shape[0], -1)
    if pos.dim() != 2 or pos.shape[0] != maps.shape[0]:
        raise ValueError(f"token positions {tuple(pos.shape)} do not match {maps.shape[0]} attention maps")
    if pos.numel() and (int(pos.min()) < 0 or int(pos.max()) >= maps.shape[-1]):
        raise ValueError(f"token positions out of range 0..{maps.shape[-1] - 1}")
    b, h, w, t = maps.shape
    flat = maps.reshape(b, h * w, t)
    idx = pos[:, None, :].expand(b, h * w, pos.shape[1])
    return flat.gather(2, idx).permute(0, 2, 1).reshape(b, pos.shape[1], h, w)


#: "== 1" up to float rounding of bilinear weights (which need not sum to exactly 1 in float32): the DA loss's
#: eq1 region and the RMP's coarse target
ONE_TOL = 1e-4


OB_TERMS = ("region", "background", "none")


class DALoss(NamedTuple):
    term1: torch.Tensor  # Σ_res mean((norm(mean_n A_df_n) − M)²)
    term2: torch.Tensor  # Σ_res mean over the term-2 pixels of (norm(mean A_ob) − (1 − M))² (0 where none qualifies)

    @property
    def total(self) -> torch.Tensor:
        return self.term1 + self.term2


def _mean_map(maps: torch.Tensor, positions, normalize: str) -> torch.Tensor:
    """Average the token maps first, then min-max normalise the mean map: ``[B, h, w]``."""
    return minmax_normalize(gather_token_maps(maps, positions).mean(dim=1, keepdim=True), normalize)[:, 0]


def da_loss(maps_by_res: Mapping[int, torch.Tensor], df_positions, ob_positions, masks, *,
            base_size: int = 64, normalize: str = "batch", ob_region: str = "eq1",
            ob_term: str = "region") -> DALoss:
    """L_DA summed over the attention resolutions (docs/METHOD.md, "Generator fine-tuning").

    ``maps_by_res``: {h: ``[B, h, h, T]``} attention maps of the abnormal images (averaged over heads and layers;
    seas.method.attention). ``df_positions`` ``[B, N]`` / ``ob_positions`` ``[B, N']``: token indices in each image's
    prompt. ``masks``: ``[B, H, W]`` / ``[B, 1, H, W]`` full-size masks (pooled here with :func:`pool_mask_pyramid`
    from ``base_size``, the latent side), or an already pooled {h: ``[B, h, h]``}.

    Term 1: the N ``<df>`` maps are averaged, the mean map is min-max normalised (``normalize``: over the whole
    abnormal half, ``batch``, as the authors; per image; or not at all), and compared with M by MSE over all pixels.
    The ``<ob>`` maps are averaged and normalised the same way. Term 2 (``ob_term``):

    * ``region`` (the paper): MSE of the ``<ob>`` map against 1 − M over the pixels selected by ``ob_region`` --
      ``eq1``: M == 1 (there the target is 0; MVTec AD), ``gt0``: M > 0 (tiny VisA / MVTec 3D AD defects, target
      1 − M); 0 when no pixel qualifies;
    * ``background`` (Tab. 21 "with AT"): MSE of the ``<ob>`` map against 1 − M over all pixels;
    * ``none`` (Tab. 4 / 21 "w/o ST"): no term 2.
    """
    if not maps_by_res:
        raise ValueError("da_loss: no attention maps were captured")
    if ob_region not in ("eq1", "gt0"):
        raise ValueError(f"da_loss: unknown ob_region {ob_region!r} (eq1, gt0)")
    if ob_term not in OB_TERMS:
        raise ValueError(f"da_loss: unknown ob_term {ob_term!r} ({', '.join(OB_TERMS)})")
    sizes = sorted(maps_by_res, reverse=True)
    pooled = masks if isinstance(masks, Mapping) else pool_mask_pyramid(masks, sizes, base_size)
    ref = next(iter(maps_by_res.values()))
    term1 = ref.new_zeros((), dtype=torch.float32)
    term2 = ref.new_zeros((), dtype=torch.float32)
    for size in sizes:
        maps = maps_by_res[size].float()
        if maps.shape[1:3] != (size, size):
            raise ValueError(f"da_loss: maps at key {size} have shape {tuple(maps.shape)}")
        m = pooled[size].to(maps.device, torch.float32)
        if m.shape != maps.shape[:3]:
            raise ValueError(f"da_loss: pooled mask {tuple(m.shape)} vs maps {tuple(maps.shape[:3])} at {size}")
        df = _mean_map(maps, df_positions, normalize)
        term1 = term1 + ((df - m) ** 2).mean()
        if ob_term == "none":
            continue
        ob = _mean_map(maps, ob_positions, normalize)
        err = (ob - (1.0 - m)) ** 2
        if ob_term == "background":
            term2 = term2 + err.mean()
            continue
        # == 1 up to float rounding of the bilinear weights (which need not sum to exactly 1 in float32)
        region = (m >= 1.0 - ONE_TOL) if ob_region == "eq1" else (m > 0.0)
        n = region.sum()
        if int(n) > 0:
            term2 = term2 + (err * region).sum() / n
    return DALoss(term1, term2)

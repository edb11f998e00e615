"""RMP branch: architecture from configs, feature hooks, shapes on the tiny model, focal loss, training + resume."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from helpers import SMALL_RMP

# SD v1-4's U-Net / VAE configs (the keys the RMP reads), inline: no weights needed for the arithmetic
SD14_UNET = {"block_out_channels": [320, 640, 1280, 1280],
             "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
             "time_embedding_dim": None}
SD14_VAE = {"block_out_channels": [128, 256, 512, 512]}

SMALL = {"reduce_channels": [16, 8], "num_heads": 2, "head_dim": 12, "norm_num_groups": 8}


# ----------------------------------------------------------------------------- architecture arithmetic
def test_arch_from_sd14_configs_matches_the_paper():
    from seas.method.rmp import arch_from_configs

    a = arch_from_configs(SD14_UNET, SD14_VAE, {})
    assert a.unet_channels == (1280, 640)
    assert a.vae_channels == (512, 512, 256)  # decoder up_blocks[0..2]: 128², 256², 512²
    assert a.dim == 192 and a.num_heads * a.head_dim == 192
    assert a.upscale == 8
    enc = arch_from_configs(SD14_UNET, SD14_VAE, {"vae_features": "encoder"})
    assert enc.vae_channels == (512, 256, 128)  # encoder down_blocks[2,1,0] before their downsamplers


def test_arch_reads_the_chosen_unet_blocks():
    """rmp.unet_features (Tab. 25): the channels of the chosen up blocks, in order; widths checked per feature."""
    from seas.run.errors import ConfigError
    from seas.method.rmp import arch_from_configs

    a = arch_from_configs(SD14_UNET, SD14_VAE, {"unet_features": [0, 1, 2, 3], "reduce_channels": [64, 64, 32, 32]})
    assert a.unet_channels == (1280, 1280, 640, 320) and a.unet_features == (0, 1, 2, 3) and a.dim == 192
    one = arch_from_configs(SD14_UNET, SD14_VAE, {"unet_features": [3], "reduce_channels": [192]})
    assert one.unet_channels == (320,)
    with pytest.raises(ConfigError, match="rmp.reduce_channels"):
        arch_from_configs(SD14_UNET, SD14_VAE, {"unet_features": [1, 2, 3]})


def test_latent_size_of_each_up_block():
    from seas.method.rmp import latent_size

    # SD v1-4 at 512 px: up_blocks end at 16, 32, 64, 64; the latent is 64
    assert [latent_size(i, (s, s)) for i, s in enumerate((16, 32, 64, 64))] == [(64, 64)] * 4


def test_mrm_fuse_known_answers():
    """rmp.mrm_variant (Tab. 28) on scalars: v = 2, u' = 1, m = 3, CBR1(u') = 5, C131(m) = 7."""
    from seas.method.rmp import MRM_VARIANTS, mrm_fuse

    v, u, m, skip, post = (torch.tensor(float(x)) for x in (2, 1, 3, 5, 7))
    got = {k: float(mrm_fuse(k, v, u, m, skip, post)) for k in MRM_VARIANTS}
    assert got == {"full": 2 * 15 + 1, "one_block": 2 * (3 + 5) + 1, "one_conv": 2 * 5 + 1, "additive": 2 + 15 + 1,
                   "no_branches": 2 * 3 + 1, "no_residual": 2 * 15}
    with pytest.raises(ValueError, match="branches"):
        mrm_fuse("full", v, u, m)
    assert float(mrm_fuse("one_conv", v, u, skip=skip)) == 11  # (a) needs neither C131 block


def test_mrm_paper_cases_structure_at_sd14_widths():
    """Tab. 28's cases at SD v1-4 widths (dim 192, VAE 512 ch): (a) one_conv = CBR1(v) and one 1x1 CBR on u' and
    no conv block; (b) one_block adds one C131 block (1x1, 3x3, 1x1); (c) full chains a second C131 on m."""
    from seas.method.rmp import MRM_PAPER_CASES, MaskRefinementModule

    assert MRM_PAPER_CASES == {"one_conv": "(a)", "one_block": "(b)", "full": "(c)"}
    cbr = lambda cin, cout, k: cin * cout * k * k + 2 * cout  # conv without bias + BatchNorm weight and bias
    c131 = 2 * cbr(192, 192, 1) + cbr(192, 192, 3)
    want = {"one_conv": ({"project", "skip"}, cbr(512, 192, 1) + cbr(192, 192, 1)),
            "one_block": ({"project", "mid", "skip"}, cbr(512, 192, 1) + cbr(192, 192, 1) + c131),
            "full": ({"project", "mid", "skip", "post"}, cbr(512, 192, 1) + cbr(192, 192, 1) + 2 * c131)}
    for variant, (modules, count) in want.items():
        mrm = MaskRefinementModule(192, 512, 2, variant)
        assert {n.split(".")[0] for n, _ in mrm.named_parameters()} == modules, variant
        assert sum(p.numel() for p in mrm.parameters()) == count, variant
        kernels = [m.kernel_size[0] for m in mrm.modules() if isinstance(m, torch.nn.Conv2d)]
        assert kernels == {"one_conv": [1, 1], "one_block": [1, 1, 3, 1, 1],
                           "full": [1, 1, 3, 1, 1, 1, 3, 1]}[variant], variant  # project, mid, skip, post
    assert want["one_conv"][1] == 135_936 and want["one_block"][1] == 542_592 and want["full"][1] == 949_248


def test_arch_rejects_a_unet_without_four_levels():
    from seas.run.errors import CheckpointError
    from seas.method.rmp import arch_from_configs

    with pytest.raises(CheckpointError, match="4 resolution levels"):
        arch_from_configs({"block_out_channels": [32, 64, 64], "up_block_types": ["a", "b", "c"]}, SD14_VAE)


def test_arch_checks_the_transformer_width():
    from seas.run.errors import ConfigError
    from seas.method.rmp import arch_from_configs

    with pytest.raises(ConfigError, match="rmp.num_heads"):
        arch_from_configs(SD14_UNET, SD14_VAE, {"reduce_channels": [16, 8], "num_heads": 8, "head_dim": 24})
    with pytest.raises(ConfigError, match="rmp.norm_num_groups"):
        arch_from_configs(SD14_UNET, SD14_VAE, {"reduce_channels": [16, 8], "num_heads": 2, "head_dim": 12})


def test_arch_roundtrips_through_json():
    from seas.method.rmp import RMPArch, arch_from_configs

    a = arch_from_configs(SD14_UNET, SD14_VAE, {"mrm": False, "progressive": False})
    assert RMPArch.from_dict(a.to_dict()) == a
    b = arch_from_configs(SD14_UNET, SD14_VAE, {"unet_features": [0, 3], "reduce_channels": [128, 64],
                                                "mrm_variant": "no_residual"})
    assert RMPArch.from_dict(b.to_dict()) == b and b.unet_features == (0, 3) and b.mrm_variant == "no_residual"


# ----------------------------------------------------------------------------- hooks + shapes on the tiny model
def _features(sd, batch=2, res=64):
    from seas.method.rmp import num_vae_levels, unet_features, vae_features

    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, res, res, generator=g) * 2 - 1
    with torch.no_grad():
        z = sd.vae.encode(x).latent_dist.mean * sd.vae.config.scaling_factor
        emb = torch.randn(batch, 77, sd.text_encoder.config.hidden_size, generator=g)
        _, feats = unet_features(sd.unet, z, torch.tensor([3, 700][:batch]), emb)
        vfeats = vae_features(sd.vae, z, "decoder", num_vae_levels(sd.vae))
    return z, feats, vfeats


def test_hooked_features_follow_the_tiny_model_config(tiny_sd):
    from seas.method.rmp import arch_from_configs

    z, (low, high), vfeats = _features(tiny_sd)
    arch = arch_from_configs(tiny_sd.unet.config, tiny_sd.vae.config, {})
    h = z.shape[-1]
    assert tuple(high.shape) == (2, arch.unet_channels[1], h, h)  # up_blocks[2] at the latent size
    assert tuple(low.shape) == (2, arch.unet_channels[0], h // 2, h // 2)
    assert [tuple(v.shape[1:]) for v in vfeats] == [(c, h * 2 ** (i + 1), h * 2 ** (i + 1))
                                                     for i, c in enumerate(arch.vae_channels)]
    # hooks are gone afterwards
    for m in (tiny_sd.unet.up_blocks[1], tiny_sd.unet.up_blocks[2], *tiny_sd.vae.decoder.up_blocks):
        assert not m._forward_hooks


@pytest.mark.parametrize("blocks, widths", [([0, 2], [16, 8]), ([2], [24]), ([1, 2, 3], [8, 8, 8]),
                                           ([0, 1, 2, 3], [8, 8, 4, 4])])
def test_rmp_on_other_unet_blocks(tiny_sd, blocks, widths):
    """rmp.unet_features (Tab. 25) on the tiny model: the hooked blocks' outputs, fused at the latent size."""
    from seas.method.rmp import RefinedMaskPredictor, arch_from_configs, unet_features

    z, _, vfeats = _features(tiny_sd)
    g = torch.Generator().manual_seed(1)
    emb = torch.randn(2, 77, tiny_sd.text_encoder.config.hidden_size, generator=g)
    with torch.no_grad():
        _, feats = unet_features(tiny_sd.unet, z, torch.tensor([3, 700]), emb, blocks=blocks)
    arch = arch_from_configs(tiny_sd.unet.config, tiny_sd.vae.config,
                             {**SMALL, "reduce_channels": widths, "unet_features": blocks, "num_layers": 1})
    assert [f.shape[1] for f in feats] == list(arch.unet_channels)
    out = RefinedMaskPredictor(arch)(feats, vfeats)
    h = z.shape[-1]
    assert tuple(out.coarse_logits.shape) == (2, 2, h, h) and tuple(out.fine_logits.shape) == (2, 2, 64, 64)
    assert not any(m._forward_hooks for m in tiny_sd.unet.up_blocks)


@pytest.mark.parametrize("variant", ["additive", "no_branches", "no_residual"])
def test_mrm_variants_change_the_prediction(tiny_sd, variant):
    """rmp.mrm_variant (Tab. 28): the same weights where shared, another output."""
    from seas.method.rmp import RefinedMaskPredictor, arch_from_configs

    z, feats, vfeats = _features(tiny_sd)
    torch.manual_seed(0)
    base = RefinedMaskPredictor(arch_from_configs(tiny_sd.unet.config, tiny_sd.vae.config, {**SMALL, "num_layers": 1}))
    var = RefinedMaskPredictor(arch_from_configs(tiny_sd.unet.config, tiny_sd.vae.config,
                                                 {**SMALL, "num_layers": 1, "mrm_variant": variant}))
    missing, unexpected = var.load_state_dict(base.state_dict(), strict=False)
    assert not missing and all(".skip." in k or ".post." in k for k in unexpected)
    base.eval(), var.eval()
    with torch.no_grad():
        a, b = base(feats, vfeats).fine_logits, var(feats, vfeats).fine_logits
    assert a.shape == b.shape and not torch.allclose(a, b)


def test_capture_outputs_removes_hooks_after_an_exception(tiny_sd):
    from seas.method.rmp import capture_outputs

    mod = tiny_sd.unet.up_blocks[1]
    with pytest.raises(RuntimeError):
        with capture_outputs([mod]):
            assert len(mod._forward_hooks) == 1
            raise RuntimeError("boom")
    assert not mod._forward_hooks


@pytest.mark.parametrize("switches", [{}, {"mrm": False}, {"progressive": False}])
def test_rmp_forward_backward_shapes(tiny_sd, switches):
    from seas.method.rmp import RefinedMaskPredictor, anomaly_probability, arch_from_configs

    z, feats, vfeats = _features(tiny_sd)
    cfg = {**SMALL, "num_layers": 2, **switches}
    model = RefinedMaskPredictor(arch_from_configs(tiny_sd.unet.config, tiny_sd.vae.config, cfg))
    out = model(feats, vfeats)
    h = z.shape[-1]
    assert tuple(out.coarse_logits.shape) == (2, 2, h, h)
    assert tuple(out.fine_logits.shape) == (2, 2, 64, 64)
    p = anomaly_probability(out.fine_logits.detach())
    assert p.shape == (2, 64, 64) and float(p.min()) >= 0 and float(p.max()) <= 1
    out.fine_logits.sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["reduce.0.weight"] is not None and grads["reduce.0.weight"].abs().sum() > 0
    if switches.get("mrm", True):
        assert grads["mrms.0.project.0.weight"].abs().sum() > 0  # the VAE feature reaches the loss
    # joint batch: the first image refined, the second upsampled (VAE features of the refined one only)
    out_j = model(feats, [v[:1] for v in vfeats], n_refined=1)
    assert tuple(out_j.fine_logits.shape) == (2, 2, 64, 64)
    # normal path only (no VAE features): same output size
    out_n = model(feats, None, n_refined=0)
    assert tuple(out_n.fine_logits.shape) == (2, 2, 64, 64)


def test_rmp_learns_a_mask_from_fixed_features(tiny_sd):
    """A few optimiser steps on one batch must fit its mask: the branch can learn (not just run)."""
    from seas.method.rmp import RefinedMaskPredictor, arch_from_configs
    from seas.method.train_rmp import rmp_loss

    torch.manual_seed(0)
    z, feats, vfeats = _features(tiny_sd)
    model = RefinedMaskPredictor(arch_from_configs(tiny_sd.unet.config, tiny_sd.vae.config, {**SMALL, "num_layers": 1}))
    masks = torch.zeros(2, 1, 64, 64)
    masks[0, :, 8:24, 8:40] = 1
    masks[1, :, 40:60, 20:30] = 1
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    losses = []
    for _ in range(25):
        terms = rmp_loss(model(feats, vfeats), masks)
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
        losses.append(float(terms["total"].detach()))
    assert losses[-1] < 0.1 * losses[0]


def test_check_compatible_rejects_another_generator(tiny_sd):
    from seas.run.errors import CheckpointError
    from seas.method.rmp import arch_from_configs, check_compatible

    arch = arch_from_configs(SD14_UNET, SD14_VAE, {})
    with pytest.raises(CheckpointError, match="generator has"):
        check_compatible(arch, tiny_sd.unet, tiny_sd.vae)


def test_encoder_feature_ablation_shapes(tiny_sd):
    from seas.method.rmp import RefinedMaskPredictor, arch_from_configs, num_vae_levels, vae_features

    z, feats, _ = _features(tiny_sd)
    arch = arch_from_configs(tiny_sd.unet.config, tiny_sd.vae.config, {"vae_features": "encoder", **SMALL})
    with torch.no_grad():
        vf = vae_features(tiny_sd.vae, z, "encoder", num_vae_levels(tiny_sd.vae))
    assert [v.shape[1] for v in vf] == list(arch.vae_channels)
    out = RefinedMaskPredictor(arch)(feats, vf)
    assert tuple(out.fine_logits.shape[-2:]) == (64, 64)


# ----------------------------------------------------------------------------- losses
def test_focal_loss_known_answer():
    from seas.method.losses import focal_loss

    # one pixel, logits (0, ln 3): p = (1/4, 3/4)
    logits = torch.tensor([0.0, math.log(3.0)]).view(1, 2, 1, 1)
    l1 = focal_loss(logits, torch.ones(1, 1, 1, dtype=torch.long), gamma=2.0)
    l0 = focal_loss(logits, torch.zeros(1, 1, 1, dtype=torch.long), gamma=2.0)
    assert float(l1) == pytest.approx((0.25 ** 2) * -math.log(0.75), rel=1e-6)  # 0.017980
    assert float(l0) == pytest.approx((0.75 ** 2) * -math.log(0.25), rel=1e-6)  # 0.779790
    both = torch.cat([logits, logits])
    tgt = torch.tensor([1, 0]).view(2, 1, 1)
    assert float(focal_loss(both, tgt, 2.0)) == pytest.approx((float(l0) + float(l1)) / 2, rel=1e-6)
    # gamma 0 is cross-entropy
    x = torch.randn(2, 2, 3, 3, generator=torch.Generator().manual_seed(1))
    t = torch.randint(0, 2, (2, 3, 3), generator=torch.Generator().manual_seed(2))
    assert float(focal_loss(x, t, 0.0)) == pytest.approx(float(F.cross_entropy(x, t)), rel=1e-6)


def test_coarse_target_bilinear_rules():
    from seas.method.train_rmp import coarse_target

    m = torch.zeros(1, 1, 8, 8)
    m[0, 0, :4, :4] = 1  # a covered 4x4 block -> its coarse pixel is 1
    m[0, 0, 4:, 5] = 1  # a 1-px line: bilinear samples rows/cols 5-6 of that cell -> 0.5, not anomalous
    assert coarse_target(m, (2, 2)).tolist() == [[[1, 0], [0, 0]]]
    thin = torch.zeros(1, 1, 8, 8)
    thin[0, 0, :, 1] = 1  # a 1-px line on a sampled column: 0.5 after resizing -> gone under "bilinear"
    assert coarse_target(thin, (2, 2)).sum() == 0
    assert coarse_target(thin, (2, 2), "bilinear_max").tolist() == [[[1, 0], [1, 0]]]  # peak / max = 1
    assert coarse_target(torch.zeros(1, 1, 8, 8), (2, 2), "bilinear_max").sum() == 0


def test_rmp_loss_on_the_joint_batch():
    from seas.method.losses import focal_loss
    from seas.method.rmp import RMPOutput
    from seas.method.train_rmp import coarse_target, rmp_loss

    g = torch.Generator().manual_seed(0)
    out = RMPOutput(torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 16, 16, generator=g))
    masks = (torch.rand(2, 1, 16, 16, generator=g) > 0.7).float()  # 2 abnormal images, then 1 normal
    full = rmp_loss(out, masks)
    assert set(full) == {"fine", "coarse", "total"}
    fine_t = torch.cat([masks[:, 0].long(), torch.zeros(1, 16, 16, dtype=torch.long)])
    coarse_t = torch.cat([coarse_target(masks, (4, 4)), torch.zeros(1, 4, 4, dtype=torch.long)])
    assert float(full["fine"]) == pytest.approx(float(focal_loss(out.fine_logits, fine_t)), rel=1e-6)
    assert float(full["coarse"]) == pytest.approx(float(focal_loss(out.coarse_logits, coarse_t)), rel=1e-6)
    assert float(full["total"]) == pytest.approx(float(full["fine"]) + float(full["coarse"]), rel=1e-6)
    assert set(rmp_loss(out, masks, coarse_supervision=False)) == {"fine", "total"}


# ----------------------------------------------------------------------------- training + resume
def _state(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "rmp.safetensors"))


def test_train_rmp_resumes_to_the_same_weights(make_cfg, split_path, generator_ckpt, tmp_path):
    from seas.method.rmp import load_rmp
    from seas.method.train_rmp import train_rmp

    cfg = make_cfg({**SMALL_RMP, "rmp.steps_per_type": 2, "rmp.checkpoint_every": 100, "rmp.batch_normal": 1,
                    "rmp.batch_abnormal": 1})
    sp = split_path("weave")
    gen = generator_ckpt
    whole = train_rmp(cfg, sp, gen, tmp_path / "rmp_whole")
    assert whole is not None and not (tmp_path / "rmp_whole.work").exists()

    out = tmp_path / "rmp_resumed"
    assert train_rmp(cfg, sp, gen, out, stop_after=3) is None  # "interrupted" after 3 of 4 steps
    assert (tmp_path / "rmp_resumed.work" / "ckpt" / "state.json").is_file() and not out.exists()
    assert train_rmp(cfg, sp, gen, out) == out
    assert not (tmp_path / "rmp_resumed.work").exists()
    a, b = _state(whole), _state(out)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    model = load_rmp(out)
    assert model.arch.reduce_channels == (16, 8)


def test_train_rmp_cli_help(capsys):
    from seas.method.train_rmp import main

    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    assert "--generator" in capsys.readouterr().out


def test_load_rmp_names_the_missing_file(tmp_path):
    from seas.run.errors import CheckpointError
    from seas.method.rmp import load_rmp

    with pytest.raises(CheckpointError, match="rmp.json"):
        load_rmp(tmp_path)


def test_train_rmp_asked_for_8bit_adamw_on_cpu_says_what_trained(make_cfg, split_path, generator_ckpt, tmp_path,
                                                                 caplog):
    """rmp.optimizer adamw8bit (the authors' RMP optimizer) on the CPU: torch's AdamW trains, with a warning naming
    the key; rmp.json records what was used (the tables' protocol column reads it from the run record)."""
    import json
    import logging

    from seas.method.train_rmp import train_rmp

    cfg = make_cfg({**SMALL_RMP, "rmp.steps_per_type": 1, "rmp.batch_normal": 1, "rmp.batch_abnormal": 1,
                    "rmp.gradient_accumulation": 1, "rmp.optimizer": "adamw8bit"})
    with caplog.at_level(logging.WARNING, logger="seas.method.optim"):
        out = train_rmp(cfg, split_path("weave"), generator_ckpt, tmp_path / "rmp")
    assert "rmp.optimizer: adamw8bit (the authors' 8-bit AdamW) needs CUDA and bitsandbytes; on cpu" in caplog.text
    assert json.loads((out / "rmp.json").read_text())["optimizer"] == "adamw"

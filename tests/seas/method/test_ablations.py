"""Every ablation switch of the schema changes what it ablates: the trained generator, the trained RMP, the
generated pairs, or the workflow's DAG. (A switch that changes nothing is a defect: the old `mixed_batch` did.)"""
from __future__ import annotations

import pytest
import torch

from seas.data.split import Split
from seas.method.train_generator import GeneratorTrainer, load_train_data

from helpers import SMALL_RMP as BASE_RMP

SMALL_RMP = {**BASE_RMP, "rmp.steps_per_type": 1, "rmp.batch_abnormal": 1, "rmp.batch_normal": 1,
             "rmp.gradient_accumulation": 1}


# ----------------------------------------------------------------------------- generator
def _generator_after_two_steps(make_cfg, split_path, tmp_path, **gen) -> torch.Tensor:
    cfg = make_cfg({"generator.lr_unet": 1e-4, **{f"generator.{k}": v for k, v in gen.items()}})
    tr = GeneratorTrainer(cfg, Split.load(split_path("weave")), tmp_path / "g", device="cpu")
    tr.data = load_train_data(tr.split, cfg["model"]["resolution"], cfg["dataset"]["image_policy"])
    for _ in range(2):
        tr.train_step()
    return torch.cat([p.detach().flatten() for p in tr.unet.parameters()])


_BASE: dict = {}


def _base_generator(make_cfg, split_path, tmp_path) -> torch.Tensor:
    if "unet" not in _BASE:
        _BASE["unet"] = _generator_after_two_steps(make_cfg, split_path, tmp_path / "base")
    return _BASE["unet"]


GENERATOR_SWITCHES = [
    {"prompt": "typical"},                      # Tab. 4 (a)
    {"na_loss": False},                         # Tab. 4 (c)
    {"da_loss": False},
    {"da_ob_term": "none"},                     # Tab. 4 / 21 w/o ST
    {"da_ob_term": "background"},               # Tab. 21 with AT
    {"da_ob_region": "gt0"},
    {"da_map": "tokens"},
    {"da_normalize": "image"},
    {"da_resolutions": [16]},                   # Tab. 24
    {"num_df_tokens": 2},                       # Tab. 20 (N)
    {"num_ob_tokens": 2},                       # Tab. 20 (N')
    {"training_order": "abnormal_first"},       # Tab. 23
    {"training_order": "normal_first"},         # Tab. 23
    {"train_full_embedding": True},
    {"gradient_accumulation": 2},
]


def test_generator_training_is_repeatable(make_cfg, split_path, tmp_path):
    """The comparisons below mean something: the same settings give bit-identical weights."""
    assert torch.equal(_generator_after_two_steps(make_cfg, split_path, tmp_path / "again"),
                       _base_generator(make_cfg, split_path, tmp_path))


@pytest.mark.parametrize("switch", GENERATOR_SWITCHES, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_generator_switch_changes_the_trained_unet(switch, make_cfg, split_path, tmp_path):
    base = _base_generator(make_cfg, split_path, tmp_path)
    changed = _generator_after_two_steps(make_cfg, split_path, tmp_path / "sw", **switch)
    assert not torch.equal(changed, base)


def test_sequential_training_orders_run_the_phases_in_order(make_cfg, split_path, tmp_path):
    cfg = make_cfg({"generator.training_order": "normal_first", "generator.steps_per_type": 1})
    tr = GeneratorTrainer(cfg, Split.load(split_path("weave")), tmp_path / "g", device="cpu")
    tr.data = load_train_data(tr.split, cfg["model"]["resolution"], cfg["dataset"]["image_policy"])
    assert tr.total_steps == 2 * 2  # 1 step x 2 types, twice (one phase each)
    seen = []
    for _ in range(tr.total_steps):
        terms = tr.train_step()
        seen.append((terms["l_sd"] > 0, terms["l_na"] > 0, terms["da_term1"] > 0))
    assert seen == [(False, True, False)] * 2 + [(True, False, True)] * 2


def test_training_order_needs_normal_images(make_cfg):
    from seas.run.errors import ConfigError

    with pytest.raises(ConfigError, match="training_order"):
        make_cfg({"generator.training_order": "abnormal_first", "generator.na_loss": False})


def test_per_type_generator_knows_only_its_type(make_cfg, split_path, tmp_path):
    split = Split.load(split_path("weave")).restricted(["stain"])
    cfg = make_cfg()
    tr = GeneratorTrainer(cfg, split, tmp_path / "g", device="cpu")
    assert tr.token_map.anomaly_types == ["stain"] and tr.total_steps == cfg["generator"]["steps_per_type"]
    assert all(t == "stain" for *_, t in split.train_pairs()) and split.test == Split.load(split_path("weave")).test


# ----------------------------------------------------------------------------- RMP
def _rmp_weights(make_cfg, split_path, gen, out, **over):
    from safetensors.torch import load_file

    from seas.method.train_rmp import train_rmp

    cfg = make_cfg({**SMALL_RMP, **{f"rmp.{k}": v for k, v in over.items()}})
    train_rmp(cfg, split_path("weave"), gen, out)
    return load_file(str(out / "rmp.safetensors"))


RMP_SWITCHES = [
    {"mrm": False},                    # Tab. 5 / 28
    {"progressive": False},            # Tab. 5
    {"coarse_supervision": False},     # Tab. 5
    {"normal_supervision": False},     # Tab. 27
    {"vae_features": "encoder"},       # Tab. 26
    {"gradient_accumulation": 2},
    {"focal_gamma": 0.0},
    # Tab. 25: [0, 2] has the default's widths on the tiny U-Net (up_blocks 0-2 all 64 ch): only the features differ
    {"unet_features": [0, 2]},
    {"unet_features": [2], "reduce_channels": [24]},
    {"unet_features": [1, 2, 3], "reduce_channels": [8, 8, 8]},
    {"mrm_variant": "additive"},       # extra (tab28_extra; same parameters as the default: only the fusion differs)
    {"mrm_variant": "no_residual"},    # extra (tab28_extra; same parameters as the default)
    {"mrm_variant": "no_branches"},    # extra (tab28_extra)
    {"mrm_variant": "one_block"},      # Tab. 28 (b)
    {"mrm_variant": "one_conv"},       # Tab. 28 (a)
]


def test_rmp_switches_change_the_trained_branch(make_cfg, split_path, generator_ckpt, tmp_path):
    base = _rmp_weights(make_cfg, split_path, generator_ckpt, tmp_path / "base")
    for i, switch in enumerate(RMP_SWITCHES):
        w = _rmp_weights(make_cfg, split_path, generator_ckpt, tmp_path / f"sw{i}", **switch)
        same = w.keys() == base.keys() and all(w[k].shape == base[k].shape and torch.equal(w[k], base[k])
                                               for k in w)
        assert not same, switch


@pytest.mark.parametrize("over, key", [
    ({"rmp.unet_features": [1, 2, 3]}, "rmp.reduce_channels"),  # 3 features, 2 widths
    ({"rmp.unet_features": [2], "rmp.reduce_channels": [16, 8]}, "rmp.reduce_channels"),
    ({"rmp.unet_features": [2, 1]}, "rmp.unet_features"),  # not coarse -> fine
    ({"rmp.unet_features": [1, 1]}, "rmp.unet_features"),
    ({"rmp.unet_features": [2, 4]}, "rmp.unet_features"),  # SD's U-Net has up_blocks[0..3]
    ({"rmp.unet_features": []}, "rmp.unet_features"),
    ({"rmp.mrm": False, "rmp.mrm_variant": "additive"}, "rmp.mrm_variant"),  # no MRM to vary
    ({"rmp.mrm_variant": "concat"}, "rmp.mrm_variant"),
])
def test_rmp_feature_and_mrm_switches_are_validated(make_cfg, over, key):
    """Inconsistent Tab. 25 / 28 settings fail at load time, naming the key (not later, inside a training job)."""
    import re

    from seas.run.errors import ConfigError

    with pytest.raises(ConfigError, match=re.escape(key)):
        make_cfg({**SMALL_RMP, **over})


def test_valid_feature_combinations_are_accepted(make_cfg):
    for over in ({"rmp.unet_features": [3], "rmp.reduce_channels": [24]},
                 {"rmp.unet_features": [0, 1, 2, 3], "rmp.reduce_channels": [8, 8, 4, 4]},
                 {"rmp.mrm_variant": "no_branches"}):
        cfg = make_cfg({**SMALL_RMP, **over})
        assert all(cfg["rmp"][k.split(".")[1]] == v for k, v in over.items())


def test_generation_taps_the_unet_blocks_the_rmp_was_trained_on(make_cfg, split_path, generator_ckpt, tmp_path,
                                                                 monkeypatch):
    """The RMP checkpoint records rmp.unet_features; generation hooks those blocks (not the default [1, 2]),
    whatever the generation-time config says."""
    from seas.method import rmp as rmp_mod
    from seas.method.generate import generate_indices, prepare
    from seas.method.train_rmp import train_rmp

    over = {**SMALL_RMP, "rmp.unet_features": [0, 2]}
    rmp_dir = train_rmp(make_cfg(over), split_path("weave"), generator_ckpt, tmp_path / "rmp")
    ctx = prepare(make_cfg(SMALL_RMP), Split.load(split_path("weave")), generator_ckpt, rmp_dir, "scratch",
                  device=torch.device("cpu"))
    seen = []
    orig = rmp_mod.unet_features

    def spy(*a, **k):
        seen.append(tuple(k.get("blocks", (1, 2))))
        return orig(*a, **k)

    monkeypatch.setattr(rmp_mod, "unet_features", spy)
    generate_indices(ctx, [0])
    assert seen and set(seen) == {(0, 2)}


def test_coarse_target_switch_changes_the_rmp_loss_on_thin_defects():
    """rmp.coarse_target acts on batches whose resized masks peak below 1 (thin defects): another target, another
    loss and gradient. (On batches with a fully covered latent cell the two rules coincide by construction.)"""
    from seas.method.rmp import RMPOutput
    from seas.method.train_rmp import rmp_loss

    g = torch.Generator().manual_seed(0)
    out = RMPOutput(torch.randn(2, 2, 8, 8, generator=g), torch.randn(2, 2, 64, 64, generator=g, requires_grad=True))
    masks = torch.zeros(1, 1, 64, 64)
    masks[0, 0, 10:50, 11] = 1  # a 1-px scratch: 0.5 at the coarse sample points
    a = rmp_loss(out, masks)["coarse"]
    b = rmp_loss(out, masks, coarse_rule="bilinear_max")["coarse"]
    assert float(b) != float(a)


# ----------------------------------------------------------------------------- generation
GENERATION_SWITCHES = [
    ("generation.scale_init_latent", True),
    ("generation.timestep_spacing", "leading"),
    ("generation.mask_steps", 1),
    ("generation.init_schedule_steps", 1000),
    ("rmp.bn_train_mode_at_inference", True),
]


def test_generation_switches_change_the_pairs(make_cfg, split_path, generator_ckpt, tmp_path):
    from seas.method.generate import prepare
    from seas.method.rmp import anomaly_probability  # noqa: F401  (the probability the masks threshold)
    from seas.method.train_rmp import train_rmp

    cfg = make_cfg(SMALL_RMP)
    rmp_dir = train_rmp(cfg, split_path("weave"), generator_ckpt, tmp_path / "rmp")
    split = Split.load(split_path("weave"))

    def run(key=None, value=None):
        c = make_cfg({**SMALL_RMP, **({key: value} if key else {})})
        ctx = prepare(c, split, generator_ckpt, rmp_dir, "scratch", device=torch.device("cpu"))
        captured = {}
        from seas.method import generate as gen_mod

        orig = gen_mod.threshold_masks

        def keep(prob, tau):
            captured["prob"] = prob.clone()
            return orig(prob, tau)

        gen_mod.threshold_masks = keep
        try:
            imgs, _ = gen_mod.generate_indices(ctx, [0, 1])
        finally:
            gen_mod.threshold_masks = orig
        return imgs, captured["prob"]

    base_img, base_prob = run()
    for key, value in GENERATION_SWITCHES:
        img, prob = run(key, value)
        assert not (torch.equal(prob, base_prob) and (img == base_img).all()), key
    # tau (Tab. 29): the same probabilities, another threshold -> other masks (unless the map is flat)
    from seas.method.generate import threshold_masks

    lo, hi = float(base_prob.min()), float(base_prob.max())
    assert lo < hi
    mid = (lo + hi) / 2
    assert (threshold_masks(base_prob, mid) != threshold_masks(base_prob, hi - 1e-6)).any()


# ----------------------------------------------------------------------------- what each switch removes (properties)
def _terms_after_two_steps(make_cfg, split_path, tmp_path, **gen) -> list[dict]:
    cfg = make_cfg({"generator.lr_unet": 1e-4, **{f"generator.{k}": v for k, v in gen.items()}})
    tr = GeneratorTrainer(cfg, Split.load(split_path("weave")), tmp_path / "g", device="cpu")
    tr.data = load_train_data(tr.split, cfg["model"]["resolution"], cfg["dataset"]["image_policy"])
    return [tr.train_step() for _ in range(2)]


@pytest.mark.parametrize("switch, zero, nonzero", [
    ({}, (), ("l_sd", "l_na", "da_term1", "da_term2")),              # the method: every term is trained
    ({"da_loss": False}, ("da_term1", "da_term2"), ("l_sd", "l_na")),  # DA loss off: its terms are 0 in the log
    ({"na_loss": False}, ("l_na",), ("l_sd", "da_term1")),            # NA loss off: no normal-image term
    ({"da_ob_term": "none"}, ("da_term2",), ("da_term1",)),           # w/o ST: the <ob> term of the DA loss is 0
])
def test_generator_switch_removes_its_term(switch, zero, nonzero, make_cfg, split_path, tmp_path):
    terms = _terms_after_two_steps(make_cfg, split_path, tmp_path, **switch)
    for t in terms:
        assert all(t[k] == 0.0 for k in zero), (switch, t)
        assert all(t[k] > 0.0 for k in nonzero), (switch, t)


def test_rmp_switches_remove_what_they_name(make_cfg, split_path, generator_ckpt, tmp_path):
    """MRM off -> no MRM parameters at all; no branches -> the MRMs lose their branch convolutions; normal
    supervision off -> the RMP's training batches hold no normal rows."""
    base = _rmp_weights(make_cfg, split_path, generator_ckpt, tmp_path / "base")
    assert any(k.startswith("mrms.") for k in base)
    no_mrm = _rmp_weights(make_cfg, split_path, generator_ckpt, tmp_path / "no_mrm", mrm=False)
    assert not any(k.startswith("mrms.") for k in no_mrm)
    no_br = _rmp_weights(make_cfg, split_path, generator_ckpt, tmp_path / "no_br", mrm_variant="no_branches")
    assert sum(v.numel() for k, v in no_br.items() if k.startswith("mrms.")) < \
        sum(v.numel() for k, v in base.items() if k.startswith("mrms."))


def test_rmp_without_normal_supervision_samples_no_normal_rows(make_cfg, split_path, generator_ckpt, tmp_path,
                                                               monkeypatch):
    from seas.method import train_rmp as tr_mod

    seen = []
    orig = tr_mod.sample_batch

    def spy(data, n_abnormal, n_normal, generator):
        seen.append(n_normal)
        return orig(data, n_abnormal, n_normal, generator)

    monkeypatch.setattr(tr_mod, "sample_batch", spy)
    _rmp_weights(make_cfg, split_path, generator_ckpt, tmp_path / "on")
    assert seen and all(n > 0 for n in seen)
    seen.clear()
    _rmp_weights(make_cfg, split_path, generator_ckpt, tmp_path / "off", normal_supervision=False)
    assert seen and all(n == 0 for n in seen)

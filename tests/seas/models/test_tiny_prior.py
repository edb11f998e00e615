"""The pretrained tiny prior (seas.models.tiny_prior): losses, determinism, the hash-checked file, the model built from it,
and the committed prior the default run uses."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from seas.models import prior_file, tiny_prior as tp
from seas.run.errors import CheckpointError

REPO = Path(__file__).resolve().parents[3]
COMMITTED = REPO / "priors" / "tiny_prior.safetensors"
TINY_DEMO = {"seed": 0, "image_size": 32, "num_train_good": 3, "num_test_good": 1, "num_per_type": 3}
TINY_RECIPE = {"vae_steps": 2, "vae_batch": 2, "vae_crop": 16, "unet_steps": 3, "unet_batch": 2, "unet_crop": 4,
               "unet_crop_steps": 1, "warmup": 1}


def test_vae_loss_known_answers():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    zero = torch.zeros(2, 4, 2, 2)
    total, parts = tp.vae_loss(x, x, zero, zero, kl_weight=1.0, grad_weight=1.0)
    assert float(total) == 0.0 and parts == {"l1": 0.0, "grad": 0.0, "kl": 0.0}  # perfect recon, posterior = prior
    # a constant offset: L1 = offset, image gradients unchanged; KL of N(1, 1) per element = 0.5 * mean^2
    total, parts = tp.vae_loss(x + 0.5, x, zero + 1.0, zero, kl_weight=0.1, grad_weight=1.0)
    assert parts["l1"] == pytest.approx(0.5) and parts["grad"] == pytest.approx(0.0, abs=1e-6)
    assert parts["kl"] == pytest.approx(0.5 * 16) and float(total) == pytest.approx(0.5 + 0.1 * 8)


def test_dihedral_gives_8_distinct_transforms_and_crops_keep_size():
    x = torch.arange(9.0).view(1, 3, 3)
    outs = [tp.dihedral(x, k) for k in range(8)]
    assert len({tuple(o.flatten().tolist()) for o in outs}) == 8
    assert torch.equal(outs[0], x) and torch.equal(tp.dihedral(x, 4), torch.flip(x, dims=(-1,)))
    imgs = torch.rand(3, 3, 16, 16)
    b = tp._batch(imgs, [0, 2], torch.Generator().manual_seed(0), crop=8)
    assert b.shape == (2, 3, 8, 8)


def test_scaling_factor_is_inverse_std():
    z = torch.randn(64, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 4.0
    assert tp.latent_scaling_factor(z) == pytest.approx(0.25, rel=0.02)


def test_latent_rescaling_is_exact():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(**tp.prior_configs(32)["vae"]).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        post = vae.encode(x).latent_dist
        before = vae.decode(post.mean).sample
        tp.rescale_latent_space(vae, 5.0)
        post2 = vae.encode(x).latent_dist
        after = vae.decode(post2.mean).sample
    assert torch.allclose(post2.mean, 5.0 * post.mean, atol=1e-5) and torch.allclose(post2.std, 5.0 * post.std)
    assert torch.allclose(after, before, atol=1e-5)


@pytest.fixture(scope="module")
def small_prior(tmp_path_factory):
    """A prior pretrained for a few steps on 32 px demo images (the committed one is the same code, more steps)."""
    state, manifest = tp.pretrain(TINY_DEMO, 32, seed=0, recipe=TINY_RECIPE)
    out = prior_file.write_prior(state, manifest, tmp_path_factory.mktemp("prior") / "p.safetensors")
    return out, state, manifest


def test_pretraining_is_deterministic_and_seeded(small_prior):
    _, state, manifest = small_prior
    again, _ = tp.pretrain(TINY_DEMO, 32, seed=0, recipe=TINY_RECIPE)
    other, _ = tp.pretrain(TINY_DEMO, 32, seed=1, recipe=TINY_RECIPE)
    assert state.keys() == again.keys()
    assert all(torch.equal(state[k], again[k]) for k in state)  # same seed -> same weights
    assert not all(torch.equal(state[k], other[k]) for k in state if k.startswith("unet."))
    assert manifest["data"]["images"] == [f"{p}/{i:03d}.png" for p in ("washer", "weave") for i in range(3)]
    assert [h["phase"] for h in manifest["history"]].count("unet") >= 2
    assert all(math.isfinite(h["loss"]) for h in manifest["history"])


@pytest.mark.parametrize("switch", ["product_captions", "caption_suffixes"])
def test_caption_switches_change_the_unet_only(small_prior, switch):
    """recipe product_captions ("a washer") and caption_suffixes ("... with light texture") are switches: each
    changes what the U-Net learns, never the VAE or the text encoder; the manifest lists the captions."""
    _, state, manifest = small_prior
    assert manifest["recipe"]["product_captions"] > 0 and manifest["recipe"]["caption_suffixes"] > 0
    assert manifest["captions"][1][0] == "a washer" and manifest["captions"][0][0] == tp.PRIOR_PROMPT
    assert all(c.startswith(row[0] + " with ") for row in manifest["captions"] for c in row[1:])
    other, m2 = tp.pretrain(TINY_DEMO, 32, seed=0, recipe={**TINY_RECIPE, switch: 0.0})
    assert all(torch.equal(state[k], other[k]) for k in state if not k.startswith("unet."))
    assert not all(torch.equal(state[k], other[k]) for k in state if k.startswith("unet."))
    generic, m3 = tp.pretrain(TINY_DEMO, 32, seed=0,
                              recipe={**TINY_RECIPE, "product_captions": 0.0, "caption_suffixes": 0.0})
    assert m3["captions"] is None and m3["product_prompt"] is None


def test_prior_file_is_hash_checked(small_prior, tmp_path):
    out, _, _ = small_prior
    m = prior_file.read_prior_manifest(out)
    assert m["sha256"] == prior_file.sha256_file(out) and m["dtype"] == "float16" and m["prompt"] == tp.PRIOR_PROMPT
    bad = tmp_path / "p.safetensors"
    data = bytearray(out.read_bytes())
    data[-1] ^= 0xFF
    bad.write_bytes(bytes(data))
    (tmp_path / "p.json").write_text(prior_file.manifest_path(out).read_text())
    with pytest.raises(CheckpointError, match="sha256"):
        prior_file.read_prior_manifest(bad)
    with pytest.raises(CheckpointError, match="not found"):
        prior_file.read_prior_manifest(tmp_path / "missing.safetensors")


def test_tiny_model_from_prior_loads_its_weights_and_is_labelled_pretrained(small_prior, tmp_path):
    from seas.models.sd import load_sd
    from seas.run.labels import TINY_PRETRAINED_LABEL
    from seas.models.tiny_sd import read_marker, write_tiny_sd

    out, state, manifest = small_prior
    model = write_tiny_sd(tmp_path / "m", prior=out)
    marker = read_marker(model)
    assert marker["weights"] == "pretrained" and marker["prior_sha256"] == manifest_sha(out)
    sd = load_sd(model)
    assert sd.label == f"{TINY_PRETRAINED_LABEL} (demo prior)"  # what it saw: the demo's normals (its manifest)
    assert marker["prior_data"]["source"] == "demo" and marker["prior_data"]["products"] == ["washer", "weave"]
    assert sd.vae.config.scaling_factor == manifest["configs"]["vae"]["scaling_factor"]
    assert len(sd.vae.config.block_out_channels) == 3  # x4 VAE
    w = sd.unet.conv_in.weight
    assert torch.equal(w, state["unet.conv_in.weight"].half().float())  # stored float16, loaded float32
    # the RMP's feature taps derive from the configs as for SD: U-Net up_blocks[1..2], VAE decoder levels
    from seas.method.rmp import arch_from_configs

    arch = arch_from_configs(sd.unet.config, sd.vae.config, {"reduce_channels": (32, 16), "num_heads": 2,
                                                             "head_dim": 24, "norm_num_groups": 16})
    assert arch.unet_channels == (64, 64) and arch.vae_channels == (64, 32) and arch.upscale == 4


def manifest_sha(out):
    return json.loads(prior_file.manifest_path(out).read_text())["sha256"]


def test_committed_prior_matches_its_manifest_and_the_architecture():
    m = prior_file.read_prior_manifest(COMMITTED)  # sha256 checked
    assert COMMITTED.stat().st_size <= 20 * 2**20
    want = tp.prior_configs(m["resolution"])
    got = {k: dict(v) for k, v in m["configs"].items()}
    got["vae"].pop("scaling_factor")
    want["vae"].pop("scaling_factor")
    assert json.loads(json.dumps(want)) == got
    assert m["recipe"] == tp.DEFAULT_RECIPE and m["seed"] == 0


def test_cli_reads_only_its_declared_keys(make_cfg, tmp_path, monkeypatch):
    """Not a workflow stage (the prior is a committed file), but a CLI like them: one command regenerates it."""
    import yaml

    import seas.run.config
    from helpers import RecordingConfig, allowed

    cfg = make_cfg({"dataset.demo": TINY_DEMO, "model.resolution": 32})
    c = tmp_path / "config.yaml"
    c.write_text(yaml.safe_dump(cfg))
    reads: set[str] = set()
    orig = seas.run.config.load_config
    monkeypatch.setattr(seas.run.config, "load_config", lambda *a, **k: RecordingConfig(orig(*a, **k), reads))
    argv = ["--config", str(c), "--out", str(tmp_path / "p.safetensors")]
    for k, v in TINY_RECIPE.items():
        argv += ["--" + k.replace("_", "-"), str(v)]
    assert tp.main(argv) == 0
    assert not [r for r in reads if not allowed(r, tp.CONFIG_KEYS)]
    assert prior_file.read_prior_manifest(tmp_path / "p.safetensors")["resolution"] == 32

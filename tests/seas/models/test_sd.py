"""The tiny SD model: written in the diffusers layout, loaded through the same loader as SD v1-4."""
from __future__ import annotations

import json

import pytest
import torch

from seas.run.errors import CheckpointError
from seas.models.sd import load_sd, model_label
from seas.run.labels import TINY_RANDOM_LABEL as TINY_LABEL


def test_layout(tiny_sd_dir):
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        assert (tiny_sd_dir / sub).is_dir(), sub
    index = json.loads((tiny_sd_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert list((tiny_sd_dir / "unet").glob("*.safetensors"))


def test_loads_through_the_real_loader(tiny_sd_dir):
    sd = load_sd(str(tiny_sd_dir))
    assert sd.is_tiny and sd.label == TINY_LABEL == model_label(str(tiny_sd_dir))
    tok = sd.tokenizer
    assert len(tok) == 49408 and tok.model_max_length == 77
    # the real CLIP BPE: known ids of SD's tokenizer
    assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert tok("object defect").input_ids[1:3] == tok("object").input_ids[1:2] + tok("defect").input_ids[1:2]
    # SD v1-4 structure
    u = sd.unet.config
    assert tuple(u.down_block_types) == ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",)
    assert tuple(u.up_block_types) == ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3
    assert u.layers_per_block == 2 and u.cross_attention_dim == sd.text_encoder.config.hidden_size
    assert len(sd.vae.config.block_out_channels) == 4 and sd.vae.config.latent_channels == 4
    assert sd.noise_scheduler.config.num_train_timesteps == 1000
    assert sd.noise_scheduler.config.beta_schedule == "scaled_linear"
    # one forward pass end to end: 64 px image -> 8x8 latent -> U-Net
    ids = tok(["a photo"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        emb = sd.text_encoder(ids)[0]
        lat = sd.vae.encode(torch.zeros(1, 3, 64, 64)).latent_dist.sample() * sd.vae.config.scaling_factor
        out = sd.unet(lat, torch.tensor([10]), encoder_hidden_states=emb).sample
    assert emb.shape == (1, 77, 32) and lat.shape == (1, 4, 8, 8) and out.shape == lat.shape


def test_rewrite_is_idempotent_and_refuses_foreign_dirs(tiny_sd_dir, tmp_path):
    from seas.models.tiny_sd import write_tiny_sd

    before = (tiny_sd_dir / "unet" / "config.json").stat().st_mtime_ns
    write_tiny_sd(tiny_sd_dir, seed=0, sample_size=64)
    assert (tiny_sd_dir / "unet" / "config.json").stat().st_mtime_ns == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.txt").write_text("x")
    with pytest.raises(CheckpointError, match="not a tiny model folder; refusing"):
        write_tiny_sd(tmp_path / "mine")


def test_loader_errors(tmp_path):
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "unet").mkdir()
    with pytest.raises(CheckpointError, match=r"half is not a diffusers Stable Diffusion folder: missing model_index.json, vae"):
        load_sd(tmp_path / "half")
    with pytest.raises(CheckpointError, match=r"(?s)cannot load Stable Diffusion model 'nobody/no-such-model'.*local folder"):
        load_sd("nobody/no-such-model")

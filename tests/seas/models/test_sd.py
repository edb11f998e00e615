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
    with pytest.raises(CheckpointError, match=r"(?s)'nobody/no-such-model' is not a local folder.*set model.pretrained to that local folder"):
        load_sd("nobody/no-such-model")


# --- a hub id without a hub fails in seconds (issue 25.7) -----------------------------------------------------------
def _load_in_a_fresh_process(tmp_path, **env):
    """load_sd of a hub id that exists nowhere, as a user's process meets it (the variables set at start, an empty
    Hugging Face cache); (seconds, stderr)."""
    import os
    import subprocess
    import sys
    import time

    from helpers import REPO

    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith(("HF_", "TRANSFORMERS_"))
             and "proxy" not in k.lower()}
    code = "from seas.models.sd import load_sd; load_sd('nobody-seas-bench/no-such-model')"
    start = time.monotonic()
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={**clean, "HF_HOME": str(tmp_path / "hf"), "PYTHONPATH": str(REPO), **env})
    took = time.monotonic() - start
    assert res.returncode != 0
    return took, res.stderr


def test_offline_hub_id_fails_in_seconds_naming_the_way_out(tmp_path):
    took, err = _load_in_a_fresh_process(tmp_path, HF_HUB_OFFLINE="1")
    assert took < 10, f"{took:.1f} s"
    assert "CheckpointError: model.pretrained: 'nobody-seas-bench/no-such-model' is not a local folder" in err
    assert "HF_HUB_OFFLINE is set" in err and "set model.pretrained to that local folder" in err


def test_unreachable_hub_fails_in_seconds(tmp_path):
    """No HF_HUB_OFFLINE, but nothing listens at the endpoint: one short probe, not minutes of retries."""
    took, err = _load_in_a_fresh_process(tmp_path, HF_ENDPOINT="http://127.0.0.1:9")
    assert took < 10, f"{took:.1f} s"
    assert "the model hub cannot be reached (http://127.0.0.1:9/" in err
    assert "set model.pretrained to that local folder" in err


def test_hub_decision_uses_the_cache(monkeypatch):
    """Offline or unreachable, a model in the Hugging Face cache loads from it (local files only); online, the hub
    is asked as usual; neither, an error naming the way out."""
    from seas.models import sd

    monkeypatch.setattr(sd, "hub_unreachable", lambda timeout=sd.HUB_PROBE_TIMEOUT_S: "no route")
    for offline in (True, False):
        monkeypatch.setattr(sd, "hub_offline", lambda offline=offline: offline)
        monkeypatch.setattr(sd, "_cached", lambda repo, rev: True)
        assert sd._hub_local_only("org/model", None, None) is True
        monkeypatch.setattr(sd, "_cached", lambda repo, rev: False)
        with pytest.raises(CheckpointError, match="local folder"):
            sd._hub_local_only("org/model", None, None)
    monkeypatch.setattr(sd, "hub_offline", lambda: False)
    monkeypatch.setattr(sd, "hub_unreachable", lambda timeout=sd.HUB_PROBE_TIMEOUT_S: None)
    assert sd._hub_local_only("org/model", None, None) is False

"""Stable Diffusion v1-4's component configurations (CompVis/stable-diffusion-v1-4: unet/, vae/, text_encoder/,
scheduler/ config.json), written out so the benchmarks build SD-v1-4-shaped models with random weights and no
download. Random weights cost the same as the real ones."""
from __future__ import annotations

SD14_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, downsample_padding=1, mid_block_scale_factor=1,
    act_fn="silu", norm_num_groups=32, norm_eps=1e-5, cross_attention_dim=768, attention_head_dim=8,
)
SD14_VAE = dict(
    in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
    act_fn="silu", latent_channels=4, norm_num_groups=32, sample_size=512, scaling_factor=0.18215,
)
SD14_TEXT = dict(
    vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
    max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=768,
    bos_token_id=49406, eos_token_id=49407, pad_token_id=1,
)
SD14_SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                      steps_offset=1, clip_sample=False, set_alpha_to_one=False, prediction_type="epsilon")


def schema_defaults(section: str) -> dict:
    """A config section's defaults, from the one schema (never restated here)."""
    from seas.run.config import validate_config

    cfg = validate_config({"dataset": {"name": "custom", "root": "."}, "model": {"pretrained": "CompVis/stable-diffusion-v1-4"}})
    return cfg[section]

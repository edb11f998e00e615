"""Time one SeaS generator training step at Stable Diffusion v1-4 widths, with random weights, beside its floor.

    python benchmarks/bench_train_step.py --resolution 256 --steps 2 --warmup 1      # CPU, SD widths (minutes)
    python benchmarks/bench_train_step.py                                            # GPU, 512 px, all modes
    python benchmarks/bench_train_step.py --tiny --resolution 64 --steps 3 --threads 1   # CPU smoke run

The U-Net, VAE and CLIP text encoder are built from SD v1-4's configurations (benchmarks/sd14.py; no download; the
tokenizer is the real CLIP BPE tokenizer built locally). One step = 2 abnormal + 2 normal images in one batch.

Modes (``--mode``, default ``all``; one JSON object each, then the ratios):
  floor     the bare U-Net step: forward (fused attention everywhere) + ε-MSE + backward + AdamW on the U-Net, on
            fixed latents and text embeddings: what no SeaS implementation can go below.
  ours      seas.method.train_generator's code path: latents sampled from the training-latent cache (seas.method.latents; warm, as after the
            first steps of a run -- the one-time encoding is reported as cache_build_s), the text encoder on each
            distinct prompt (forward + backward for the learned tokens), the U-Net with the DA-map capture on the
            32/16 down-path cross-attention layers (fused kernel everywhere), L_SD + L_NA + L_DA, backward, AdamW
            on the U-Net + token embeddings, the frozen-row restore. bf16 autocast on CUDA, fp32 on CPU.
  official  the authors' setting's equivalent: the VAE encodes the images at every step, fp32, diffusers' classic
            (non-fused) attention on every layer, batch 2+2 with 2-step gradient accumulation (times are per
            optimizer step = 8 images); torch AdamW (they use 8-bit AdamW from bitsandbytes).
Ratios: CPU-seconds of the process per step on a CPU (robust to other load on a shared machine), wall seconds on a GPU.
Targets: CPU at SD widths, 256 px: ours <= 1.15 x floor. GPU, 512 px: ours <= 1.2 x floor, official >= 3 x ours,
ours <= 24 GiB. Peak memory: CUDA max allocated during the timed steps; on CPU the process's peak RSS (whole run).
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from sd14 import SD14_UNET, SD14_VAE, SD14_TEXT, SD14_SCHEDULER, schema_defaults  # noqa: E402

from seas.method.attention import AttentionStore, install_capture  # noqa: E402
from seas.method.prompt import TokenMap, register_tokens, tokenize  # noqa: E402
from seas.method.train_generator import Batch, forward_backward, setup_training  # noqa: E402

log = logging.getLogger("bench_train_step")



def build_components(tiny: bool, resolution: int, tmp: Path, seed: int = 0):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from seas.models.tiny_sd import tiny_configs
    from seas.models.clip_vocab import write_clip_tokenizer_files

    torch.manual_seed(seed)
    if tiny:
        cfgs = tiny_configs(resolution)
        unet_cfg, vae_cfg, text_cfg = cfgs["unet"], cfgs["vae"], cfgs["text_encoder"]
    else:
        unet_cfg, vae_cfg, text_cfg = SD14_UNET, SD14_VAE, SD14_TEXT
    unet = UNet2DConditionModel(**unet_cfg)
    vae = AutoencoderKL(**vae_cfg)
    text_encoder = CLIPTextModel(CLIPTextConfig(**text_cfg))
    vocab, merges = write_clip_tokenizer_files(tmp / "tokenizer")
    tokenizer = CLIPTokenizer(str(vocab), str(merges), model_max_length=77, bos_token="<|startoftext|>",
                              eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>")
    return tokenizer, text_encoder, vae, unet, DDPMScheduler.from_config(SD14_SCHEDULER)


def random_images(resolution: int, gen: torch.Generator) -> tuple[list, torch.Tensor, list[str]]:
    """2 abnormal + 2 normal random images, the abnormal ones' rectangle masks, their types."""
    pixels = [torch.rand(3, resolution, resolution, generator=gen) * 2 - 1 for _ in range(4)]
    masks = torch.zeros(2, 1, resolution, resolution)
    for i in range(2):  # a rectangle per abnormal image
        y, x = (torch.randint(0, resolution // 2, (2,), generator=gen)).tolist()
        masks[i, :, y : y + resolution // 4, x : x + resolution // 3] = 1
    return pixels, masks, ["type_a", "type_b"]


def make_batch(tokenizer, token_map: TokenMap, mean, std, masks, types) -> Batch:
    prompts = [token_map.prompt(t) for t in types] + [token_map.normal_prompt()] * 2
    pos = [token_map.positions(tokenizer, t) for t in types]
    return Batch(mean, std, masks, tokenize(tokenizer, prompts), torch.tensor([p[0] for p in pos]),
                 torch.tensor([p[1] for p in pos]), 2, list(types))


def bench(mode: str, args, device: torch.device) -> dict:
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

    from seas.method.latents import training_set_cache
    from seas.method.losses import eps_mse

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, text_encoder, vae, unet, scheduler = build_components(args.tiny, args.resolution, Path(tmp))
    token_map = TokenMap.build("bench", ["type_a", "type_b"])
    register_tokens(token_map, tokenizer, text_encoder)
    for m in (unet, vae, text_encoder):
        m.to(device)
    g = dict(schema_defaults("generator"), gradient_checkpointing=args.gradient_checkpointing)
    amp = torch.bfloat16 if device.type == "cuda" and mode != "official" else None
    gen = torch.Generator().manual_seed(0)
    noise_gen = torch.Generator(device=device).manual_seed(0)
    pixels, masks, types = random_images(args.resolution, gen)
    extra: dict = {}

    if mode == "floor":
        unet.set_attn_processor(AttnProcessor2_0())
        unet.requires_grad_(True).train()
        if args.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        optimizer = torch.optim.AdamW(unet.parameters(), lr=g["lr_unet"])
        lat = args.resolution // 8
        latents = torch.randn(4, 4, lat, lat, generator=gen).to(device)
        ehs = torch.randn(4, 77, unet.config.cross_attention_dim, generator=gen).to(device)

        def step() -> dict:
            noise = torch.randn(latents.shape, generator=noise_gen, device=device)
            t = torch.randint(0, 1000, (4,), generator=noise_gen, device=device)
            with torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                pred = unet(scheduler.add_noise(latents, noise, t), t, encoder_hidden_states=ehs).sample
            loss = eps_mse(pred, noise)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return {"loss": float(loss.detach())}
    else:
        optimizer, frozen = setup_training(unet, vae, text_encoder, sorted(token_map.token_ids.values()), g)
        store = AttentionStore()
        if mode == "official":
            install_capture(unet, store, g["da_resolutions"], others=AttnProcessor)
            accum = 2
        else:
            install_capture(unet, store, g["da_resolutions"])
            accum = 1
            cache = training_set_cache(vae, pixels[:2], pixels[2:], device, amp)
            keys = [(("a", 0), 0, False), (("a", 1), 0, False), (("n", 0), 0, False), (("n", 1), 0, False)]
            t0 = time.perf_counter()
            mean, std = cache.dist(keys)
            extra["cache_build_s_4_variants"] = round(time.perf_counter() - t0, 3)
            batch = make_batch(tokenizer, token_map, mean, std, masks, types).to(device)
        stacked = torch.stack(pixels).to(device)

        def step() -> dict:
            for _ in range(accum):
                if mode == "official":  # the VAE encodes the images at every step
                    with torch.no_grad():
                        d = vae.encode(stacked).latent_dist
                    b = make_batch(tokenizer, token_map, d.mean, d.std, masks, types).to(device)
                else:
                    b = batch
                terms = forward_backward(unet, vae, text_encoder, scheduler, b, g, store, noise_gen, amp_dtype=amp,
                                         loss_scale=1.0 / accum)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            frozen.restore()
            return terms

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, cpu = [], []
    for _ in range(args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        terms = step()
        sync()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    if device.type == "cuda":
        peak, peak_kind = torch.cuda.max_memory_allocated(device) / 2**30, "cuda_max_allocated"
    else:
        peak, peak_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process_peak_rss"
    n_params = sum(p.numel() for p in unet.parameters())
    return {
        "mode": mode, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "shapes": "tiny" if args.tiny else "sd-v1-4", "unet_params_m": round(n_params / 1e6, 2),
        "resolution": args.resolution, "batch": "2+2", "accumulation": 2 if mode == "official" else 1,
        "autocast": str(amp).replace("torch.", "") if amp else "fp32",
        "attention": {"official": "classic", "ours": "fused+capture", "floor": "fused"}[mode],
        "gradient_checkpointing": args.gradient_checkpointing, "threads": torch.get_num_threads(),
        "steps_timed": len(times), "s_per_step_median": round(statistics.median(times), 4),
        "s_per_step_all": [round(t, 4) for t in times],
        "cpu_s_per_step_median": round(statistics.median(cpu), 3), "cpu_s_per_step_all": [round(c, 3) for c in cpu], "peak_mem_gib": round(peak, 3), "peak_kind": peak_kind,
        "last_loss_terms": {k: round(v, 5) for k, v in terms.items()}, **extra,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the tiny SD-shaped model's configs instead of SD v1-4's")
    ap.add_argument("--resolution", type=int, default=512, help="image side in pixels (default 512)")
    ap.add_argument("--mode", choices=["floor", "ours", "official", "all"], default="all")
    ap.add_argument("--steps", type=int, default=10, help="timed steps (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--threads", type=int, default=None,
                    help="CPU threads for torch (default: torch's choice; use 1 on a shared, loaded machine)")
    ap.add_argument("--out", type=Path, help="also write the results here (JSON list)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(message)s")
    if args.resolution % 8:
        ap.error("--resolution must be a multiple of 8")
    if args.resolution // 8 < 4:
        ap.error("--resolution must be >= 32 (the 16x16 level is the latent / 4)")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    results = []
    for mode in (["floor", "ours", "official"] if args.mode == "all" else [args.mode]):
        log.info("benchmarking %s ...", mode)
        results.append(bench(mode, args, device))  # the models are freed when bench returns
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(json.dumps(results[-1]), flush=True)
    # CPU-seconds of the process on a CPU (robust to other load on a shared machine), wall seconds on a GPU
    key = "s_per_step_median" if device.type == "cuda" else "cpu_s_per_step_median"
    t = {r["mode"]: r[key] for r in results}
    if "floor" in t:
        summary = {"summary": True, "measure": key, **{f"{m}_over_floor": round(v / t["floor"], 3) for m, v in t.items()
                                        if m != "floor"}}
        if "ours" in t and "official" in t:
            summary["official_over_ours"] = round(t["official"] / t["ours"], 3)
        summary["target_ours_over_floor"] = 1.2 if device.type == "cuda" else 1.15
        results.append(summary)
        print(json.dumps(summary), flush=True)
    if args.out:
        from seas.run.runtime import atomic_write_text

        atomic_write_text(args.out, json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Time one SeaS generator training step at Stable Diffusion v1-4 shapes, with random weights.

    python benchmarks/bench_train_step.py                      # SD v1-4 shapes, 512 px, both settings
    python benchmarks/bench_train_step.py --tiny --resolution 64 --steps 3 --threads 1   # CPU smoke run

The U-Net, VAE and CLIP text encoder are built from SD v1-4's configurations written below (no download; the
tokenizer is the real CLIP BPE tokenizer built locally). One step = 2 abnormal + 2 normal images in one batch,
VAE encoding, the U-Net forward with the DA-loss capture on the 32x32 and 16x16 down-path cross-attention layers,
L_SD + L_NA + L_DA, backward, AdamW step and the frozen-embedding restore: exactly seas.train's code path.

Settings (``--mode``):
  ours      bf16 autocast on CUDA (fp32 on CPU), fused attention except the captured layers, no accumulation.
            Target on one H100: <= 0.35 s/step, <= 24 GiB peak.
  official  the authors' setting's equivalent: fp32, diffusers' classic (non-fused) attention on every layer,
            batch 2+2 with 2-step gradient accumulation (times are per optimizer step = 8 images). The authors
            use 8-bit AdamW (bitsandbytes); this uses torch's AdamW.
Peak memory: CUDA max allocated during the timed steps; on CPU the process's peak RSS (whole run).
Prints one JSON object per setting (and writes them to ``--out`` if given).
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

from seas.attention import AttentionStore, install_capture  # noqa: E402
from seas.prompt import TokenMap, register_tokens, tokenize  # noqa: E402
from seas.train import Batch, forward_backward, setup_training  # noqa: E402

log = logging.getLogger("bench_train_step")



def build_components(tiny: bool, resolution: int, tmp: Path, seed: int = 0):
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from seas.tiny_sd import tiny_configs, write_clip_tokenizer_files

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


def random_batch(tokenizer, token_map: TokenMap, resolution: int, gen: torch.Generator) -> Batch:
    types = token_map.anomaly_types[:2]
    pixels = torch.rand(4, 3, resolution, resolution, generator=gen) * 2 - 1
    masks = torch.zeros(2, 1, resolution, resolution)
    for i in range(2):  # a rectangle per abnormal image
        y, x = (torch.randint(0, resolution // 2, (2,), generator=gen)).tolist()
        masks[i, :, y : y + resolution // 4, x : x + resolution // 3] = 1
    prompts = [token_map.prompt(t) for t in types] + [token_map.normal_prompt()] * 2
    pos = [token_map.positions(tokenizer, t) for t in types]
    return Batch(pixels, masks, tokenize(tokenizer, prompts), torch.tensor([p[0] for p in pos]),
                 torch.tensor([p[1] for p in pos]), 2, list(types))


def bench(mode: str, args, device: torch.device) -> dict:
    from diffusers.models.attention_processor import AttnProcessor

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer, text_encoder, vae, unet, scheduler = build_components(args.tiny, args.resolution, Path(tmp))
    token_map = TokenMap.build("bench", ["type_a", "type_b"])
    register_tokens(token_map, tokenizer, text_encoder)
    for m in (unet, vae, text_encoder):
        m.to(device)
    g = dict(schema_defaults("generator"), gradient_checkpointing=args.gradient_checkpointing)
    optimizer, frozen = setup_training(unet, vae, text_encoder, sorted(token_map.token_ids.values()), g)
    store = AttentionStore()
    if mode == "official":
        install_capture(unet, store, g["da_resolutions"], others=AttnProcessor)
        amp, accum = None, 2
    else:
        install_capture(unet, store, g["da_resolutions"])
        amp, accum = (torch.bfloat16 if device.type == "cuda" else None), 1
    gen = torch.Generator().manual_seed(0)
    noise_gen = torch.Generator(device=device).manual_seed(0)
    batches = [random_batch(tokenizer, token_map, args.resolution, gen).to(device) for _ in range(accum)]

    def step() -> dict:
        for b in batches:
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
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        terms = step()
        sync()
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak, peak_kind = torch.cuda.max_memory_allocated(device) / 2**30, "cuda_max_allocated"
    else:
        peak, peak_kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "process_peak_rss"
    n_params = sum(p.numel() for p in unet.parameters())
    res = {
        "mode": mode, "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "shapes": "tiny" if args.tiny else "sd-v1-4", "unet_params_m": round(n_params / 1e6, 2),
        "resolution": args.resolution, "batch": "2+2", "accumulation": accum,
        "autocast": str(amp).replace("torch.", "") if amp else "fp32", "attention": "classic" if mode == "official"
        else "fused+capture", "gradient_checkpointing": args.gradient_checkpointing, "threads": torch.get_num_threads(),
        "steps_timed": len(times), "s_per_step_median": round(statistics.median(times), 4),
        "s_per_step_mean": round(statistics.fmean(times), 4), "peak_mem_gib": round(peak, 3), "peak_kind": peak_kind,
        "last_loss_terms": {k: round(v, 5) for k, v in terms.items()},
    }
    if mode == "ours" and not args.tiny and args.resolution == 512 and device.type == "cuda":
        res["target"] = {"s_per_step": 0.35, "peak_mem_gib": 24}
        res["meets_target"] = res["s_per_step_median"] <= 0.35 and peak <= 24
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="the tiny SD-shaped model's configs instead of SD v1-4's")
    ap.add_argument("--resolution", type=int, default=512, help="image side in pixels (default 512)")
    ap.add_argument("--mode", choices=["ours", "official", "both"], default="both")
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
    for mode in (["ours", "official"] if args.mode == "both" else [args.mode]):
        log.info("benchmarking %s ...", mode)
        results.append(bench(mode, args, device))  # the models are freed when bench returns
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(json.dumps(results[-1]), flush=True)
    if args.out:
        from seas.runtime import atomic_write_text

        atomic_write_text(args.out, json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

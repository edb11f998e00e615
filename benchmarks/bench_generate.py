"""Time SeaS generation per image at Stable Diffusion v1-4 shapes, with random weights.

    python benchmarks/bench_generate.py                                  # SD v1-4 shapes, 512 px, batch 8
    python benchmarks/bench_generate.py --shape tiny --resolution 64 --batch-size 4 --repeats 2   # CPU smoke run

One image = 25 DPM-Solver++ steps with classifier-free guidance (U-Net on the doubled batch), the RMP branch on the
last 3 steps (U-Net feature hooks, VAE decode with decoder-feature hooks, coarse transformer + 3 MRMs), the mask
average + threshold and the uint8 conversion: exactly seas.method.generate.denoise_batch, the code path of
`python -m seas.method.generate`. Not timed: model loading, the CLIP text encoder (run once per prompt, not per image; the
embeddings here are random [1, 77, cross_attention_dim] tensors), reference encoding, PNG writing.

The U-Net and VAE are built from SD v1-4's configurations below (no download); the RMP branch from them via
seas.method.rmp.arch_from_configs with the schema's default widths. Target on one H100: <= 200 ms/image.
Precision (``--precision``): ``fp16`` / ``bf16`` cast the models (the usual inference setting), ``autocast-bf16`` keeps
fp32 weights under bf16 autocast (the pipeline's ``model.mixed_precision: auto`` on CUDA), ``fp32``. Default: fp16 on
CUDA, fp32 on CPU. Prints one JSON object (and writes it to ``--out`` if given).

The per-component split (``component_s``: U-Net, VAE decoder, RMP; CPU-seconds on a CPU, wall seconds on a GPU)
times each component's calls (with a CUDA
synchronize around each on GPU, so run it separately from the ms/image figure there: ``--split-only``).
``--full-feature-decodes`` decodes the RMP's VAE features with full decodes (the code before the truncated
decode) for a before/after comparison in one script: same masks and images, more VAE time.
CPU, SD widths, the issue's setting: ``--resolution 256 --steps 10 --batch-size 2 --warmup 0 --repeats 1``.
"""
from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from sd14 import SD14_UNET, SD14_VAE, SD14_SCHEDULER, schema_defaults  # noqa: E402

from seas.method import rmp as rmp_mod  # noqa: E402
from seas.method.generate import denoise_batch, threshold_masks, to_uint8_images  # noqa: E402

log = logging.getLogger("bench_generate")



def build_models(shape: str, resolution: int, device, dtype, seed: int = 0):
    from diffusers import AutoencoderKL, UNet2DConditionModel

    if shape == "sd14":
        ucfg, vcfg = dict(SD14_UNET, sample_size=resolution // 8), dict(SD14_VAE, sample_size=resolution)
    else:
        from seas.models.tiny_sd import tiny_configs

        cfgs = tiny_configs(resolution)
        ucfg, vcfg = cfgs["unet"], cfgs["vae"]
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(**ucfg).eval().requires_grad_(False)
    vae = AutoencoderKL(**vcfg).eval().requires_grad_(False)
    rmp = rmp_mod.RefinedMaskPredictor(rmp_mod.arch_from_configs(unet.config, vae.config, schema_defaults("rmp")))
    rmp = rmp_mod.set_inference_mode(rmp).requires_grad_(False)
    for m in (unet, vae, rmp):
        m.to(device=device, dtype=dtype)
    return unet, vae, rmp


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python benchmarks/bench_generate.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=["sd14", "tiny"], default="sd14", help="model shapes (default sd14)")
    ap.add_argument("--resolution", type=int, default=None, help="image side (default 512 for sd14, 64 for tiny)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=25, help="DPM-Solver++ steps (default 25)")
    ap.add_argument("--mask-steps", type=int, default=3, help="RMP on the last k steps (default 3)")
    ap.add_argument("--guidance-scale", type=float, default=8.0)
    ap.add_argument("--precision", choices=["auto", "fp32", "fp16", "bf16", "autocast-bf16"], default="auto")
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    ap.add_argument("--warmup", type=int, default=1, help="untimed batches first (default 1)")
    ap.add_argument("--repeats", type=int, default=3, help="timed batches (default 3)")
    ap.add_argument("--out", default=None, help="also write the JSON result here")
    ap.add_argument("--no-split", action="store_true", help="no per-component timing (no extra CUDA syncs)")
    ap.add_argument("--full-feature-decodes", action="store_true",
                    help="decode the RMP's VAE features with full decodes (the code before the truncation)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")

    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
                          else "cpu")
    prec = args.precision
    if prec == "auto":
        prec = "fp16" if device.type == "cuda" else "fp32"
    wdtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16,
              "autocast-bf16": torch.float32}[prec]
    amp = torch.bfloat16 if prec == "autocast-bf16" else None
    res = args.resolution or (512 if args.shape == "sd14" else 64)
    unet, vae, rmp = build_models(args.shape, res, device, wdtype)
    n_params = {k: sum(p.numel() for p in m.parameters()) for k, m in (("unet", unet), ("vae", vae), ("rmp", rmp))}
    log.info("models built on %s (%s): %s", device, prec, {k: f"{v / 1e6:.1f}M" for k, v in n_params.items()})
    g = torch.Generator().manual_seed(0)
    b, lat = args.batch_size, res // 8
    cond = torch.randn(1, 77, unet.config.cross_attention_dim, generator=g).to(device, wdtype)
    uncond = torch.randn(1, 77, unet.config.cross_attention_dim, generator=g).to(device, wdtype)

    comp = {"unet": 0.0, "vae": 0.0, "rmp": 0.0}
    clock = time.perf_counter if device.type == "cuda" else time.process_time  # CPU-seconds on a shared CPU

    def timed(name, fn):
        def wrapper(*a, **kw):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = clock()
            try:
                return fn(*a, **kw)
            finally:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                comp[name] += clock() - t0
        return wrapper

    if not args.no_split:
        unet.forward = timed("unet", unet.forward)
        vae.decode = timed("vae", vae.decode)
        rmp.forward = timed("rmp", rmp.forward)
    if args.full_feature_decodes:  # the pre-truncation code: a full decode for every feature decode
        def full_decode_features(vae_, latents, kind, n):
            with rmp_mod.capture_outputs(rmp_mod.vae_feature_modules(vae_, kind, n)) as store:
                vae_.decode(latents / vae_.config.scaling_factor, return_dict=False)
            return list(store)
        rmp_mod.vae_features = full_decode_features

    def one_batch():
        x = torch.randn(b, 4, lat, lat, generator=g).to(device)
        images, prob = denoise_batch(unet, vae, rmp, SD14_SCHEDULER, x, cond, uncond,
                                     guidance_scale=args.guidance_scale, num_inference_steps=args.steps,
                                     mask_steps=args.mask_steps, amp_dtype=amp)
        imgs, masks = to_uint8_images(images), threshold_masks(prob, 0.2)  # host copies end the batch
        assert imgs.shape == (b, res, res, 3) and masks.shape == (b, res, res)

    for _ in range(args.warmup):
        one_batch()
    comp.update(unet=0.0, vae=0.0, rmp=0.0)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, cpu = [], []
    for _ in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        one_batch()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    med = statistics.median(times)
    result = {
        "benchmark": "generate", "shape": args.shape, "resolution": res, "batch_size": b, "steps": args.steps,
        "mask_steps": args.mask_steps, "guidance_scale": args.guidance_scale, "precision": prec,
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "ms_per_image": round(1000 * med / b, 2), "s_per_batch": [round(t, 4) for t in times],
        "cpu_s_per_batch": [round(c, 3) for c in cpu],
        "params": n_params, "torch": torch.__version__,
        "peak_memory_gib": round((torch.cuda.max_memory_allocated() if device.type == "cuda" else
                                  resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30, 2),
        "target_ms_per_image_h100": 200,
        "full_feature_decodes": args.full_feature_decodes,
    }
    if not args.no_split:
        total = sum(times) if device.type == "cuda" else sum(cpu)
        result["component_s"] = {k: round(v, 3) for k, v in comp.items()}
        result["component_share"] = {k: round(v / total, 3) for k, v in comp.items()}
    print(json.dumps(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

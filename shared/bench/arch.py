"""The GPU path rung by rung, on the real SD1.5 / SDXL architectures (random weights) or tiny.

Each rung adds one optimization to the rung before and reports time per image, UNet it/s
(denoising only) and VAE decode time. FLOPs are counted by torch's FlopCounterMode on a meta
copy of the model (no memory, no compute); on a GPU with a known peak each rung is reported as a
fraction of the physical limit: (UNet FLOPs x steps x 2 for CFG + VAE decode FLOPs) / peak.
"""

from __future__ import annotations

import time

from shared.bench.timing import median, sync, timed
from shared.engine import accel
from shared.engine.archs import NATIVE, PARTS, build_pipeline, count_parameters

# Dense fp16/bf16 tensor-core peaks, TFLOP/s (vendor data sheets, no sparsity).
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
DEFAULT_STEPS = {"sd15": 25, "sdxl": 30, "tiny": 20}
PROMPT = "a lighthouse on a cliff at sunset, oil painting"


def peak_tflops(device: str) -> tuple[str, float | None]:
    """The accelerator's name and its dense fp16 peak, when known."""
    if device != "cuda":
        return "cpu", None
    import torch

    name = torch.cuda.get_device_name()
    return name, next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def count_flops(pipe, size: int) -> dict:
    """FLOPs of one UNet forward (batch 1) and one VAE decode at `size`, on meta copies."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    latent = size // 8
    with torch.device("meta"):
        unet = type(pipe.unet).from_config(pipe.unet.config)
        vae = type(pipe.vae).from_config(pipe.vae.config)
        cfg = unet.config
        x = torch.randn(1, cfg.in_channels, latent, latent)
        ctx = torch.randn(1, 77, cfg.cross_attention_dim)
        kwargs = {}
        if cfg.addition_embed_type == "text_time":  # SDXL: pooled text + size conditioning
            pooled = cfg.projection_class_embeddings_input_dim - 6 * cfg.addition_time_embed_dim
            kwargs["added_cond_kwargs"] = {"text_embeds": torch.randn(1, pooled),
                                           "time_ids": torch.randn(1, 6)}
        with torch.no_grad(), FlopCounterMode(display=False) as unet_count:
            unet(x, torch.tensor([500]), ctx, **kwargs)
        z = torch.randn(1, vae.config.latent_channels, latent, latent)
        with torch.no_grad(), FlopCounterMode(display=False) as vae_count:
            vae.decode(z)
    return {"unet_tflop": unet_count.get_total_flops() / 1e12,
            "vae_decode_tflop": vae_count.get_total_flops() / 1e12}


def tiny_pipeline(device: str):
    """The tiny random model (shared/engine/tiny.py), built in memory."""
    from diffusers import StableDiffusionPipeline

    from shared.engine.tiny import build_components

    pipe = StableDiffusionPipeline(**build_components(), requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def _call(pipe, size: int, steps: int, output_type: str, device: str):
    import torch

    gen = torch.Generator("cpu").manual_seed(0)
    return timed(pipe, PROMPT, width=size, height=size, num_inference_steps=steps,
                 guidance_scale=7.0, generator=gen, output_type=output_type, device=device)[0]


def measure(pipe, size: int, steps: int, reps: int, device: str) -> dict:
    """Warm up once, then median time per image, denoising-only time and UNet it/s."""
    first = _call(pipe, size, steps, "pil", device)  # compiles, autotunes, fills caches
    image = median(_call(pipe, size, steps, "pil", device) for _ in range(reps))
    latent = median(_call(pipe, size, steps, "latent", device) for _ in range(reps))
    return {"first_call_s": first, "image_s": image, "denoise_s": latent,
            "unet_it_s": steps / latent, "vae_s": max(0.0, image - latent)}


def rungs(device: str, dtype, compile_mode: str | None, cache_dir):
    """(name, change) pairs, each applied on top of the previous ones."""
    out = []
    if device == "cuda":
        out += [("fp32, classic attention", lambda p: accel.set_attention(p, False)),
                (str(dtype).removeprefix("torch."), lambda p: p.to(dtype=dtype))]
    else:
        out += [("fp32, classic attention", lambda p: accel.set_attention(p, False))]
    out += [("+ SDPA attention", lambda p: accel.set_attention(p, True)),
            ("+ channels_last", accel.to_channels_last),
            ("+ fused QKV", accel.fuse_qkv)]
    if compile_mode:
        out.append((f"+ torch.compile ({compile_mode})",
                    lambda p: accel.compile_unet(p, compile_mode, cache_dir)))
    out += [("+ tiny VAE (TAESD, random weights)",
             lambda p: setattr(p, "vae", accel.tiny_vae(p, accel.AccelOptions(
                 random_tiny_vae=True)).to(device, p.unet.dtype))),
            ("+ DeepCache (full UNet every 3rd step)", lambda p: accel.add_deepcache(p, 3))]
    return out


def run(arch: str, device: str, size: int | None, steps: int | None, reps: int,
        dtype_name: str = "auto", compile_mode: str | None = None, cache_dir=None) -> dict:
    """The ladder on `arch`. Full-size architectures on a CPU get a smoke test only."""
    import torch

    size = size or NATIVE.get(arch, 512)
    steps = steps or DEFAULT_STEPS[arch]
    dtype = accel.AccelOptions(dtype=dtype_name).torch_dtype(device)
    name, peak = peak_tflops(device)
    out = {"arch": arch, "device": name, "size": size, "steps": steps,
           "dtype": str(dtype).removeprefix("torch."), "peak_tflops": peak}
    if arch != "tiny":
        out["parameters_m"] = {p: count_parameters(arch, p) / 1e6 for p in PARTS[arch]
                               if p != "scheduler"}
    if arch != "tiny" and device != "cuda":
        return {**out, **_cpu_smoke(arch)}
    t0 = time.perf_counter()
    # Built in fp32: the first rung on a GPU is the fp32 baseline, the second casts to `dtype`.
    pipe = tiny_pipeline(device) if arch == "tiny" else build_pipeline(arch, device)
    out["build_s"] = time.perf_counter() - t0
    out.update(count_flops(pipe, size))
    limit = None
    if peak:
        limit = (out["unet_tflop"] * 2 * steps + out["vae_decode_tflop"]) / peak
        out["limit_s"] = limit
    out["rungs"] = []
    for label, change in rungs(device, dtype, compile_mode, cache_dir):
        change(pipe)
        row = {"rung": label, **measure(pipe, size, steps, reps, device)}
        if peak:
            row["fraction_of_limit"] = limit / row["image_s"]
            row["unet_fraction"] = row["unet_it_s"] * out["unet_tflop"] * 2 / peak
        out["rungs"].append(row)
        sync(device)
    del pipe
    if device == "cuda":
        torch.cuda.empty_cache()
    return out


def _cpu_smoke(arch: str) -> dict:
    """On a CPU: build SD1.5 for real and run one 1-step 256² image; SDXL (14 GB fp32): skip."""
    if arch != "sd15":
        return {"smoke": f"skipped: {arch} in fp32 needs about 14 GB; run it on a GPU"}
    t0 = time.perf_counter()
    pipe = build_pipeline(arch, "cpu")
    built = time.perf_counter() - t0
    flops = count_flops(pipe, 256)
    seconds = _call(pipe, 256, 1, "pil", "cpu")
    del pipe
    return {"smoke": "one 1-step 256x256 image on the CPU (not a speed figure)",
            "build_s": built, "smoke_image_s": seconds, **{f"{k}_at_256": v
                                                           for k, v in flops.items()}}

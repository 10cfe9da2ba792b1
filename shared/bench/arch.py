"""The GPU path rung by rung, on the real SD1.5 / SDXL / SD3 / Flux architectures (random
weights) or tiny.

Each rung adds one optimization to the rung before and reports time per image, denoiser it/s
(denoising only) and VAE decode time. FLOPs are counted by torch's FlopCounterMode on a meta
copy of the model (no memory, no compute); on a GPU with a known peak each rung is reported as a
fraction of the physical limit: (denoiser FLOPs x steps x 2 for CFG + VAE decode FLOPs) / peak.
Flux dev has no CFG pass (its guidance is an embedding): x 1. On a CPU the full-size SD3 and
Flux report parameters and FLOPs from the meta device only.
"""

from __future__ import annotations

import time

from shared.bench.timing import median, sync, timed
from shared.engine import accel
from shared.engine.archs import FLOW, NATIVE, PARTS, build_component, build_pipeline, \
    count_parameters

# Dense fp16/bf16 tensor-core peaks, TFLOP/s (vendor data sheets, no sparsity).
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}
DEFAULT_STEPS = {"sd15": 25, "sdxl": 30, "sd3": 28, "flux": 28, "tiny": 20}
CFG_PASSES = {"flux": 1}  # denoiser passes per step (2: classifier-free guidance)
# text tokens the transformer attends to: SD3 77 CLIP + 256 T5, Flux 512 T5
CONTEXT_TOKENS = {"sd3": 333, "flux": 512}
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


def count_transformer_flops(arch: str, size: int) -> dict:
    """FLOPs of one transformer forward (batch 1) and one VAE decode at `size`, on the meta
    device from the configs in shared/engine/archs (nothing is built for real)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    latent = size // 8
    with torch.device("meta"):
        model = build_component(arch, "transformer")
        vae = build_component(arch, "vae")
        cfg = model.config
        ctx = torch.randn(1, CONTEXT_TOKENS[arch], cfg.joint_attention_dim)
        pooled = torch.randn(1, cfg.pooled_projection_dim)
        t = torch.tensor([500.0])
        if arch == "flux":  # packed 2x2 latent patches as tokens, with position ids
            tokens = (latent // 2) ** 2
            x = torch.randn(1, tokens, cfg.in_channels)
            kwargs = dict(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=pooled,
                          timestep=t / 1000, img_ids=torch.zeros(tokens, 3),
                          txt_ids=torch.zeros(CONTEXT_TOKENS[arch], 3),
                          guidance=torch.tensor([3.5]) if cfg.guidance_embeds else None)
        else:
            x = torch.randn(1, cfg.in_channels, latent, latent)
            kwargs = dict(hidden_states=x, encoder_hidden_states=ctx, pooled_projections=pooled,
                          timestep=t)
        with torch.no_grad(), FlopCounterMode(display=False) as count:
            model(**kwargs)
        z = torch.randn(1, vae.config.latent_channels, latent, latent)
        with torch.no_grad(), FlopCounterMode(display=False) as vae_count:
            vae.decode(z)
    return {"transformer_tflop": count.get_total_flops() / 1e12,
            "vae_decode_tflop": vae_count.get_total_flops() / 1e12}


def flow_rungs(dtype):
    """The transformer ladder: fp32 baseline, the GPU dtype (bf16 for these families), fused
    QKV projections (diffusers' own), torch.compile of the transformer."""
    import torch

    def fuse(p):
        p.transformer.fuse_qkv_projections()

    def compile_(p):
        p.transformer = torch.compile(p.transformer, mode="max-autotune-no-cudagraphs")

    half = torch.bfloat16 if dtype == torch.float16 else dtype
    return [("fp32 (SDPA)", lambda p: None),
            (str(half).removeprefix("torch."), lambda p: p.to(dtype=half)),
            ("+ fused QKV", fuse), ("+ torch.compile (transformer)", compile_)]


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
    extra = {"max_sequence_length": 256} if type(pipe).__name__.startswith("StableDiffusion3") \
        else {}
    return timed(pipe, PROMPT, width=size, height=size, num_inference_steps=steps,
                 guidance_scale=7.0 if "Flux" not in type(pipe).__name__ else 3.5,
                 generator=gen, output_type=output_type, device=device, **extra)[0]


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
            ("+ token merging (ToMe 0.5, full-resolution blocks)", _token_merging),
            ("+ DeepCache (full UNet every 3rd step)", lambda p: accel.add_deepcache(p, 3))]
    return out


def _token_merging(pipe) -> None:
    """ToMe at tomesd's default ratio, kept installed for the rest of the ladder (the engine
    installs it per call, shared.engine.tome.applied)."""
    from shared.engine import tome

    merging = tome.applied(pipe.unet, 0.5)
    merging.__enter__()
    pipe._sdgate_tome = merging  # held with the pipe: removed only when the pipe goes


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
    if arch in FLOW:
        out.update(count_transformer_flops(arch, size))
        out["unet_tflop"] = out["transformer_tflop"]  # the denoiser, as the report names it
        passes = CFG_PASSES.get(arch, 2)
        out["cfg_passes"] = passes
        if peak:
            out["limit_s"] = (out["transformer_tflop"] * passes * steps
                              + out["vae_decode_tflop"]) / peak
        if device != "cuda":
            return {**out, "smoke": f"{arch}: parameters and meta-device FLOPs only on a CPU "
                    "(run it on a GPU for timings)"}
        return _flow_ladder(arch, out, device, dtype, size, steps, reps, peak, passes)
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


def _flow_ladder(arch, out, device, dtype, size, steps, reps, peak, passes) -> dict:
    """SD3 / Flux on a GPU: the full pipeline with random weights (text encoders included),
    timed rung by rung."""
    import torch

    t0 = time.perf_counter()
    pipe = build_pipeline(arch, device)
    out["build_s"] = time.perf_counter() - t0
    out["rungs"] = []
    for label, change in flow_rungs(dtype):
        change(pipe)
        row = {"rung": label, **measure(pipe, size, steps, reps, device)}
        if peak:
            row["fraction_of_limit"] = out["limit_s"] / row["image_s"]
            row["unet_fraction"] = row["unet_it_s"] * out["transformer_tflop"] * passes / peak
        out["rungs"].append(row)
        sync(device)
    del pipe
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

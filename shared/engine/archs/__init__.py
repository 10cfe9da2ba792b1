"""Full-size SD1.5, SDXL, SD3 and Flux architectures built from the configs in this folder,
random weights.

Speed does not depend on weight values, so the benchmark times the real architectures without
downloading anything. The JSON files are the configs of runwayml/stable-diffusion-v1-5,
stabilityai/stable-diffusion-xl-base-1.0, stabilityai/stable-diffusion-3-medium-diffusers and
black-forest-labs/FLUX.1-dev (`taesd/` is madebyollin/taesd's AutoencoderTiny).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

HERE = Path(__file__).parent
PARTS = {
    "sd15": ("unet", "vae", "text_encoder", "scheduler"),
    "sdxl": ("unet", "vae", "text_encoder", "text_encoder_2", "scheduler"),
    "sd3": ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3",
            "scheduler"),
    "flux": ("transformer", "vae", "text_encoder", "text_encoder_2", "scheduler"),
}
NATIVE = {"sd15": 512, "sdxl": 1024, "sd3": 1024, "flux": 1024}
FLOW = ("sd3", "flux")  # transformer denoisers (flow matching)
# REFERENCE.md "Speed facts": TFLOP of one UNet forward at native latents, batch 1 (x2 with CFG),
# one VAE decode and one TAESD decode at the native size.
UNET_TFLOP = {"sd15": 0.80, "sdxl": 6.76}
VAE_DECODE_TFLOP = {"sd15": 2.5, "sdxl": 10.5}
TAESD_DECODE_TFLOP = {"sd15": 0.14, "sdxl": 0.57}
RANDOM_MARKER = "SDGATE_RANDOM"


def load_config(arch: str, part: str) -> dict:
    """One component's config (without the `_class_name` key)."""
    if arch not in PARTS and arch != "taesd":
        raise ValueError(f"unknown architecture {arch!r}; choices: {', '.join(PARTS)}")
    cfg = json.loads((HERE / arch / f"{part}.json").read_text())
    cfg.pop("_class_name", None)
    return cfg


def build_component(arch: str, part: str):
    """A component with random weights, created on the current default device (torch.device())."""
    import diffusers
    import transformers

    raw = json.loads((HERE / arch / f"{part}.json").read_text())
    cls_name = raw["_class_name"]
    cfg = load_config(arch, part)
    if part.startswith("text_encoder"):
        config = (transformers.T5Config if cls_name.startswith("T5")
                  else transformers.CLIPTextConfig)(**cfg)
        return getattr(transformers, cls_name)(config)
    cls = getattr(diffusers, cls_name)
    return cls.from_config(cfg)


def count_parameters(arch: str, part: str) -> int:
    """Parameters of a component, counted on the meta device (no memory, no weights)."""
    import torch

    with torch.device("meta"):
        module = build_component(arch, part)
    return sum(p.numel() for p in module.parameters())


def build_pipeline(arch: str, device: str = "cpu", dtype=None):
    """The whole text-to-image pipeline of `arch` with random weights, built on `device`."""
    import torch
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    from shared.engine.tiny import build_tokenizer

    with tempfile.TemporaryDirectory() as d:
        tokenizer = build_tokenizer(Path(d))  # byte-level vocab: ids fit any CLIP embedding
    torch.manual_seed(0)
    with torch.device(device):  # weights are created (and initialised) on the device
        parts = {p: build_component(arch, p) for p in PARTS[arch] if p != "scheduler"}
    parts["scheduler"] = build_component(arch, "scheduler")
    if arch in FLOW:
        from diffusers import FluxPipeline, StableDiffusion3Pipeline

        from shared.engine.tiny_families import _t5_tokenizer

        t5 = _t5_tokenizer()  # character pieces: ids fit any T5 embedding
        if arch == "sd3":
            pipe = StableDiffusion3Pipeline(tokenizer=tokenizer, tokenizer_2=tokenizer,
                                            tokenizer_3=t5, **parts)
        else:
            pipe = FluxPipeline(tokenizer=tokenizer, tokenizer_2=t5, **parts)
    elif arch == "sdxl":
        pipe = StableDiffusionXLPipeline(tokenizer=tokenizer, tokenizer_2=tokenizer, **parts)
    else:
        pipe = StableDiffusionPipeline(tokenizer=tokenizer, safety_checker=None,
                                       feature_extractor=None, requires_safety_checker=False,
                                       **parts)
    if dtype is not None:
        pipe.to(dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def write_random_model(arch: str, out: Path, device: str = "cpu", dtype=None) -> Path:
    """Save a random-weight `arch` pipeline as a diffusers folder, so it can be served."""
    out = Path(out)
    if (out / RANDOM_MARKER).is_file():
        return out
    pipe = build_pipeline(arch, device, dtype)
    pipe.save_pretrained(out, safe_serialization=True)
    (out / RANDOM_MARKER).write_text(f"random {arch} weights from shared/engine/archs: draws noise\n")
    return out


def build_tiny_vae(weights_dir: Path | None = None):
    """TAESD (AutoencoderTiny) from the repo config; weights from `weights_dir` when given.

    `weights_dir` holds `diffusion_pytorch_model.safetensors` (madebyollin/taesd's file; a
    `config.json` beside it wins over the repo's). Without it the weights are random: speed tests only.
    """
    from diffusers import AutoencoderTiny

    if weights_dir is None:
        return AutoencoderTiny.from_config(load_config("taesd", "config"))
    weights_dir = Path(weights_dir)
    if (weights_dir / "config.json").is_file():
        return AutoencoderTiny.from_pretrained(str(weights_dir))
    from safetensors.torch import load_file

    vae = AutoencoderTiny.from_config(load_config("taesd", "config"))
    vae.load_state_dict(load_file(str(weights_dir / "diffusion_pytorch_model.safetensors")))
    return vae

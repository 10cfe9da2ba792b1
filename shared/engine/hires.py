"""A1111's hires fix: upscale the first pass (its latents, or its pixels) and run img2img over it.

Upscaler names are A1111's. Latent modes interpolate the latents; "None", "Lanczos" and
"Nearest" resize pixels; model upscalers installed under the models folder ("R-ESRGAN 4x+",
"4x-UltraSharp", ...: shared/postprocess.py) upscale the decoded first pass (shared/engine/
upscalers.py), as upstream's resize_image does; names not installed are refused. The same latent interpolation serves img2img's resize mode 3 ("latent upscale").
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image

from shared.engine.resize import cover
from shared.errors import Unsupported
from shared.sizes import ceil8

# name -> (torch.nn.functional.interpolate mode, antialias), as upstream's latent_upscale_modes
LATENT_UPSCALERS: dict[str, tuple[str, bool]] = {
    "Latent": ("bilinear", False),
    "Latent (antialiased)": ("bilinear", True),
    "Latent (bicubic)": ("bicubic", False),
    "Latent (bicubic antialiased)": ("bicubic", True),
    "Latent (nearest)": ("nearest", False),
    "Latent (nearest-exact)": ("nearest-exact", False),
}
# name -> PIL resampling filter; "None" is upstream's "just resize" (Lanczos).
PIXEL_UPSCALERS: dict[str, int] = {"None": Image.LANCZOS, "Lanczos": Image.LANCZOS,
                                   "Nearest": Image.NEAREST}


@dataclass(frozen=True)
class Upscaler:
    name: str
    latent: bool
    mode: str | int  # interpolate mode (latent) or PIL filter (pixels)
    antialias: bool = False
    model: str | None = None  # a model upscaler's A1111 name


def upscaler(name: str | None, models_dir=None) -> Upscaler:
    """Resolve an A1111 upscaler name (None: "Latent"), model upscalers from `models_dir`."""
    key = (name or "Latent").strip()
    for table, latent in ((LATENT_UPSCALERS, True), (PIXEL_UPSCALERS, False)):
        for k, v in table.items():
            if k.lower() == key.lower():
                return Upscaler(k, True, *v) if latent else Upscaler(k, False, v)
    installed = []
    if models_dir is not None:
        from shared import postprocess

        for u in postprocess.installed(models_dir):
            if u.name.lower() in (key.lower(), key.lower().replace(" ", "_")):
                return Upscaler(u.name, False, Image.LANCZOS, model=u.name)
            installed.append(u.name)
    raise Unsupported(f"upscaler {name!r} is not installed; use one of "
                      f"{', '.join([*LATENT_UPSCALERS, *PIXEL_UPSCALERS, *installed])}",
                      param="hr_upscaler")


def img2img_steps(steps: int, strength: float) -> int:
    """num_inference_steps that makes diffusers' img2img run exactly `steps` denoising steps
    (upstream's hires pass runs the requested steps whatever the denoising strength)."""
    n = max(steps, math.ceil(steps / strength - 1e-9))
    while int(n * strength) < steps:
        n += 1
    return n


def resize_latents(latents, w: int, h: int, mode: str = "bilinear", antialias: bool = False,
                   keep_aspect: bool = True):
    """Latents scaled to w x h pixels (/8): covering it and centre-cropped, or stretched."""
    import torch.nn.functional as F

    lh, lw = latents.shape[-2:]
    th, tw = h // 8, w // 8
    scale = max(tw / lw, th / lh)
    sh, sw = (max(th, round(lh * scale)), max(tw, round(lw * scale))) if keep_aspect else (th, tw)
    kw = {"antialias": antialias} if mode in ("bilinear", "bicubic") else {}
    out = F.interpolate(latents.float(), size=(sh, sw), mode=mode, **kw).to(latents.dtype)
    top, left = (sh - th) // 2, (sw - tw) // 2
    return out[..., top:top + th, left:left + tw]


def upscale(first, up: Upscaler, w: int, h: int, engine=None):
    """The first pass output (latents tensor, or PIL images) brought to w x h."""
    if up.latent:
        return resize_latents(first, w, h, up.mode, up.antialias)
    if up.model is not None:
        from shared.engine.upscalers import upscale_to

        first = [upscale_to(engine, img, up.model, w, h) for img in first]
    return [cover(img, w, h, up.mode) for img in first]


def encode_resized(pipe, img: Image.Image, w: int, h: int):
    """img2img resize mode 3: encode the picture at its own size, then resize the latents."""
    import torch

    ow, oh = ceil8(img.width), ceil8(img.height)
    pixels = pipe.image_processor.preprocess(img.resize((ow, oh), Image.LANCZOS))
    pixels = pixels.to(pipe.vae.device, pipe.vae.dtype)
    with torch.no_grad():
        latents = pipe.vae.encode(pixels).latent_dist.mean * pipe.vae.config.scaling_factor
    return resize_latents(latents, w, h, keep_aspect=False)

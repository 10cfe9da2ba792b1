"""Previews of intermediate latents for streaming (OpenAI partial_images): decoded by TAESD when
it is installed (or is the pipeline's VAE), else a fixed linear map from the 4 latent channels to
RGB, no decoder at all."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np
from PIL import Image

from shared import images as imgs
from shared.engine.accel import TAESD_DIRS
from shared.engine.families import FAMILIES

log = logging.getLogger(__name__)

# SD 1.x latent -> RGB factors (the approximation A1111's "Approx cheap" live preview uses)
SD15_RGB = np.array([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350],
                     [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]], dtype=np.float32)
_decoders: dict = {}  # (folder, file mtime, device, dtype) -> AutoencoderTiny, loaded once
_lock = threading.Lock()


def latent_png(latents, size: tuple[int, int], fmt: str = "png") -> bytes:
    """The first image of a latent batch as an approximate picture of `size`, encoded."""
    lat = latents[0].detach().float().cpu().numpy()  # (C, h, w)
    if lat.shape[0] == 4:
        rgb = np.einsum("chw,cr->hwr", lat, SD15_RGB)
    else:  # other latent spaces: the channel mean as grey
        rgb = np.repeat(lat.mean(axis=0)[..., None], 3, axis=2)
    rgb = np.clip((rgb + 1.0) * 127.5, 0, 255).astype(np.uint8)
    return imgs.encode(Image.fromarray(rgb).resize(size, Image.BILINEAR), fmt)


def taesd_png(decoder, latents, size: tuple[int, int], fmt: str = "png") -> bytes:
    """The first image of a latent batch decoded by TAESD (latents as the UNet sees them: TAESD's
    scaling factor is 1), encoded at `size`."""
    import torch

    with torch.no_grad():
        out = decoder.decode(latents[:1].to(decoder.device, decoder.dtype)).sample[0]
    rgb = ((out.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()
    img = Image.fromarray(rgb)
    return imgs.encode(img if img.size == size else img.resize(size, Image.BILINEAR), fmt)


def taesd(loaded, models_dir: Path | None):
    """The TAESD decoder for this model's latents: its own VAE when that is TAESD
    (SDGATE_TINY_VAE), else <models_dir>/taesd (taesdxl for SDXL) loaded once; None without."""
    pipe = loaded.pipe
    if type(getattr(pipe, "vae", None)).__name__ == "AutoencoderTiny":
        return pipe.vae
    family = FAMILIES.get(loaded.info.family)
    if family is None or not family.unet or models_dir is None:  # TAESD reads UNet latents
        return None
    # the folder SDGATE_TINY_VAE loads from: taesd, or taesdxl for SDXL's latents
    kind = "sdxl" if loaded.info.family.startswith("sdxl") else "sd"
    weights = Path(models_dir) / TAESD_DIRS[kind] / "diffusion_pytorch_model.safetensors"
    if not weights.is_file():
        return None
    dtype = getattr(getattr(pipe, "unet", None), "dtype", None) or pipe.vae.dtype
    key = (str(weights.parent), weights.stat().st_mtime_ns, str(pipe.device), str(dtype))
    with _lock:
        if key not in _decoders:
            from shared.engine.archs import build_tiny_vae

            try:
                _decoders[key] = build_tiny_vae(weights.parent).to(pipe.device, dtype).eval()
            except Exception:  # unreadable weights: the linear preview, not a failed request
                log.exception("cannot load TAESD from %s; previews use the linear map",
                              weights.parent)
                return None
        return _decoders[key]


def preview_fn(decoder, size: tuple[int, int], fmt: str):
    """latents -> encoded preview: TAESD when there is one, else the linear map."""

    def make(latents) -> bytes:
        if decoder is not None:
            try:
                return taesd_png(decoder, latents, size, fmt)
            except Exception:  # a preview never fails the generation it previews
                log.exception("TAESD preview failed; using the linear latent preview")
        return latent_png(latents, size, fmt)

    return make


def attach(task, reqs, size: tuple[int, int], loaded=None, models_dir: Path | None = None) -> None:
    """Give each task whose request asked for partial images its preview function."""
    decoder = None
    if loaded is not None and any(r.partial_images for r in reqs):
        decoder = taesd(loaded, models_dir)
    for t, req in zip(getattr(task, "tasks", [task]), reqs):
        t.partial_images = req.partial_images
        if req.partial_images:
            t.preview_fn = preview_fn(decoder, size, req.output_format.value)

"""Cheap previews of intermediate latents for streaming (OpenAI partial_images): a fixed linear
map from the 4 latent channels to RGB, no VAE decode."""

from __future__ import annotations

import numpy as np
from PIL import Image

from shared import images as imgs

# SD 1.x latent -> RGB factors (the approximation A1111's "Approx cheap" live preview uses)
SD15_RGB = np.array([[0.3512, 0.2297, 0.3227], [0.3250, 0.4974, 0.2350],
                     [-0.2829, 0.1762, 0.2721], [-0.2120, -0.2616, -0.7177]], dtype=np.float32)


def latent_png(latents, size: tuple[int, int], fmt: str = "png") -> bytes:
    """The first image of a latent batch as an approximate picture of `size`, encoded."""
    lat = latents[0].detach().float().cpu().numpy()  # (C, h, w)
    if lat.shape[0] == 4:
        rgb = np.einsum("chw,cr->hwr", lat, SD15_RGB)
    else:  # other latent spaces: the channel mean as grey
        rgb = np.repeat(lat.mean(axis=0)[..., None], 3, axis=2)
    rgb = np.clip((rgb + 1.0) * 127.5, 0, 255).astype(np.uint8)
    return imgs.encode(Image.fromarray(rgb).resize(size, Image.BILINEAR), fmt)


def attach(task, reqs, size: tuple[int, int]) -> None:
    """Give each task whose request asked for partial images its preview function."""
    for t, req in zip(getattr(task, "tasks", [task]), reqs):
        t.partial_images = req.partial_images
        if req.partial_images:
            fmt = req.output_format.value
            t.preview_fn = lambda latents, fmt=fmt: latent_png(latents, size, fmt)

"""Paste an aligned face crop back into its image through a soft mask, and nothing else."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from shared.engine.faces.analysis import invert, warp


def crop_mask(size: int) -> Image.Image:
    """A crop-sized mask: opaque inside, a margin eroded and feathered to zero at the edges
    (insightface's paste-back erodes the warped box by ~1/10 and blurs by ~1/20 of its size)."""
    margin = max(2, size // 10)
    mask = Image.new("L", (size, size), 0)
    mask.paste(255, (margin, margin, size - margin, size - margin))
    return mask.filter(ImageFilter.GaussianBlur(max(1, size // 20)))


def paste_back(image: Image.Image, crop: Image.Image, m: np.ndarray) -> Image.Image:
    """`crop` was cut from `image` with the 2x3 map `m` (image -> crop); blend it back. Pixels
    outside the warped mask keep their exact values."""
    size = crop.size[0]
    back = invert(m)
    fake = np.asarray(warp(crop.convert("RGB"), back, image.size), np.float32)
    alpha = np.asarray(warp(crop_mask(size), back, image.size), np.float32)[..., None] / 255.0
    base = np.asarray(image.convert("RGB"))
    out = base.astype(np.float32) * (1.0 - alpha) + fake * alpha
    out = np.where(alpha > 0, np.clip(out + 0.5, 0, 255).astype(np.uint8), base)
    return Image.fromarray(out)

"""Fitting an image to a size, A1111's resize modes: stretch, crop, fill (and cover for hires)."""

from __future__ import annotations

from PIL import Image

STRETCH, CROP, FILL, LATENT = 0, 1, 2, 3  # A1111 resize_mode values


def cover(img: Image.Image, w: int, h: int, resample=Image.LANCZOS) -> Image.Image:
    """Scale to cover w x h keeping the aspect ratio, then cut the centre (A1111 "crop")."""
    scale = max(w / img.width, h / img.height)
    sw, sh = max(w, round(img.width * scale)), max(h, round(img.height * scale))
    img = img.resize((sw, sh), resample)
    left, top = (sw - w) // 2, (sh - h) // 2
    return img.crop((left, top, left + w, top + h))


def contain_and_fill(img: Image.Image, w: int, h: int) -> Image.Image:
    """Scale to fit inside w x h, then fill the bands by stretching the image's own edges."""
    scale = min(w / img.width, h / img.height)
    sw, sh = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    small = img.resize((sw, sh), Image.LANCZOS)
    out = Image.new(img.mode, (w, h))
    left, top = (w - sw) // 2, (h - sh) // 2
    out.paste(small, (left, top))
    if left > 0:  # bands left and right
        out.paste(small.crop((0, 0, 1, sh)).resize((left, sh)), (0, top))
        right = w - left - sw
        if right > 0:
            out.paste(small.crop((sw - 1, 0, sw, sh)).resize((right, sh)), (left + sw, top))
    if top > 0:  # bands above and below
        out.paste(small.crop((0, 0, sw, 1)).resize((sw, top)), (left, 0))
        bottom = h - top - sh
        if bottom > 0:
            out.paste(small.crop((0, sh - 1, sw, sh)).resize((sw, bottom)), (left, top + sh))
    return out


def fit(img: Image.Image, mode: int, w: int, h: int) -> Image.Image:
    """An image at exactly w x h by A1111 resize mode (LATENT resizes in latent space: as is)."""
    if img.size == (w, h) or mode == LATENT:
        return img
    if mode == CROP:
        return cover(img, w, h)
    if mode == FILL:
        return contain_and_fill(img, w, h)
    return img.resize((w, h), Image.LANCZOS)

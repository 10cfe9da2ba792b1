"""Upscaling with A1111's upscaler names: built-in resizes and spandrel models, tiled.

Follows upstream v1.10: `Upscaler.upscale` (up to three model passes until the target is
covered, then a Lanczos resize to the target floored to a multiple of 8),
`upscaler_utils.upscale_with_model` (tiles of ESRGAN_tile px overlapping by ESRGAN_tile_overlap)
and `scripts/postprocessing_upscale.py` (upscaler 2 blended in, crop to size). The `upscale`
operation (shared/engine/ops.py) serves A1111's extras and ModelsLab's super resolution.
"""

from __future__ import annotations

import math
from pathlib import Path

from PIL import Image

from shared import images as imgs
from shared.engine import ops, spandrel_models
from shared.errors import InvalidRequest
from shared.postprocess import UpscaleRequest, UpscaleResult, UpscalerFile, find, find_model

_FILTERS = {"Lanczos": Image.LANCZOS, "Nearest": Image.NEAREST}


def _starts(n: int, tile: int, overlap: int) -> list[int]:
    if n <= tile:
        return [0]
    step = max(1, tile - overlap)
    return [*range(0, n - tile, step), n - tile]


def model_pass(model, img: Image.Image, tile: int = 192, overlap: int = 8) -> Image.Image:
    """One pass of a spandrel model over an RGB image, tile by tile; overlaps are averaged."""
    import numpy as np
    import torch

    if tile <= 0 or (img.width <= tile and img.height <= tile):
        return spandrel_models.run(model, img)
    dtype = next(model.model.parameters()).dtype
    arr = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0)
    s, (h, w) = model.scale, x.shape[-2:]
    out = torch.zeros(1, 3, h * s, w * s)
    weight = torch.zeros(1, 1, h * s, w * s)
    with torch.inference_mode():
        for y0 in _starts(h, tile, overlap):
            for x0 in _starts(w, tile, overlap):
                part = x[..., y0:y0 + tile, x0:x0 + tile].to(model.device, dtype)
                y = model(part).float().cpu()
                th, tw = y.shape[-2:]
                out[..., y0 * s:y0 * s + th, x0 * s:x0 * s + tw] += y
                weight[..., y0 * s:y0 * s + th, x0 * s:x0 * s + tw] += 1
    res = (out / weight).clamp(0, 1).squeeze(0).permute(1, 2, 0).numpy()
    return Image.fromarray((res * 255.0 + 0.5).astype(np.uint8))


def upscale_by(engine, img: Image.Image, upscaler: UpscalerFile | str, scale: float,
               tile: int = 192, overlap: int = 8) -> Image.Image:
    """upstream Upscaler.upscale: `img` scaled by `scale`, sides floored to multiples of 8."""
    dest_w = max(8, int(img.width * scale) // 8 * 8)
    dest_h = max(8, int(img.height * scale) // 8 * 8)
    limit = engine.max_image_pixels
    if dest_w * dest_h > limit:
        raise InvalidRequest(f"upscaled size {dest_w}x{dest_h} is over the limit of {limit} "
                             "pixels", param="upscaling_resize")
    img = img.convert("RGB")
    model = None
    if isinstance(upscaler, UpscalerFile):
        model = spandrel_models.load(upscaler.path, _device(engine))
    for i in range(3):
        if img.width >= dest_w and img.height >= dest_h and (i > 0 or scale != 1):
            break
        shape = img.size
        if model is not None:
            if img.width * img.height * model.scale ** 2 > 4 * limit:
                raise InvalidRequest(f"{upscaler.name} would make an image over 4x the limit "
                                     f"of {limit} pixels", param="upscaling_resize")
            img = model_pass(model, img, tile, overlap)
        elif upscaler in _FILTERS:
            img = img.resize((int(img.width * scale), int(img.height * scale)), _FILTERS[upscaler])
        if shape == img.size:
            break
    if img.size != (dest_w, dest_h):
        img = img.resize((dest_w, dest_h), Image.LANCZOS)
    return img


def upscale_to(engine, img: Image.Image, name: str, w: int, h: int) -> Image.Image:
    """Hires fix: the image upscaled with a model to cover w x h (then fitted by the caller)."""
    up = find(engine.registry.root, name, param="hr_upscaler")
    scale = max(w / img.width, h / img.height)
    if scale <= 1.0:
        return img
    return upscale_by(engine, img, up, math.ceil(scale * 8) / 8)


def post_upscaler(engine, req) -> UpscalerFile | None:
    """A GenerationRequest's `upscale` model, checked before generating: installed, and the
    upscaled images within the pixel limit."""
    if req.upscale is None:
        return None
    up = find_model(engine.registry.root, req.upscale.upscaler, "upscale")
    w, h = (req.hires.width, req.hires.height) if req.hires else (req.width, req.height)
    out_w, out_h = int(w * req.upscale.scale) // 8 * 8, int(h * req.upscale.scale) // 8 * 8
    if out_w * out_h > engine.max_image_pixels:
        raise InvalidRequest(f"upscaled size {out_w}x{out_h} is over the limit of "
                             f"{engine.max_image_pixels} pixels", param="upscale")
    return up


def _device(engine) -> str:
    return str(getattr(engine, "device", "cpu") or "cpu")


def _one(engine, req: UpscaleRequest, img: Image.Image, up1, up2, info: dict) -> Image.Image:
    if req.resize_mode == "size":
        scale = max(req.width / img.width, req.height / img.height)
        info["Postprocess upscale to"] = f"{req.width}x{req.height}"
    else:
        scale = req.scale
        info["Postprocess upscale by"] = f"{req.scale:g}"
    out = upscale_by(engine, img, up1, scale, req.tile, req.tile_overlap)
    info["Postprocess upscaler"] = _name(up1)
    if up2 is not None and req.upscaler_2_visibility > 0:
        second = upscale_by(engine, img, up2, scale, req.tile, req.tile_overlap)
        out = Image.blend(out, second.convert(out.mode), req.upscaler_2_visibility)
        info["Postprocess upscaler 2"] = _name(up2)
    if req.resize_mode == "size" and req.crop:
        cropped = Image.new("RGB", (req.width, req.height))
        cropped.paste(out, (req.width // 2 - out.width // 2, req.height // 2 - out.height // 2))
        out = cropped
        info["Postprocess crop to"] = f"{out.width}x{out.height}"
    return out


def _name(up) -> str:
    return up.name if isinstance(up, UpscalerFile) else up


@ops.op("upscale")
def upscale(engine, req: UpscaleRequest) -> UpscaleResult:
    """A1111's extras upscale over every image of the request."""
    root = Path(engine.registry.root)
    up1 = find(root, req.upscaler_1, "upscaler_1") if req.upscaler_1 is not None else None
    up2 = find(root, req.upscaler_2, "upscaler_2") if req.upscaler_2 is not None else None
    info: dict[str, str] = {}
    out = []
    for i, data in enumerate(req.images):
        img = imgs.open_image(data, engine.max_image_pixels, f"image {i}")
        if up1 is not None:
            img = _one(engine, req, img, up1, up2, info)
        out.append(imgs.encode(img, req.output_format))
    return UpscaleResult(images=out, info=info)

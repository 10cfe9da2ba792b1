"""Inpainting as A1111 does it: mask invert and blur, masked-content fill, "only masked" crops,
and pasting the result back so pixels outside the mask stay exactly as they were.

`plan()` prepares what the inpaint pipeline gets; `InpaintPlan.finish()` turns each generated
image back into a picture of the full size. Masks are white where the picture is repainted.
"""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image, ImageChops, ImageFilter, ImageOps

from shared.engine import resize

FILL, ORIGINAL, LATENT_NOISE, LATENT_NOTHING = 0, 1, 2, 3  # A1111 inpainting_fill values


def binary_source(mask: Image.Image) -> Image.Image:
    """The mask as "L": an RGBA mask with transparency uses its alpha, anything else its grey."""
    if mask.mode in ("RGBA", "LA") and mask.getextrema()[-1] != (255, 255):
        return mask.getchannel("A")
    return mask.convert("L")


def blur(mask: Image.Image, x: int, y: int) -> Image.Image:
    return mask.filter(ImageFilter.GaussianBlur((x, y))) if x > 0 or y > 0 else mask


def fill_masked(image: Image.Image, mask: Image.Image) -> Image.Image:
    """Paint the masked area with the colours around it (blurs of decreasing radius, kept pixels
    on top), so the sampler starts from plausible colours instead of the old content."""
    keep = ImageOps.invert(mask)
    base = image.convert("RGBA")
    base.putalpha(keep)
    premultiplied = base.convert("RGBa")  # blur in premultiplied alpha: holes take no colour
    out = Image.new("RGBA", image.size)
    for radius, times in ((256, 1), (64, 1), (16, 2), (4, 4), (2, 2), (0, 1)):
        layer = premultiplied.filter(ImageFilter.GaussianBlur(radius)) if radius else premultiplied
        layer = layer.convert("RGBA")
        for _ in range(times):
            out.alpha_composite(layer)
    return out.convert("RGB")


def crop_region(mask: Image.Image, pad: int, w: int, h: int) -> tuple[int, int, int, int] | None:
    """The box around the mask plus `pad`, grown to the w:h aspect ratio inside the picture."""
    box = mask.point(lambda v: 255 if v > 0 else 0).getbbox()
    if box is None:
        return None
    W, H = mask.size
    x1, y1, x2, y2 = max(0, box[0] - pad), max(0, box[1] - pad), min(W, box[2] + pad), \
        min(H, box[3] + pad)
    want = w / h
    if (x2 - x1) / (y2 - y1) < want:  # too narrow: widen
        grow = round((y2 - y1) * want) - (x2 - x1)
        x1, x2 = _grow(x1, x2, grow, W)
    else:  # too flat: heighten
        grow = round((x2 - x1) / want) - (y2 - y1)
        y1, y2 = _grow(y1, y2, grow, H)
    return x1, y1, x2, y2


def _grow(a: int, b: int, by: int, limit: int) -> tuple[int, int]:
    """Widen [a, b) by `by`, split evenly, shifted to stay within [0, limit)."""
    a, b = a - by // 2, b + by - by // 2
    if a < 0:
        b, a = b - a, 0
    if b > limit:
        a, b = max(0, a - (b - limit)), limit
    return a, b


@dataclass
class InpaintPlan:
    """What the pipeline gets (image, mask at w x h) and how to put its output back."""

    image: Image.Image  # at w x h, masked content already filled if asked
    mask: Image.Image  # "L" at w x h
    original: Image.Image  # the full picture the result is pasted onto
    overlay: Image.Image  # "L" at the original's size: where the result shows
    region: tuple[int, int, int, int] | None  # "only masked": the box of the original used

    def finish(self, generated: Image.Image) -> Image.Image:
        """The full picture: the generated pixels where the mask is, the original elsewhere."""
        if self.region is None:
            painted = generated.resize(self.original.size, Image.LANCZOS) \
                if generated.size != self.original.size else generated
        else:
            x1, y1, x2, y2 = self.region
            painted = self.original.copy()
            painted.paste(generated.resize((x2 - x1, y2 - y1), Image.LANCZOS), (x1, y1))
        return Image.composite(painted.convert("RGB"), self.original, self.overlay)


def plan(init: Image.Image, mask: Image.Image, w: int, h: int, *, resize_mode: int = 0,
         blur_xy: tuple[int, int] = (0, 0), invert: bool = False, fill: int = ORIGINAL,
         full_res: bool = False, padding: int = 0) -> InpaintPlan | None:
    """Prepare an inpaint; None when the mask is empty (A1111 then does a plain img2img)."""
    mask = binary_source(mask)
    if invert:
        mask = ImageOps.invert(mask)
    mask = blur(mask, *blur_xy)
    if full_res:
        mask = mask.resize(init.size, Image.LANCZOS) if mask.size != init.size else mask
        region = crop_region(mask, padding, w, h)
        if region is None:
            return None
        image = init.crop(region).resize((w, h), Image.LANCZOS)
        work_mask = mask.crop(region).resize((w, h), Image.LANCZOS)
        original, overlay = init, mask
    else:
        if mask.getbbox() is None:
            return None
        region = None
        original = resize.fit(init, resize_mode, w, h)
        original = original.resize((w, h), Image.LANCZOS) if original.size != (w, h) else original
        work_mask = resize.fit(mask, resize_mode, w, h)
        work_mask = work_mask.resize((w, h)) if work_mask.size != (w, h) else work_mask
        image = original
        # Blurred edges lean to the generated side, as upstream's overlay does.
        overlay = ImageChops.add(work_mask, work_mask)
    if fill != ORIGINAL:
        image = fill_masked(image, work_mask)
    return InpaintPlan(image, work_mask, original.convert("RGB"), overlay, region)


def latent_fill(pipe, plan_: InpaintPlan, fill: int, seeds: list[int]) -> dict:
    """Inpaint inputs for "latent noise" / "latent nothing": the init image's latents with the
    masked area replaced by seeded noise or zeros (pipeline kwargs image, masked_image_latents)."""
    import numpy as np
    import torch

    vae = pipe.vae
    device, dtype = vae.device, vae.dtype
    pixels = pipe.image_processor.preprocess(plan_.image).to(device, dtype)
    with torch.no_grad():
        latents = vae.encode(pixels).latent_dist.mean * vae.config.scaling_factor
    lh, lw = latents.shape[-2:]
    m = np.asarray(plan_.mask.resize((lw, lh), Image.BILINEAR), dtype=np.float32) / 255.0
    m = torch.from_numpy(np.around(m)).to(device, dtype)[None, None]
    batch = []
    for seed in seeds:
        if fill == LATENT_NOISE:
            g = torch.Generator("cpu").manual_seed(seed)
            noise = torch.randn(latents.shape, generator=g).to(device, dtype)
            batch.append(latents * (1 - m) + noise * m)
        else:
            batch.append(latents * (1 - m))
    image = torch.cat(batch)
    masked = image
    if pipe.unet.config.in_channels == 9:  # inpainting models also see the masked picture
        keep = pipe.image_processor.preprocess(plan_.image).to(device, dtype)
        keep = keep * (pipe.mask_processor.preprocess(plan_.mask).to(device, dtype) < 0.5)
        with torch.no_grad():
            masked = vae.encode(keep).latent_dist.mean * vae.config.scaling_factor
        masked = masked.repeat(len(seeds), 1, 1, 1)
    return {"image": image, "masked_image_latents": masked}

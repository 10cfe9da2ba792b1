"""OpenAI edit masks (transparent = edit) turned into sdgate's inpaint mask (white = repaint)."""

from __future__ import annotations

from PIL import Image

from shared.errors import InvalidRequest
from shared.images import encode


def _alpha(img: Image.Image) -> Image.Image | None:
    """The alpha channel, or None when the image has none (or it is fully opaque)."""
    if not img.has_transparency_data:
        return None
    alpha = img.convert("RGBA").getchannel("A")
    return alpha if alpha.getextrema()[0] < 255 else None


def _transparent_to_white(alpha: Image.Image) -> Image.Image:
    """OpenAI edits where alpha is zero ("fully transparent"); everything else is kept."""
    return alpha.point(lambda a: 255 if a == 0 else 0)


def edit_mask(image: Image.Image, mask: Image.Image | None) -> bytes:
    """The PNG inpaint mask for an edit, white where OpenAI's rules say to repaint.

    With a mask: its fully transparent pixels are repainted; a mask with no transparency at all
    is read as a black-and-white mask (white = repaint), the Stable Diffusion convention. Without
    a mask: the image's own fully transparent pixels are repainted, as upstream does.
    """
    if mask is not None:
        if mask.size != image.size:
            raise InvalidRequest(f"mask is {mask.width}x{mask.height} but image is "
                                 f"{image.width}x{image.height}: they must be the same size",
                                 param="mask")
        alpha = _alpha(mask)
        if alpha is not None:
            white = _transparent_to_white(alpha)
        else:  # the pipeline binarises at one half; doing it here makes the check below exact
            white = mask.convert("L").point(lambda v: 255 if v >= 128 else 0)
    else:
        alpha = _alpha(image)
        if alpha is None:
            raise InvalidRequest("No mask was given and the image has no transparent pixels: "
                                 "send a mask, or an image whose transparent areas are the "
                                 "parts to edit", param="mask")
        white = _transparent_to_white(alpha)
    if white.getextrema()[1] == 0:
        raise InvalidRequest("The mask marks nothing to edit: make the areas to edit fully "
                             "transparent (alpha 0), or white in a mask without transparency",
                             param="mask")
    return encode(white, "png")

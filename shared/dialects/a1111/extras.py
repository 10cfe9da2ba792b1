"""A1111's extras (`/extra-single-image`, `/extra-batch-images`) onto the `upscale` operation.

Request and response keys are upstream's `modules/api/models.py` (ExtrasBaseRequest and its
single/batch forms); the work is `scripts/postprocessing_upscale.py`. Face restoration
(GFPGAN / CodeFormer visibility > 0) follows in a1111/faces.py (the `face_restore` operation).
"""

from __future__ import annotations

import base64
import html
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.images import b64decode_strict, check_image
from shared.postprocess import UpscaleRequest, UpscaleResult

# A null upscaler is upstream's "no upscaling"; any other null field means its default.
_NULL_KEPT = {"upscaler_1", "upscaler_2"}


class ExtrasBaseRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    resize_mode: Literal[0, 1] = 0  # 0: scale by upscaling_resize, 1: to upscaling_resize_w/h
    show_extras_results: bool = True
    gfpgan_visibility: float = Field(0, ge=0, le=1)
    codeformer_visibility: float = Field(0, ge=0, le=1)
    codeformer_weight: float = Field(0, ge=0, le=1)
    upscaling_resize: float = Field(2, ge=1, le=8)
    upscaling_resize_w: int = Field(512, ge=1, le=8192)
    upscaling_resize_h: int = Field(512, ge=1, le=8192)
    upscaling_crop: bool = True
    upscaler_1: str | None = "None"
    upscaler_2: str | None = "None"
    extras_upscaler_2_visibility: float = Field(0, ge=0, le=1)
    upscale_first: bool = False  # order against face restoration, which is refused anyway

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data):
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None or k in _NULL_KEPT}
        return data


class ExtrasSingleImageRequest(ExtrasBaseRequest):
    image: str = ""


class FileData(BaseModel):
    data: str
    name: str = ""


class ExtrasBatchImagesRequest(ExtrasBaseRequest):
    imageList: list[FileData] = Field(min_length=1)  # noqa: N815 (upstream's key)


def _int_option(options: dict, key: str, default: int) -> int:
    """An upstream tiling option POSTed to /options (any junk there means the default)."""
    try:
        return max(0, int(options.get(key, default)))
    except (TypeError, ValueError):
        return default


def to_upscale(req: ExtrasBaseRequest, encoded: list[str], max_px: int, options: dict,
               fmt: str = "png") -> UpscaleRequest:
    """The engine request (GFPGAN / CodeFormer run after it: a1111/faces.extras_restores)."""
    images = [check_image(b64decode_strict(e, f"image {i}"), max_px, f"image {i}")
              for i, e in enumerate(encoded)]
    return UpscaleRequest(
        images=images, upscaler_1=req.upscaler_1, upscaler_2=req.upscaler_2,
        upscaler_2_visibility=req.extras_upscaler_2_visibility,
        resize_mode="size" if req.resize_mode == 1 else "scale", scale=req.upscaling_resize,
        width=req.upscaling_resize_w, height=req.upscaling_resize_h, crop=req.upscaling_crop,
        tile=_int_option(options, "ESRGAN_tile", 192),
        tile_overlap=_int_option(options, "ESRGAN_tile_overlap", 8),
        output_format=fmt if fmt in ("png", "jpeg", "webp") else "png")


def html_info(result: UpscaleResult) -> str:
    """upstream plaintext_to_html of the postprocessing infotext."""
    text = ", ".join(f"{k}: {v}" for k, v in result.info.items())
    return f"<p>{html.escape(text)}</p>"


def render_single(result: UpscaleResult) -> dict:
    return {"html_info": html_info(result),
            "image": base64.b64encode(result.images[0]).decode("ascii")}


def render_batch(result: UpscaleResult) -> dict:
    return {"html_info": html_info(result),
            "images": [base64.b64encode(i).decode("ascii") for i in result.images]}

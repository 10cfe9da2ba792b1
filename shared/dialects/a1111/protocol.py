"""AUTOMATIC1111 `/sdapi/v1` request models, field for field with upstream's defaults (v1.10).

Upstream `modules/api/models.py` builds them from the dataclasses `StableDiffusionProcessing`,
`StableDiffusionProcessingTxt2Img` and `StableDiffusionProcessingImg2Img` in
`modules/processing.py`, plus the API-only fields listed there; the order below is theirs.
Upstream makes every field Optional: a null here means the field's default. Unknown fields are
accepted and logged. Ranges are sdgate's (upstream has none and fails later, or not at all).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from shared.generation import MAX_SEED

MAX_SIDE = 2048  # A1111's UI slider range for width / height


class _Lenient(BaseModel):
    """Extra fields allowed (logged by shared.dialects.base.validate); null means default."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_default(cls, data):
        if isinstance(data, dict):
            fields = cls.model_fields
            return {k: v for k, v in data.items()
                    if not (v is None and k in fields and fields[k].default is not None)}
        return data


class ProcessingRequest(_Lenient):
    """The fields txt2img and img2img share (upstream StableDiffusionProcessing)."""

    prompt: str = ""
    negative_prompt: str = ""
    styles: list[str] | None = None
    seed: int = Field(-1, ge=-1, le=MAX_SEED)
    subseed: int = Field(-1, ge=-1, le=MAX_SEED)
    subseed_strength: float = Field(0, ge=0, le=1)
    seed_resize_from_h: int = Field(-1, ge=-1, le=4096)
    seed_resize_from_w: int = Field(-1, ge=-1, le=4096)
    sampler_name: str | None = None
    scheduler: str | None = None
    batch_size: int = Field(1, ge=1, le=64)
    n_iter: int = Field(1, ge=1, le=64)
    steps: int = Field(50, ge=1, le=150)
    cfg_scale: float = Field(7.0, ge=0, le=30)
    width: int = Field(512, ge=64, le=MAX_SIDE)  # not a multiple of 8: run at the next, resized
    height: int = Field(512, ge=64, le=MAX_SIDE)
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = Field(None, ge=0, le=1)
    denoising_strength: float | None = Field(None, ge=0, le=1)
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _enough_images(self):
        if self.batch_size * self.n_iter > 64:
            raise ValueError("batch_size x n_iter must be at most 64 images")
        return self


class ApiFields(_Lenient):
    """Upstream's API-only additional fields, shared by txt2img and img2img, and sdgate's own."""

    sampler_index: str = "Euler"  # the old name of sampler_name
    script_name: str | None = None
    script_args: list = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict = Field(default_factory=dict)
    infotext: str | None = None
    # -- sdgate additions (not echoed in `parameters`) --
    model: str | None = None  # seed 001's gateway field naming the checkpoint
    response_format: Literal["b64_json", "url"] | None = None  # "url": images as storage URLs


class _Txt2ImgFields(ProcessingRequest):
    """upstream StableDiffusionProcessingTxt2Img's own fields (hires fix)."""

    enable_hr: bool = False
    firstphase_width: int = Field(0, ge=0, le=MAX_SIDE)
    firstphase_height: int = Field(0, ge=0, le=MAX_SIDE)
    hr_scale: float = Field(2.0, ge=1, le=4)
    hr_upscaler: str | None = None
    hr_second_pass_steps: int = Field(0, ge=0, le=150)
    hr_resize_x: int = Field(0, ge=0, le=4096)
    hr_resize_y: int = Field(0, ge=0, le=4096)
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str = ""
    hr_negative_prompt: str = ""
    force_task_id: str | None = None


class _Img2ImgFields(ProcessingRequest):
    """upstream StableDiffusionProcessingImg2Img's own fields (a mask inpaints)."""

    init_images: list[str] | None = None
    resize_mode: int = Field(0, ge=0, le=3)
    denoising_strength: float = Field(0.75, ge=0, le=1)
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int = Field(4, ge=0, le=64)
    mask_blur_y: int = Field(4, ge=0, le=64)
    mask_blur: int | None = Field(None, ge=0, le=64)
    mask_round: bool = True
    inpainting_fill: int = Field(0, ge=0, le=3)
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = Field(0, ge=0, le=1024)
    inpainting_mask_invert: int = Field(0, ge=0, le=1)
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    force_task_id: str | None = None
    include_init_images: bool = False  # API-only; echoed in `parameters` as upstream


# Bases listed API fields first so pydantic orders the fields as upstream: shared, own, API-only.
class Txt2ImgRequest(ApiFields, _Txt2ImgFields):
    """POST /sdapi/v1/txt2img (upstream StableDiffusionTxt2ImgProcessingAPI)."""


class Img2ImgRequest(ApiFields, _Img2ImgFields):
    """POST /sdapi/v1/img2img (upstream StableDiffusionImg2ImgProcessingAPI)."""

    def blur(self) -> tuple[int, int]:
        """Upstream's mask_blur sets both directions."""
        if self.mask_blur is not None:
            return self.mask_blur, self.mask_blur
        return self.mask_blur_x, self.mask_blur_y


SDGATE_FIELDS = {"model", "response_format"}


class PNGInfoRequest(BaseModel):
    """POST /sdapi/v1/png-info."""

    image: str = Field(min_length=1)


class ProgressQuery(BaseModel):
    """GET /sdapi/v1/progress query; `id_task` is sdgate's (upstream's is global only)."""

    skip_current_image: bool = False
    id_task: str | None = None

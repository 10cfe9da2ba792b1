"""ADetailer as an A1111 `alwayson_scripts.ADetailer.args` entry (Bing-su/adetailer): an
optional `ad_enable` bool, an optional `skip_img2img` bool, then one dict of `ad_*` args per
tab (upstream's ADetailerArgs) -> the engine's ADetailer units. Arguments that would change
the picture in ways sdgate does not do are refused, never ignored."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.adetailer import VERSION, ADetailerUnit, detectors
from shared.dialects.a1111 import serving
from shared.dialects.a1111.router import authorised
from shared.dialects.base import dialect_route
from shared.engine import samplers
from shared.errors import InvalidRequest, Unsupported, from_pydantic

SCRIPT = "adetailer"
FIELD = "alwayson_scripts.ADetailer.args"
SAME = {"sampler": "Use same sampler", "scheduler": "Use same scheduler",
        "checkpoint": "Use same checkpoint", "vae": "Use same VAE"}


class ADetailerArgs(BaseModel):
    """Upstream's ADetailerArgs (adetailer/args.py, v25.3), field for field."""

    model_config = ConfigDict(extra="forbid")

    ad_model: str = "None"
    ad_model_classes: str = ""
    ad_tab_enable: bool = True
    ad_prompt: str = ""
    ad_negative_prompt: str = ""
    ad_confidence: float = Field(0.3, ge=0.0, le=1.0)
    ad_mask_filter_method: str = "Area"
    ad_mask_k: int = Field(0, ge=0)
    ad_mask_k_largest: int | None = Field(None, ge=0)  # older releases' name for ad_mask_k
    ad_mask_min_ratio: float = Field(0.0, ge=0.0, le=1.0)
    ad_mask_max_ratio: float = Field(1.0, ge=0.0, le=1.0)
    ad_dilate_erode: int = 4
    ad_x_offset: int = 0
    ad_y_offset: int = 0
    ad_mask_merge_invert: str = "None"
    ad_mask_blur: int = Field(4, ge=0)
    ad_denoising_strength: float = Field(0.4, ge=0.0, le=1.0)
    ad_inpaint_only_masked: bool = True
    ad_inpaint_only_masked_padding: int = Field(32, ge=0)
    ad_use_inpaint_width_height: bool = False
    ad_inpaint_width: int = Field(512, ge=8, le=4096)
    ad_inpaint_height: int = Field(512, ge=8, le=4096)
    ad_use_steps: bool = False
    ad_steps: int = Field(28, ge=1, le=500)
    ad_use_cfg_scale: bool = False
    ad_cfg_scale: float = Field(7.0, ge=0.0, le=100.0)
    ad_use_checkpoint: bool = False
    ad_checkpoint: str | None = None
    ad_use_vae: bool = False
    ad_vae: str | None = None
    ad_use_sampler: bool = False
    ad_sampler: str = "DPM++ 2M Karras"
    ad_scheduler: str = "Use same scheduler"
    ad_use_noise_multiplier: bool = False
    ad_noise_multiplier: float = Field(1.0, ge=0.5, le=1.5)
    ad_use_clip_skip: bool = False
    ad_clip_skip: int = Field(1, ge=1, le=12)
    ad_restore_face: bool = False
    ad_controlnet_model: str = "None"
    ad_controlnet_module: str = "None"
    ad_controlnet_weight: float = Field(1.0, ge=0.0, le=1.0)
    ad_controlnet_guidance_start: float = Field(0.0, ge=0.0, le=1.0)
    ad_controlnet_guidance_end: float = Field(1.0, ge=0.0, le=1.0)
    is_api: bool = True

    def skipped(self) -> bool:
        """Upstream's need_skip: no model, or the tab turned off."""
        return self.ad_model == "None" or self.ad_tab_enable is False


def is_script(name: str) -> bool:
    return name.strip().lower() == SCRIPT


def _refuse(a: ADetailerArgs, field: str) -> None:
    def no(name: str, why: str):
        raise Unsupported(f"ADetailer {name} {why}", param=f"{field}.{name}")

    if a.ad_model.lower().startswith("mediapipe"):
        no("ad_model", f"{a.ad_model!r}: mediapipe is not installed here; use a YOLO ONNX "
           "export or face_scrfd_10g (GET /adetailer/v1/ad_model)")
    if a.ad_model_classes.strip():
        no("ad_model_classes", "(YOLO-World classes) is not supported")
    if a.ad_mask_filter_method not in ("Area", "Confidence"):
        raise InvalidRequest(f"{field}.ad_mask_filter_method: choose Area or Confidence",
                             param=f"{field}.ad_mask_filter_method")
    if a.ad_mask_merge_invert not in ("None", "Merge", "Merge and Invert"):
        raise InvalidRequest(f"{field}.ad_mask_merge_invert: choose None, Merge or Merge and "
                             "Invert", param=f"{field}.ad_mask_merge_invert")
    if a.ad_use_checkpoint and a.ad_checkpoint not in (None, "", "None", SAME["checkpoint"]):
        no("ad_checkpoint", "(another model for the detail pass) is not supported")
    if a.ad_use_vae and a.ad_vae not in (None, "", "None", SAME["vae"]):
        no("ad_vae", "(a separate VAE) is not supported")
    if a.ad_use_noise_multiplier and a.ad_noise_multiplier != 1:
        no("ad_noise_multiplier", "other than 1 is not supported")
    if a.ad_restore_face:
        no("ad_restore_face", "is not supported; send restore_faces on the request instead")
    if a.ad_controlnet_model not in ("None", "", "Passthrough"):
        no("ad_controlnet_model", "(a ControlNet for the detail pass) is not supported")


def _unit(a: ADetailerArgs, field: str) -> ADetailerUnit:
    _refuse(a, field)
    sampler = scheduler = None
    if a.ad_use_sampler:
        sampler = None if a.ad_sampler == SAME["sampler"] else a.ad_sampler
        scheduler = None if a.ad_scheduler == SAME["scheduler"] else samplers.schedule_key(
            a.ad_scheduler)  # unknown: 404 naming the choices, before any work
        if sampler:
            samplers.resolve(sampler, scheduler)
    return ADetailerUnit(
        model=a.ad_model, prompt=a.ad_prompt, negative_prompt=a.ad_negative_prompt,
        confidence=a.ad_confidence, filter_method=a.ad_mask_filter_method,
        mask_k=a.ad_mask_k if a.ad_mask_k_largest is None else a.ad_mask_k_largest,
        min_ratio=a.ad_mask_min_ratio, max_ratio=a.ad_mask_max_ratio,
        dilate_erode=a.ad_dilate_erode, x_offset=a.ad_x_offset, y_offset=a.ad_y_offset,
        merge_invert=a.ad_mask_merge_invert, mask_blur=a.ad_mask_blur,
        strength=a.ad_denoising_strength, only_masked=a.ad_inpaint_only_masked,
        padding=a.ad_inpaint_only_masked_padding,
        size=(a.ad_inpaint_width, a.ad_inpaint_height) if a.ad_use_inpaint_width_height
        else None,
        steps=a.ad_steps if a.ad_use_steps else None,
        guidance=a.ad_cfg_scale if a.ad_use_cfg_scale else None,
        sampler=sampler, scheduler=scheduler,
        clip_skip=a.ad_clip_skip if a.ad_use_clip_skip else None)


def parse(raw, img2img: bool, inpaint: bool) -> list[ADetailerUnit]:
    """The enabled units of the args (none when ad_enable is false or every tab is skipped)."""
    args = raw.get("args") if isinstance(raw, dict) and "args" in raw else raw
    if isinstance(args, dict):
        args = [args]
    if not isinstance(args, list):
        raise InvalidRequest(f"{FIELD} must be a list: [ad_enable, skip_img2img, {{ad_* args}}, "
                             "...]", param=FIELD)
    enabled = args[0] if args and isinstance(args[0], bool) else True
    if len(args) >= 2 and isinstance(args[1], bool) and args[1] and img2img:
        raise Unsupported("ADetailer skip_img2img is not supported; send the picture to "
                          "txt2img's ADetailer, or img2img at full strength",
                          param=f"{FIELD}.1")
    units = []
    for i, item in enumerate(args):
        if isinstance(item, bool) and i < 2:
            continue
        field = f"{FIELD}.{i}"
        if not isinstance(item, dict):
            raise InvalidRequest(f"{field}: expected a dict of ad_* args", param=field)
        try:
            a = ADetailerArgs(**item)
        except ValidationError as e:
            raise from_pydantic(e, field + ".") from e
        if not a.skipped():
            units.append(_unit(a, field))
    if enabled and units and inpaint:
        raise Unsupported("ADetailer on img2img inpainting (with a mask) is not supported",
                          param=FIELD)
    return units if enabled else []


# -- the extension's info routes at the root: /adetailer/v1/version, schema, ad_model ------------
def _routes():
    router = APIRouter(route_class=dialect_route(serving.render_error),
                       dependencies=[Depends(authorised)], tags=["ADetailer /adetailer/v1"])

    @router.get("/adetailer/v1/version")
    def version():
        return {"version": VERSION}

    @router.get("/adetailer/v1/schema")
    def schema():
        return ADetailerArgs.model_json_schema()

    @router.get("/adetailer/v1/ad_model")
    def ad_model(request: Request):
        return {"ad_model": detectors(request.app.state.settings.models_dir)}

    return router


router = _routes()

"""The ReActor extension's API (sd-webui-reactor scripts/reactor_api.py): /reactor/image and the
model lists, at `/reactor` and the gateway's `/v1/reactor`, in A1111's error envelope."""

from __future__ import annotations

import base64
import logging

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from shared.dialects.a1111.router import authorised
from shared.dialects.a1111.serving import render_error
from shared.dialects.base import backend, dialect_route, read_fields, validate
from shared.errors import Unavailable, Unsupported
from shared.faces import FaceSwapRequest, Restore, face_models, swap_models
from shared.images import b64decode_strict, check_image

log = logging.getLogger(__name__)

PREFIXES = ("", "/v1")


class ReactorImageRequest(BaseModel):
    """POST /reactor/image, field for field in upstream's order (v1.0.8 of its API)."""

    model_config = ConfigDict(extra="allow")

    source_image: str = ""
    target_image: str = ""
    source_faces_index: list[int] = [0]
    face_index: list[int] = [0]
    upscaler: str = "None"
    scale: float = 1
    upscale_visibility: float = 1
    face_restorer: str = "None"
    restorer_visibility: float = Field(1, ge=0, le=1)
    codeformer_weight: float = Field(0.5, ge=0, le=1)
    restore_first: int = 1
    model: str = "inswapper_128.onnx"
    gender_source: int = Field(0, ge=0, le=2)
    gender_target: int = Field(0, ge=0, le=2)
    save_to_file: int = 0
    result_file_path: str = ""
    device: str = "CPU"  # the server picks the provider (CUDA on the GPU class)
    mask_face: int = 0
    select_source: int = Field(0, ge=0, le=2)
    face_model: str = "None"
    source_folder: str = ""
    random_image: int = 0
    upscale_force: int = 0
    det_thresh: float = Field(0.5, ge=0, le=1)
    det_maxnum: int = Field(0, ge=0)
    safety_checker: bool = False  # sdgate: refuse when the source or target image is flagged


def _enabled(request: Request) -> None:
    if not request.app.state.settings.faces:
        raise Unavailable("face features are turned off on this server (SDGATE_FACES)")


router = APIRouter(route_class=dialect_route(render_error),
                   dependencies=[Depends(authorised), Depends(_enabled)],
                   tags=["ReActor /reactor"])


def _refuse(req: ReactorImageRequest) -> None:
    """Options that would change the image in ways sdgate does not do: refused, not ignored."""
    if req.upscaler not in ("None", "") and (req.scale != 1 or req.upscale_force):
        raise Unsupported("ReActor's upscaler is not supported; send upscaler 'None' and "
                          "upscale with /sdapi/v1/extra-single-image", param="upscaler")
    if req.mask_face:
        raise Unsupported("mask_face needs a face parsing model sdgate does not have",
                          param="mask_face")
    if req.select_source == 2 or req.source_folder:
        raise Unsupported("select_source 2 (a server folder of source images) is not offered",
                          param="select_source")
    if req.save_to_file:
        raise Unsupported("save_to_file (writing a server path) is not offered; the result is "
                          "in the response", param="save_to_file")


def restore_of(req: ReactorImageRequest) -> Restore | None:
    """ReActor's face restorer after the swap (None: "None" or visibility 0)."""
    if req.face_restorer in ("None", "") or req.restorer_visibility <= 0:
        return None
    return Restore(model=req.face_restorer, visibility=req.restorer_visibility,
                   codeformer_weight=req.codeformer_weight)


def to_internal(req: ReactorImageRequest, max_pixels: int, safety: bool = False) \
        -> FaceSwapRequest:
    """The engine's face swap request for a ReActor request (`safety`: the server screens
    every swap's images, SDGATE_FACES_SAFETY_CHECKER)."""
    _refuse(req)
    target = check_image(b64decode_strict(req.target_image, "target_image"), max_pixels,
                         "target_image")
    source = face_model = None
    if req.select_source == 1:
        if req.face_model in ("", "None"):
            raise Unsupported("select_source 1 needs face_model", param="face_model")
        face_model = req.face_model
    else:
        source = check_image(b64decode_strict(req.source_image, "source_image"), max_pixels,
                             "source_image")
    return FaceSwapRequest(
        target_image=target, source_image=source, face_model=face_model,
        source_faces_index=req.source_faces_index, face_index=req.face_index, model=req.model,
        gender_source=req.gender_source, gender_target=req.gender_target,
        det_thresh=req.det_thresh, det_maxnum=req.det_maxnum, restore=restore_of(req),
        restore_first=bool(req.restore_first), safety_checker=safety or req.safety_checker)


@router.post("/reactor/image")
async def reactor_image(request: Request):
    req = validate(ReactorImageRequest, await read_fields(request))
    settings = request.app.state.settings
    internal = to_internal(req, settings.max_image_pixels, settings.faces_safety_checker)
    result = await backend(request).op("face_swap", internal)
    return {"image": base64.b64encode(result.image).decode("ascii")}


@router.get("/reactor/models")
def reactor_models(request: Request):
    return {"models": swap_models(request.app.state.settings.models_dir)}


@router.get("/reactor/upscalers")
def reactor_upscalers():
    return {"upscalers": ["None"]}  # ReActor's upscaler is refused; only "None" works here


@router.get("/reactor/facemodels")
def reactor_facemodels(request: Request):
    return {"facemodels": face_models(request.app.state.settings.models_dir)}

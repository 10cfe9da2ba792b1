"""The three OpenAI Images routes, their response body and OpenAI's error envelope."""

from __future__ import annotations

import base64
import time

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from shared.dialects.base import (backend, body, check_key, dialect_route, generate, header_key,
                                  read_fields, validate)
from shared.dialects.openai_images.masks import edit_mask
from shared.dialects.openai_images.protocol import (ImageEditRequest, ImageGenerateRequest,
                                                    ImageVariationRequest, ResponseFormat,
                                                    invalid_field, sdgate_model)
from shared.errors import BadImage, SdgateError, Unsupported, status_of
from shared.generation import GenerationRequest
from shared.images import open_image

# Our error codes where OpenAI has its own word for the same thing.
CODES = {"validation_error": "invalid_value", "unsupported": "unsupported_value",
         "rate_limited": "rate_limit_exceeded", "unavailable": "server_busy"}


def render_error(err: SdgateError) -> JSONResponse:
    """{"error": {message, type, param, code}} with the statuses the openai clients map."""
    status = status_of(err)
    if status == 422:  # OpenAI answers every invalid parameter with 400 (BadRequestError)
        status = 400
    kind = ("server_error" if status >= 500 else "requests" if status == 429
            else "invalid_request_error")
    return JSONResponse({"error": {"message": err.message, "type": kind, "param": err.param,
                                   "code": CODES.get(err.code, err.code)}}, status_code=status)


def render(images: list, kind: ResponseFormat, internal: GenerationRequest) -> dict:
    """{created, data: [{url | b64_json, revised_prompt}]} plus the GPT image models' echoes."""
    data = []
    for img in images:
        item = ({"b64_json": base64.b64encode(img.data).decode("ascii")} if kind == "b64_json"
                else {"url": img.url})
        item["revised_prompt"] = internal.prompt or None  # sdgate never rewrites prompts
        data.append(item)
    return {"created": int(time.time()), "data": data,
            "output_format": internal.output_format.value,
            "size": f"{internal.width}x{internal.height}"}


router = APIRouter(route_class=dialect_route(render_error), tags=["OpenAI Images"])


def _file(value, field: str) -> bytes:
    if value is None:
        raise invalid_field(field, f"{field}: field required")
    if not isinstance(value, bytes):
        raise BadImage(f"{field}: upload the image as a multipart/form-data file", param=field)
    return value


async def _uploads(request: Request) -> tuple[dict, bytes, bytes | None]:
    """Text fields, the one image and the optional mask of a multipart Images request."""
    data = await read_fields(request)
    form = await request.form()  # starlette keeps the form read_fields parsed; used to count
    if len(form.getlist("image")) + len(form.getlist("image[]")) > 1:
        raise Unsupported("sdgate edits one image per request; send a single image",
                          param="image")
    if "markup" in data:
        raise Unsupported("markup is not supported; send a mask instead", param="markup")
    image = data.pop("image", None)
    image = data.pop("image[]", image)  # the openai client names a list of images `image[]`
    mask = data.pop("mask", None)
    return data, _file(image, "image"), None if mask is None else _file(mask, "mask")


async def _respond(request: Request, internal: GenerationRequest, kind: ResponseFormat) -> dict:
    result = await generate(request, internal, keep_bytes=kind == "b64_json")
    return render(result.images, kind, internal)


@router.post("/v1/images/generations", **body(ImageGenerateRequest))
async def generations(request: Request):
    check_key(request, header_key(request))
    req = validate(ImageGenerateRequest, await read_fields(request))
    native = backend(request).native_size(sdgate_model(req.model))  # unknown model -> 404
    return await _respond(request, req.to_internal(native), req.response_kind())


@router.post("/v1/images/edits")
async def edits(request: Request):
    check_key(request, header_key(request))
    data, image, mask = await _uploads(request)
    req = validate(ImageEditRequest, data)
    backend(request).native_size(sdgate_model(req.model))  # unknown model -> 404
    max_px = request.app.state.settings.max_image_pixels
    img = open_image(image, max_px, "image")
    mask_png = edit_mask(img, None if mask is None else open_image(mask, max_px, "mask"))
    return await _respond(request, req.to_internal(image, mask_png, img.size), req.response_kind())


@router.post("/v1/images/variations")
async def variations(request: Request):
    check_key(request, header_key(request))
    data, image, mask = await _uploads(request)
    if mask is not None:
        raise Unsupported("variations take no mask; use /v1/images/edits", param="mask")
    req = validate(ImageVariationRequest, data)
    backend(request).native_size(sdgate_model(req.model))  # unknown model -> 404
    img = open_image(image, request.app.state.settings.max_image_pixels, "image")
    return await _respond(request, req.to_internal(image, img.size), req.response_kind())

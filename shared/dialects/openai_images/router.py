"""The three OpenAI Images routes and GET /v1/models, their response body and OpenAI's error
envelope."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import re
import time

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from shared.dialects.base import (backend, check_key, dialect_route, generate, header_key,
                                  owner, read_fields, validate)
from shared.dialects.dialect import Call, Dialect, Route
from shared.dialects.openai_images.masks import edit_mask
from shared.dialects.openai_images.protocol import (ImageEditRequest, ImageGenerateRequest,
                                                    ImageVariationRequest, ResponseFormat,
                                                    invalid_field, sdgate_model)
from shared.errors import (BadImage, ModelNotFound, ModerationBlocked, NotFound,
                           SdgateError, Unsupported, status_of)
from shared.generation import GenerationRequest
from shared.images import open_image
from shared.progress import TASKS

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


def text_tokens(text: str) -> int:
    """sdgate's token count of a prompt: words and punctuation marks (CLIP splits alike)."""
    return len(re.findall(r"\w+|[^\w\s]", text or ""))


def image_tokens(width: int, height: int) -> int:
    """sdgate's token count of an image: one per 64x64 tile (a count, not OpenAI's billing)."""
    return math.ceil(width / 64) * math.ceil(height / 64)


def usage(internal: GenerationRequest, images: list, input_size: tuple[int, int] | None) -> dict:
    """The gpt-image `usage` object, counted as above."""
    text = text_tokens(internal.prompt)
    in_img = image_tokens(*input_size) if input_size else 0
    out_img = sum(image_tokens(i.width, i.height) for i in images)
    return {"input_tokens": text + in_img, "output_tokens": out_img,
            "total_tokens": text + in_img + out_img,
            "input_tokens_details": {"text_tokens": text, "image_tokens": in_img},
            "output_tokens_details": {"text_tokens": 0, "image_tokens": out_img}}


def render(images: list, kind: ResponseFormat, internal: GenerationRequest,
           input_size: tuple[int, int] | None = None, echo: dict | None = None) -> dict:
    """{created, data: [{url | b64_json, revised_prompt}]} plus the GPT image models' echoes
    (`echo`: the request's quality and safety_identifier, see the protocol's echo())."""
    data = []
    for img in images:
        item = ({"b64_json": base64.b64encode(img.data).decode("ascii")} if kind == "b64_json"
                else {"url": img.url})
        item["revised_prompt"] = internal.prompt or None  # sdgate never rewrites prompts
        data.append(item)
    return {"created": int(time.time()), "data": data,
            "output_format": internal.output_format.value, "background": "opaque",
            "size": f"{internal.width}x{internal.height}",
            "usage": usage(internal, images, input_size), **(echo or {})}


def _file(value, field: str) -> bytes:
    if value is None:
        raise invalid_field(field, f"{field}: field required")
    if not isinstance(value, bytes):
        raise BadImage(f"{field}: upload the image as a multipart/form-data file", param=field)
    return value


MULTIPART = ("multipart/form-data",)


class OpenAIImages(Dialect):
    """OpenAI Images: bearer keys, JSON generations, multipart edits and variations."""

    tags = ("OpenAI Images",)
    routes = (Route("/v1/images/generations", ImageGenerateRequest, "generations"),
              Route("/v1/images/edits", ImageEditRequest, "edits", content_types=MULTIPART),
              Route("/v1/images/variations", ImageVariationRequest, "variations",
                    content_types=MULTIPART))

    async def read(self, call: Call) -> dict:
        """JSON for generations; for edits and variations the text fields, with the images
        (`image`, or the openai client's list `image[]`) and the optional mask in call.extra."""
        data = await read_fields(call.request)
        if call.route.model is ImageGenerateRequest:
            return data
        form = await call.request.form()  # starlette keeps the form read_fields parsed
        files = [*form.getlist("image"), *form.getlist("image[]")]
        data.pop("image", None)
        data.pop("image[]", None)
        images = []
        for f in files:
            if hasattr(f, "read"):  # read_fields read it once already
                await f.seek(0)
                f = await f.read()
            images.append(f)
        call.extra["images"], call.extra["mask"] = images, data.pop("mask", None)
        return data

    def parse(self, call: Call):
        req = validate(call.route.model, call.fields)
        if call.route.model is ImageGenerateRequest:
            return req
        if "markup" in call.fields:
            raise Unsupported("markup is not supported; send a mask instead", param="markup")
        images = [_file(f, "image") for f in call.extra["images"] or [None]]
        mask = call.extra["mask"]
        if isinstance(req, ImageVariationRequest):
            if mask is not None:
                raise Unsupported("variations take no mask; use /v1/images/edits", param="mask")
            if len(images) > 1:
                raise Unsupported("variations take one image", param="image")
        else:
            req.check_references(len(images) - 1)
        call.extra["images"] = images
        call.extra["mask"] = None if mask is None else _file(mask, "mask")
        return req

    def model_name(self, call: Call) -> str | None:
        return sdgate_model(call.parsed.model)

    async def to_internal(self, call: Call) -> GenerationRequest:
        req = call.parsed
        if isinstance(req, ImageGenerateRequest):
            return req.to_internal(call.native)
        max_px = call.settings.max_image_pixels
        (image, *refs), mask = call.extra["images"], call.extra["mask"]
        img = open_image(image, max_px, "image")
        call.extra["input_size"] = img.size
        if isinstance(req, ImageVariationRequest):
            return req.to_internal(image, img.size)
        for i, ref in enumerate(refs, 1):  # references: refused now if undecodable
            open_image(ref, max_px, f"image[{i}]")
        if req.whole_image(mask is not None):  # gpt-image, no mask: the whole image is edited
            mask_png = None
        else:
            mask_png = edit_mask(img, None if mask is None else open_image(mask, max_px, "mask"))
        return req.to_internal(image, mask_png, img.size, refs)

    async def execute(self, call: Call):
        req = call.parsed
        size = call.extra.get("input_size")
        if getattr(req, "stream", False):
            return await _stream(call.request, call.internal, req, size)
        return await _respond(call.request, call.internal, req.response_kind(), size, req.echo())

    def render(self, call: Call, result) -> dict | StreamingResponse:
        return result  # _respond and _stream already answer in OpenAI's shape

    def render_error(self, err: SdgateError) -> JSONResponse:
        return render_error(err)


async def _respond(request: Request, internal: GenerationRequest, kind: ResponseFormat,
                   input_size: tuple[int, int] | None = None, echo: dict | None = None) -> dict:
    result = await generate(request, internal, keep_bytes=kind == "b64_json")
    if internal.safety_checker and any(i.nsfw for i in result.images):
        # OpenAI refuses flagged output rather than returning a blanked image
        raise ModerationBlocked("Your request was rejected by the safety system (the safety "
                                "checker flagged the image); send moderation \"low\" to skip it",
                                param="moderation")
    return render(result.images, kind, internal, input_size, echo)


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


async def _stream(request: Request, internal: GenerationRequest, req,
                  input_size: tuple[int, int] | None) -> StreamingResponse:
    """stream: true: `<events>.partial_image` events as the engine keeps previews of its latents,
    then `<events>.completed` (the openai SDK's ImageGenStreamEvent / ImageEditStreamEvent;
    `events` is image_generation or image_edit)."""
    kind, echo = req.events, req.echo()
    common = {"background": "opaque", "output_format": internal.output_format.value,
              "quality": echo["quality"], "size": f"{internal.width}x{internal.height}"}
    work = asyncio.ensure_future(_respond(request, internal, "b64_json", input_size))
    # a client that leaves mid-stream: its generation ends ClientGone and nobody reads it
    work.add_done_callback(lambda t: t.cancelled() or t.exception())
    # The status line waits until the engine has begun denoising: what it refuses before that
    # (an unknown LoRA, no fitting IP-Adapter, ...) is still a 4xx, not an error event.
    while not work.done():
        task = await TASKS.aget(internal.task_id, owner(request))
        if task is not None and task.started is not None:
            break
        await asyncio.sleep(0.05)
    if work.done() and work.exception() is not None:
        raise work.exception()

    async def events():
        sent = 0
        while True:
            finished = work.done()
            task = await TASKS.aget(internal.task_id, owner(request))
            for data in (task.previews if task else [])[sent:]:
                yield _sse(f"{kind}.partial_image", {
                    "type": f"{kind}.partial_image", "partial_image_index": sent,
                    "b64_json": base64.b64encode(data).decode("ascii"),
                    "created_at": int(time.time()), **common})
                sent += 1
            if finished:
                break
            await asyncio.sleep(0.05)
        try:
            out = work.result()
        except SdgateError as e:  # the status line is sent: the error is an event, as upstream
            yield _sse("error", json.loads(render_error(e).body))
            return
        for item in out["data"]:
            yield _sse(f"{kind}.completed", {
                "type": f"{kind}.completed", "b64_json": item["b64_json"],
                "created_at": out["created"], "usage": out["usage"],
                "safety_identifier": echo["safety_identifier"], **common})

    return StreamingResponse(events(), media_type="text/event-stream")


DIALECT = OpenAIImages()
router = DIALECT.router()


@router.get("/v1/models")
async def models(request: Request):
    """The served models in OpenAI's list shape (`client.models.list()`)."""
    check_key(request, header_key(request))
    found = await anyio.to_thread.run_sync(backend(request).registry.models)
    return {"object": "list", "data": [_model(m) for m in found]}


@router.get("/v1/models/{name:path}")
async def model(request: Request, name: str):
    """One served model (`client.models.retrieve(name)`); an unknown name is a 404
    model_not_found. The name may be any the registry knows (name, title, file name, hash)."""
    check_key(request, header_key(request))
    if not name.strip():
        raise ModelNotFound("Model not found: ''", param="model")
    found = await anyio.to_thread.run_sync(backend(request).registry.resolve, name)
    return _model(found)


def _model(m) -> dict:
    return {"id": m.name, "object": "model", "created": _mtime(m.path), "owned_by": "sdgate"}


def _mtime(path) -> int:
    try:
        return int(path.stat().st_mtime)
    except OSError:
        return 0


def _invalid_url(request: Request):
    raise NotFound(f"Invalid URL ({request.method} {request.url.path})")


# Every other /v1/images and /v1/models path and method answers in OpenAI's error envelope (a
# 404 "Invalid URL", as upstream), not FastAPI's: a router of its own, which the app includes
# after every other route, so it never shadows one (a wrong method on a known path lands here).
fallback = APIRouter(route_class=dialect_route(render_error))
for _path in ("/v1/images/{rest:path}", "/v1/models", "/v1/models/{rest:path}"):
    fallback.add_api_route(_path, _invalid_url, include_in_schema=False,
                           methods=["GET", "POST", "PUT", "PATCH", "DELETE"])

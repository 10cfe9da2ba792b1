"""The AUTOMATIC1111 routes, registered once and mounted at `/sdapi/v1` and at the gateway's
`/v1/sdapi/v1` (seed 001). With API keys configured every route needs one: `Authorization:
Bearer <key>` (or `API-KEY`, `X-API-Key`, or HTTP Basic with the key as password, which is how
A1111 clients send `--api-auth` credentials).
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading

from fastapi import APIRouter, Depends, Request

from shared.dialects.a1111 import catalog, serving
from shared.dialects.a1111.protocol import Img2ImgRequest, PNGInfoRequest, Txt2ImgRequest
from shared.dialects.base import (backend, check_key, dialect_route, header_key, read_fields,
                                  validate)
from shared.errors import FieldError, ModelNotFound, Unsupported, ValidationFailed
from shared.images import b64decode_strict, check_image, open_image
from shared.progress import TASKS

log = logging.getLogger(__name__)

PREFIXES = ("/sdapi/v1", "/v1/sdapi/v1")
URL_HEADER = "x-response-format"  # "url": images as object-storage URLs instead of base64


def _basic_password(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth[:6].lower() != "basic ":
        return None
    try:
        return base64.b64decode(auth[6:].strip()).decode().partition(":")[2] or None
    except (binascii.Error, UnicodeDecodeError):
        return None


def authorised(request: Request) -> None:
    check_key(request, header_key(request) or _basic_password(request))


router = APIRouter(route_class=dialect_route(serving.render_error),
                   dependencies=[Depends(authorised)], tags=["AUTOMATIC1111 /sdapi/v1"])


# -- per-app state -------------------------------------------------------------------------------
_STATE_LOCK = threading.Lock()


def options(request: Request) -> dict:
    """The options POSTed to /options (upstream's settings), kept per app in memory."""
    with _STATE_LOCK:
        if not hasattr(request.app.state, "a1111_options"):
            request.app.state.a1111_options = {}
        return request.app.state.a1111_options


def registry(request: Request):
    """The backend's model registry (local engine, or the volume the remote GPU side reads)."""
    return backend(request).registry


def _current_model(request: Request):
    name = options(request).get("sd_model_checkpoint")
    try:
        return registry(request).resolve(name)
    except ModelNotFound:
        return None


# -- generation ----------------------------------------------------------------------------------
async def _generate(request: Request, req, internal):
    if internal.model:
        registry(request).resolve(internal.model)  # unknown checkpoint: 404 before any work
    urls = (req.response_format or request.headers.get(URL_HEADER, "")).lower() == "url"
    result = await backend(request).generate(internal, keep_bytes=not urls)
    if not req.override_settings_restore_afterwards and req.override_settings:
        kept = {k: v for k, v in req.override_settings.items() if k in serving.OPTION_DEFAULTS}
        options(request).update(kept)
    return serving.render(req, internal, result, urls)


def _controlnet_units(request: Request, req) -> list:
    """sd-webui-controlnet units of alwayson_scripts (shared.dialects.a1111.controlnet)."""
    from shared.dialects.a1111 import controlnet

    return controlnet.units(req.alwayson_scripts, request.app.state.settings.max_image_pixels)


@router.post("/txt2img")
async def txt2img(request: Request):
    req = validate(Txt2ImgRequest, serving.apply_infotext(await read_fields(request)))
    units = _controlnet_units(request, req)
    return await _generate(request, req, serving.to_internal(req, options(request),
                                                             controlnets=units))


@router.post("/img2img")
async def img2img(request: Request):
    req = validate(Img2ImgRequest, serving.apply_infotext(await read_fields(request)))
    max_px = request.app.state.settings.max_image_pixels
    first = serving.checked_init_images(req)
    if first.startswith(("http://", "https://")):
        raise Unsupported("init image URLs are not fetched; send the image as base64",
                          param="init_images")
    init = check_image(b64decode_strict(first, "init_images"), max_px, "init_images")
    mask = check_image(b64decode_strict(req.mask, "mask"), max_px, "mask") if req.mask else None
    internal = serving.to_internal(req, options(request), init=init, mask=mask,
                                   controlnets=_controlnet_units(request, req))
    return await _generate(request, req, internal)


# -- models, samplers, options -------------------------------------------------------------------
@router.get("/sd-models")
def sd_models(request: Request):
    return catalog.sd_models(registry(request))


@router.post("/refresh-checkpoints")
def refresh_checkpoints(request: Request):
    registry(request).refresh()


@router.get("/samplers")
def samplers():
    return catalog.sampler_list()


@router.get("/schedulers")
def schedulers():
    return catalog.scheduler_list()


@router.get("/upscalers")
def upscalers():
    return catalog.upscaler_list()


@router.get("/latent-upscale-modes")
def latent_upscale_modes():
    return catalog.latent_upscale_modes()


@router.get("/loras")
def loras(request: Request):
    return catalog.loras(registry(request))


@router.post("/refresh-loras")
def refresh_loras():
    """LoRA files are listed fresh on every call; nothing is cached to refresh."""


@router.get("/embeddings")
def embeddings(request: Request):
    return catalog.embeddings(registry(request))


@router.post("/refresh-embeddings")
def refresh_embeddings():
    """Embeddings are looked up by name on every prompt; nothing is cached to refresh."""


@router.get("/options")
def get_options(request: Request):
    model = _current_model(request)
    return {**serving.OPTION_DEFAULTS, **options(request),
            "sd_model_checkpoint": model.title if model else None,
            "sd_checkpoint_hash": model.hash if model else None}


@router.post("/options")
async def set_options(request: Request):
    data = await read_fields(request)
    update = dict(data)
    if data.get("sd_model_checkpoint") is not None:
        update["sd_model_checkpoint"] = registry(request).resolve(
            str(data["sd_model_checkpoint"])).title
    clip = data.get("CLIP_stop_at_last_layers")
    if clip is not None and (not isinstance(clip, int) or not 1 <= clip <= 12):
        raise ValidationFailed("CLIP_stop_at_last_layers must be an integer 1-12",
                               fields=[FieldError("CLIP_stop_at_last_layers", "must be 1-12")])
    fmt = data.get("samples_format")
    if fmt is not None and str(fmt).lower() not in serving.SAMPLES_FORMATS:
        raise ValidationFailed(f"samples_format must be one of {list(serving.SAMPLES_FORMATS)}",
                               fields=[FieldError("samples_format", "unknown format")])
    for key, allowed in serving.NEUTRAL_OPTIONS.items():
        if key in data and data[key] not in allowed:
            raise Unsupported(f"option {key}={data[key]!r} is not supported", param=key)
    ignored = sorted(set(data) - set(serving.OPTION_DEFAULTS))
    if ignored:
        log.info("a1111: options stored without effect: %s", ignored)
    options(request).update(update)


@router.get("/cmd-flags")
def cmd_flags():
    return {"api": True, "nowebui": True}


# Lists of things sdgate has none of (no styles, scripts, VAEs, face restorers, hypernetworks).
@router.get("/prompt-styles")
@router.get("/sd-vae")
@router.get("/face-restorers")
@router.get("/hypernetworks")
@router.get("/script-info")
def nothing_installed():
    return []


@router.get("/scripts")
def scripts():
    return {"txt2img": [], "img2img": []}


@router.post("/refresh-vae")
def refresh_vae():
    """No VAE files are listed; nothing to refresh."""


# -- progress, interrupt, skip, png-info, memory ------------------------------------------------
@router.get("/progress")
def progress(skip_current_image: bool = False, id_task: str | None = None):
    """Upstream's global progress; `?id_task=` (a request's force_task_id) for one task."""
    return serving.progress(TASKS.get(id_task) if id_task else TASKS.current())


@router.post("/interrupt")
def interrupt(id_task: str | None = None):
    TASKS.interrupt(id_task)
    return {}


@router.post("/skip")
def skip(id_task: str | None = None):
    TASKS.skip(id_task)


@router.post("/png-info")
async def png_info(request: Request):
    req = validate(PNGInfoRequest, await read_fields(request))
    data = b64decode_strict(req.image, "image")
    return serving.png_info(open_image(data, request.app.state.settings.max_image_pixels))


@router.get("/memory")
def memory(request: Request):
    stats = getattr(backend(request), "memory", None)
    return {"ram": catalog.ram(), "cuda": stats() if stats else {"error": "unavailable"}}

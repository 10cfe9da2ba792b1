"""The AUTOMATIC1111 routes, registered once and mounted at `/sdapi/v1` and at the gateway's
`/v1/sdapi/v1` (seed 001). With API keys configured every route needs one: `Authorization:
Bearer <key>` (or `API-KEY`, `X-API-Key`, or HTTP Basic with the key as password, which is how
A1111 clients send `--api-auth` credentials).
"""

from __future__ import annotations

import base64
import binascii
import logging

import anyio

from fastapi import APIRouter, Depends, Request

from shared.dialects.a1111 import catalog, extras, faces, interrogate, serving, upstream
from shared.dialects.a1111 import scripts as always_on
from shared.dialects.a1111.protocol import Img2ImgRequest, PNGInfoRequest, Txt2ImgRequest
from shared.dialects.base import (backend, body, check_key, dialect_route, generate, header_key, owner,
                                  read_fields, validate)
from shared.dialects.dialect import Call, Dialect, Route
from shared.generation import GenerationRequest
from shared.errors import FieldError, ModelNotFound, NotFound, Unsupported, ValidationFailed
from shared.faces import RESTORER_DIRS, restorer_file, restorers
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
    options(request)  # read the caller's options here, in a worker thread, not on the loop


# -- per-key state -------------------------------------------------------------------------------
def options(request: Request) -> dict:
    """The options the caller's key POSTed to /options (upstream's settings): each key has its
    own, over the server's defaults, so one customer's settings never change another's images.
    Kept in the shared state store (shared/dialects/state.py); read once per request."""
    cached = getattr(request.state, "a1111_options", None)
    if cached is None:
        cached = request.state.a1111_options = request.app.state.dialect_state.namespace(
            "a1111.options", owner(request))
    return cached


async def save_options(request: Request, updates: dict) -> None:
    """Merge `updates` into the caller's stored options."""
    request.state.a1111_options = await request.app.state.dialect_state.asave(
        "a1111.options", owner(request), updates)


def registry(request: Request):
    """The backend's model registry (local engine, or the volume the remote GPU side reads)."""
    return backend(request).registry


def _current_model(request: Request):
    name = options(request).get("sd_model_checkpoint")
    try:
        return registry(request).resolve(name)
    except ModelNotFound:
        return None


# -- generation: the A1111 dialect on the generic endpoint --------------------------------------
def _urls(request: Request, req) -> bool:
    return (req.response_format or request.headers.get(URL_HEADER, "")).lower() == "url"


class A1111(Dialect):
    """AUTOMATIC1111's /sdapi/v1 txt2img and img2img (with their alwayson scripts)."""

    tags = ("AUTOMATIC1111 /sdapi/v1",)
    routes = (Route("/txt2img", Txt2ImgRequest, "txt2img"),
              Route("/img2img", Img2ImgRequest, "img2img"))

    def authenticate(self, call: Call) -> None:
        """Done already: every /sdapi/v1 route depends on `authorised` (the router's)."""

    def parse(self, call: Call):
        return validate(call.route.model, serving.apply_infotext(call.fields))

    def model_name(self, call: Call) -> str | None:
        req = call.parsed
        return ((req.override_settings or {}).get("sd_model_checkpoint") or req.model
                or options(call.request).get("sd_model_checkpoint"))

    async def to_internal(self, call: Call) -> GenerationRequest:
        req, request = call.parsed, call.request
        urls = call.extra["urls"] = _urls(request, req)
        units = _controlnet_units(request, req)
        if not isinstance(req, Img2ImgRequest):
            call.extra["faces"] = always_on.face_scripts(request, req, urls, img2img=False)
            return serving.to_internal(req, options(request), controlnets=units)
        max_px = call.settings.max_image_pixels
        first = serving.checked_init_images(req)
        if first.startswith(("http://", "https://")):
            raise Unsupported("init image URLs are not fetched; send the image as base64",
                              param="init_images")
        init = check_image(b64decode_strict(first, "init_images"), max_px, "init_images")
        mask = check_image(b64decode_strict(req.mask, "mask"), max_px, "mask") if req.mask else None
        face_scripts = call.extra["faces"] = always_on.face_scripts(request, req, urls,
                                                                    img2img=True)
        internal = serving.to_internal(req, options(request), init=init, mask=mask,
                                       controlnets=units)
        if face_scripts.swap_in_source:  # after every refusal to_internal makes
            init = await always_on.swap_source(request, face_scripts, init)
            internal = internal.model_copy(update={"init_image": init})
        return internal

    async def execute(self, call: Call):
        req, request, internal = call.parsed, call.request, call.internal
        urls, face_scripts = call.extra["urls"], call.extra["faces"]
        if internal.refiner:  # unknown refiner checkpoint: 404 before any work
            await anyio.to_thread.run_sync(registry(request).resolve, internal.refiner.model)
        restore = faces.restore_of(req, {**options(request), **(req.override_settings or {})})
        if restore:  # off, URL responses, unknown or missing restorer: refused before any work
            faces.check(request, urls)
            restorer_file(call.settings.models_dir, restore.model)
        result = await generate(request, internal, keep_bytes=not urls, allow_interrupted=True)
        task = await TASKS.aget(internal.task_id, owner(request))
        call.extra["job_timestamp"] = task.timestamp if task else None  # info's = /progress's
        if restore:
            result = await faces.restore_images(request, result, restore, urls)
        if face_scripts.active:
            result = await always_on.after(request, face_scripts, result, internal)
        if not req.override_settings_restore_afterwards and req.override_settings:
            kept = {k: v for k, v in req.override_settings.items()
                    if k in serving.OPTION_DEFAULTS}
            await save_options(request, kept)
        return result

    def render(self, call: Call, result) -> dict:
        return serving.render(call.parsed, call.internal, result, call.extra["urls"],
                              job_timestamp=call.extra.get("job_timestamp"))

    def render_error(self, err):
        return serving.render_error(err)


def _controlnet_units(request: Request, req) -> list:
    """sd-webui-controlnet units of alwayson_scripts (shared.dialects.a1111.controlnet)."""
    from shared.dialects.a1111 import controlnet

    return controlnet.units(req.alwayson_scripts, request.app.state.settings.max_image_pixels)


DIALECT = A1111()
router = DIALECT.router(dependencies=[Depends(authorised)])


# -- extras (upscaling) -------------------------------------------------------------------------
async def _extras(request: Request, req, encoded: list[str]):
    fmt = str(options(request).get("samples_format", "png")).lower()
    up = extras.to_upscale(req, encoded, request.app.state.settings.max_image_pixels,
                           options(request), fmt)
    restores = faces.extras_restores(req)
    if restores:  # off, unknown or missing restorer: refused before any work
        faces.check(request, urls=False)
        for restore in restores:
            restorer_file(request.app.state.settings.models_dir, restore.model)
    result = await backend(request).op("upscale", up)
    return await faces.restore_extras(request, result, restores) if restores else result


@router.post("/extra-single-image")
async def extra_single_image(request: Request):
    req = validate(extras.ExtrasSingleImageRequest, await read_fields(request))
    return extras.render_single(await _extras(request, req, [req.image]))


@router.post("/extra-batch-images")
async def extra_batch_images(request: Request):
    req = validate(extras.ExtrasBatchImagesRequest, await read_fields(request))
    return extras.render_batch(await _extras(request, req, [f.data for f in req.imageList]))


@router.post("/interrogate")
async def interrogate_image(request: Request):
    """BLIP caption (+ CLIP matches) of an image: the `interrogate` engine operation."""
    req = validate(interrogate.InterrogateRequest, await read_fields(request))
    op = interrogate.to_op(req, request.app.state.settings.max_image_pixels, options(request))
    return interrogate.render(await backend(request).op("interrogate", op))


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
def upscalers(request: Request):
    return catalog.upscaler_list(registry(request).root)


@router.get("/realesrgan-models")
def realesrgan_models(request: Request):
    return catalog.realesrgan_models(registry(request).root)


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
    return {**upstream.OPTIONS, **serving.OPTION_DEFAULTS, **options(request),
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
    for key, value in data.items():
        serving.check_option(key, value)
    for key, allowed in serving.NEUTRAL_OPTIONS.items():
        if key in data and data[key] not in allowed:
            raise Unsupported(f"option {key}={data[key]!r} is not supported", param=key)
    ignored = sorted(set(data) - set(serving.OPTION_DEFAULTS))
    if ignored:
        log.info("a1111: options stored without effect: %s", ignored)
    await save_options(request, update)


@router.get("/cmd-flags")
def cmd_flags(request: Request):
    """Every upstream flag (a default install's values); the API-only server sdgate is."""
    return {**upstream.CMD_FLAGS, "api": True, "nowebui": True,
            "ckpt_dir": str(registry(request).root), "models_dir": str(registry(request).root)}


# Lists of things sdgate has none of (no styles, scripts, VAEs, face restorers, hypernetworks).
@router.get("/prompt-styles")
@router.get("/sd-vae")
@router.get("/hypernetworks")
@router.get("/script-info")
def nothing_installed():
    return []


@router.get("/face-restorers")
def face_restorers(request: Request):
    """Restorer families with weights present (docs/faces.md)."""
    root = request.app.state.settings.models_dir
    return [{"name": n, "cmd_dir": str(root / RESTORER_DIRS[n])} for n in restorers(root)]


@router.get("/scripts")
def scripts(request: Request):
    """The alwayson scripts sdgate runs (upstream lists script titles, lowercased)."""
    names = always_on.listed(request.app.state.settings)
    return {"txt2img": names, "img2img": names}


@router.post("/refresh-vae")
def refresh_vae():
    """No VAE files are listed; nothing to refresh."""


# -- progress, interrupt, skip, png-info, memory ------------------------------------------------
@router.get("/progress")
def progress(request: Request, skip_current_image: bool = False, id_task: str | None = None):
    """The caller's progress (upstream's is global; here each key sees only its own tasks);
    `?id_task=` (a request's force_task_id) for one task. Idle: the last task's timestamp."""
    me = owner(request)
    if id_task:
        return serving.progress(TASKS.get(id_task, me))
    return serving.progress(TASKS.current(me), idle=TASKS.last(me))


@router.post("/interrupt")
def interrupt(request: Request, id_task: str | None = None):
    TASKS.interrupt(id_task, owner(request))  # only the caller's own tasks
    return {}


@router.post("/skip")
def skip(request: Request, id_task: str | None = None):
    TASKS.skip(id_task, owner(request))


@router.post("/png-info", **body(PNGInfoRequest))
async def png_info(request: Request):
    req = validate(PNGInfoRequest, await read_fields(request))
    data = b64decode_strict(req.image, "image")
    return serving.png_info(open_image(data, request.app.state.settings.max_image_pixels))


@router.get("/memory")
def memory(request: Request):
    got = backend(request).memory()
    if "cuda" in got:  # a report from the GPU side (another process or container)
        return {"ram": got.get("ram") or {"error": "unavailable"}, "cuda": got["cuda"]}
    return {"ram": catalog.ram(), "cuda": got}


# -- upstream v1.10 routes sdgate answers without the machinery behind them ---------------------
@router.post("/reload-checkpoint")
@router.post("/unload-checkpoint")
def checkpoint_residency():
    """Models are loaded on first use and evicted by the engine's LRU cache (SDGATE max_loaded);
    there is no single loaded checkpoint to unload or reload, so these succeed doing nothing
    (the next generation loads what it needs, as upstream's reload would)."""
    return {}


@router.get("/extensions")
def extensions():
    """No A1111 extensions are installed; ReActor and the LoRA listing are built in."""
    return []


@router.get("/sd-modules")
def sd_modules():
    return []


@router.post("/create/embedding")
@router.post("/create/hypernetwork")
@router.post("/train/embedding")
@router.post("/train/hypernetwork")
def training_refused():
    raise Unsupported("training and creating embeddings / hypernetworks is not offered by this "
                      "server (a generation gateway); train elsewhere and add the file to the "
                      "models folder")


@router.post("/server-kill")
@router.post("/server-restart")
@router.post("/server-stop")
def server_control_refused():
    # Upstream registers these only with --api-server-stop; by default they do not exist.
    raise NotFound("Not Found: server control routes are not enabled (upstream's "
                   "--api-server-stop); the gateway's lifecycle is not an API call")


def _unknown(rest: str):
    raise NotFound("Not Found")


# Included after every /sdapi/v1 router: unknown paths get upstream's error body, not FastAPI's.
fallback = APIRouter(route_class=dialect_route(serving.render_error))
for _prefix in PREFIXES:
    fallback.add_api_route(_prefix + "/{rest:path}", _unknown, include_in_schema=False,
                           methods=["GET", "POST", "PUT", "PATCH", "DELETE"])

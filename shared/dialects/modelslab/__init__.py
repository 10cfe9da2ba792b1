"""Seed 003: the stablediffusionapi.com / ModelsLab API (v3, v4 dreambooth, v6 images).

Every generation is a job: answered `success` when it ends within the synchronous wait
(SDGATE_SYNC_WAIT_SECONDS), else `processing` with `fetch_result` and `future_links`; the job
runner finishes it in the background and calls the `webhook`, if any.
"""

from __future__ import annotations

import secrets
import time

import anyio
from fastapi import APIRouter, Request

from shared import postprocess, prompt_enhance
from shared.accounts import metering
from shared.backend import planned_urls, store_result
from shared.dialects.base import backend, body, check_key, dialect_route, header_key, owner, read_fields
from shared.dialects.dialect import Call, Dialect, Route, endpoint
from shared.dialects.modelslab.controlnet import ControlNetRequest
from shared.dialects.modelslab.protocol import (FetchRequest, Img2ImgRequest, InpaintRequest,
                                                Text2ImgRequest, parse, refuse)
from shared.dialects.modelslab.render import DIALECT as DIALECT_NAME
from shared.dialects.modelslab.render import job_body, render_error
from shared.dialects.modelslab.spam import SpamFilter
from shared.dialects.modelslab.superres import (SuperResolutionRequest, as_result,
                                                check_text2img_upscaler)
from shared.engine.families import FAMILIES
from shared.engine.registry import EMBEDDING_SUFFIXES, EMBEDDINGS_DIR
from shared.errors import (FieldError, JobNotFound, ModelNotFound, NotFound, Unavailable,
                           ValidationFailed)
from shared.generation import GenerationRequest
from shared.images import b64decode_strict, check_image
from shared.jobs import Job
from shared.netguard import Guard, check_url, fetch
from shared.postprocess import UpscaleRequest
from shared.prompt_enhance import EnhancePromptRequest
from shared.translation import TranslateRequest

# -- helpers -----------------------------------------------------------------------------------
def _yn(v: bool) -> str:
    return "yes" if v else "no"


def _merged(request: Request, body: dict) -> dict:
    """The effective request: query-string fields under the body's (old clients POST
    `/api/v3/text2img?key=...&prompt=...` with an empty body)."""
    return {**dict(request.query_params), **body}


def _presented(request: Request, data: dict):
    """The key from the body, the query, a `key` header or the usual auth headers."""
    key = data.get("key")
    if key in (None, ""):
        key = request.headers.get("key") or header_key(request)
    return key if not isinstance(key, (int, float)) else str(key)


async def _authorised(request: Request) -> dict:
    """The effective request of a route that does not generate, its key checked."""
    data = _merged(request, await read_fields(request))
    check_key(request, _presented(request, data))
    await request.app.state.jobs.start()  # restart recovery, if the lifespan did not run it
    return data


def _spam(request: Request) -> SpamFilter:
    state = request.app.state
    if getattr(state, "modelslab_spam", None) is None:
        state.modelslab_spam = SpamFilter(state.settings.spam_window_seconds,
                                          state.dialect_state.state)
    return state.modelslab_spam


async def _image(value: str, field: str, guard: Guard, max_pixels: int) -> bytes:
    """init_image / mask_image: a URL (downloaded through the SSRF guard) or base64."""
    if value.lower().startswith(("http://", "https://")):
        data = await fetch(value, guard, field)
    else:
        data = b64decode_strict(value, field)
    return check_image(data, max_pixels, field)


async def _new_id(runner) -> str:
    """A numeric id like upstream's, below 2**53 so JavaScript clients keep it exact."""
    while True:
        job_id = str(10**15 + secrets.randbelow(2**53 - 10**15))
        if await runner.aget(job_id) is None:
            return job_id


def _meta(req: Text2ImgRequest, internal: GenerationRequest, job_id: str) -> dict:
    """Upstream's meta keys, as this request will run."""
    out = {
        "H": req.height, "W": req.width, "base64": _yn(req.base64),
        "clip_skip": req.clip_skip, "embeddings_model": req.embeddings_model,
        "enhance_prompt": _yn(req.enhance_prompt), "file_prefix": job_id,
        "guidance_scale": req.guidance_scale, "lora_model": req.lora_model,
        "lora_strength": req.lora_strength, "model": req.model_id or "",
        "multi_lingual": _yn(req.multi_lingual), "n_samples": req.samples,
        "negative_prompt": req.negative_prompt, "panorama": _yn(req.panorama),
        "prompt": internal.prompt, "safety_checker": _yn(req.safety_checker),
        "safety_checker_type": req.safety_checker_type.value,
        "scheduler": req.scheduler or "default", "seed": internal.seed,
        "self_attention": _yn(req.self_attention), "steps": req.num_inference_steps,
        "tomesd": _yn(req.tomesd is not False), "track_id": req.track_id,
        "upscale": _yn(req.upscale),
        "use_karras_sigmas": _yn(req.use_karras_sigmas), "vae": "default",
        "webhook": req.webhook, "algorithm_type": req.algorithm_type,
    }
    if isinstance(req, Img2ImgRequest):
        out["strength"] = req.strength
        out["init_image"] = req.init_image if req.init_image.startswith("http") else "base64"
    if isinstance(req, InpaintRequest):
        out["mask_image"] = req.mask_image if req.mask_image.startswith("http") else "base64"
    if req.ip_adapter_image:
        out.update(ip_adapter_id=req.ip_adapter_id, ip_adapter_scale=req.ip_adapter_scale,
                   ip_adapter_image=req.ip_adapter_image
                   if req.ip_adapter_image.startswith("http") else "base64")
    out.update(req.meta_extra())
    return out


FETCH_PATHS = {"v3": "/api/v3/fetch/{}", "v4": "/api/v4/dreambooth/fetch/{}",
               "v5": "/api/v5/fetch/{}", "v6": "/api/v6/images/fetch/{}",
               "v6_editing": "/api/v6/image_editing/fetch/{}",
               "v6_realtime": "/api/v6/realtime/fetch/{}"}


def _fetch_url(request: Request, version: str, job_id: str) -> str:
    base = request.app.state.settings.public_url.rstrip("/")
    return base + FETCH_PATHS[version].format(job_id)


class ModelsLab(Dialect):
    """ModelsLab: every generation is a job, answered in upstream's job body."""

    tags = ("seed 003: ModelsLab",)

    async def read(self, call: Call) -> dict:
        return _merged(call.request, await read_fields(call.request))

    def presented_key(self, call: Call):
        return _presented(call.request, call.fields)

    def parse(self, call: Call):
        req = parse(call.route.model, call.fields)
        if call.route.options["needs_model"] and not req.model_id:  # v4+ name the model
            raise ModelNotFound("Model id not found", param="model_id")
        refuse(req.refusals())
        return req

    def model_name(self, call: Call) -> str | None:
        return call.parsed.model_id

    async def to_internal(self, call: Call) -> GenerationRequest:
        req, settings, be = call.parsed, call.settings, call.backend
        await _spam(call.request).acheck(call.fields)
        upscaler = settings.modelslab_upscaler if req.upscale else None
        if upscaler:  # upscale "yes" with no upscaler installed: refused now, not after generating
            check_text2img_upscaler(be.registry.root, upscaler)
        if req.tomesd:  # sent "yes": on SD3 / Flux a 400 now, not a failed job later
            _check_tomesd(call.model)
        if req.embeddings_model:
            req.check_embeddings(await anyio.to_thread.run_sync(
                be.registry.extra_files, EMBEDDINGS_DIR, EMBEDDING_SUFFIXES))
        if req.multi_lingual:
            req = call.parsed = await _translated(be, req)
        suffix = settings.enhance_prompt_suffix
        if req.enhance_prompt and await anyio.to_thread.run_sync(prompt_enhance.installed,
                                                                 be.registry.root):
            out = await be.op("enhance_prompt", EnhancePromptRequest(prompt=req.prompt))
            req = call.parsed = req.model_copy(update={"prompt": out.prompt})
            suffix = ""  # the prompt model's continuation instead of the fixed terms
        guard = Guard.from_settings(settings)
        if req.webhook:
            await check_url(req.webhook, guard, "webhook")
        images = {name: await _image(value, field, guard, settings.max_image_pixels)
                  for name, (field, value) in req.image_inputs().items()}
        # the models folder: ControlNets and IP-Adapters on disk
        return req.to_internal(req.model_id, suffix, upscaler,
                               root=be.registry.root, **images)

    async def execute(self, call: Call) -> Job:
        """Submit the job and wait for it up to the synchronous wait."""
        req, request, internal, settings = call.parsed, call.request, call.internal, call.settings
        version = call.route.options["version"]
        runner = request.app.state.jobs
        await runner.start()  # restart recovery, if the lifespan did not run it
        await metering.begin(request, internal)  # the key's concurrency and quota; usage record
        async with metering.finishing(request, internal):  # not submitted: its record ends
            if runner.queue() >= settings.max_queue:
                raise Unavailable("the server is busy; retry later",
                                  retry_after=settings.busy_retry_seconds)
            job_id = await _new_id(runner)
            job = Job(id=job_id, dialect=DIALECT_NAME, eta=runner.eta(), keep_bytes=req.base64,
                      owner=internal.owner,
                      future_links=planned_urls(call.backend.storage, job_id,
                                                internal.num_images),
                      webhook=req.webhook,
                      track_id=None if req.track_id is None else str(req.track_id),
                      request={"version": version, "meta": _meta(req, internal, job_id),
                               "fetch_result": _fetch_url(request, version, job_id)})
            runner.submit(job, internal)  # the job runner finishes the record (job_finished)
        # instant_response "yes": upstream answers `processing` at once, for fetch or webhook
        return await runner.wait(job_id, 0 if req.instant_response else settings.sync_wait_seconds)

    def render(self, call: Call, job: Job) -> dict:
        return job_body(job)

    def render_error(self, err):
        return render_error(err)


def _check_tomesd(info) -> None:
    """tomesd "yes" needs a UNet (token merging); SD3 and Flux denoise with a transformer.
    `info`: the model the generic endpoint resolved."""
    family = FAMILIES.get(info.family)
    if family is not None and not family.unet:
        raise ValidationFailed("tomesd", fields=[FieldError(
            "tomesd", f"Token merging (tomesd) merges a UNet's tokens; {info.name} is a "
            f"{family.label} model (a transformer): send tomesd \"no\".")])


async def _translated(be, req: Text2ImgRequest) -> Text2ImgRequest:
    """multi_lingual "yes": prompt and negative prompt brought into English by the `translate`
    operation (refused clearly when no translator is installed)."""
    out = await be.op("translate", TranslateRequest(texts=[req.prompt, req.negative_prompt]))
    return req.model_copy(update={"prompt": out.texts[0], "negative_prompt": out.texts[1]})


class SuperResolution(ModelsLab):
    """Super resolution on the generic endpoint: its "model" is the upscaler file, its work the
    `upscale` operation (and GFPGAN for face_enhance) over one image, answered at once as a
    finished job."""

    def parse(self, call: Call) -> SuperResolutionRequest:
        return parse(SuperResolutionRequest, call.fields)

    async def resolve(self, call: Call) -> None:
        """The upscaler model_id names, found on disk before any download."""
        root = call.backend.registry.root
        call.model = await anyio.to_thread.run_sync(postprocess.find_model, root,
                                                    call.parsed.model_id)

    async def to_internal(self, call: Call) -> UpscaleRequest:
        req, settings = call.parsed, call.settings
        await _spam(call.request).acheck(call.fields)
        field, value = req.image_ref()
        if req.face_enhance and not settings.faces:
            raise Unavailable("face_enhance needs the face features, turned off on this server "
                              "(SDGATE_FACES)", param="face_enhance")
        req.check_face_enhance(call.backend.registry.root)
        guard = Guard.from_settings(settings)
        if req.webhook:
            await check_url(req.webhook, guard, "webhook")
        call.extra["image_ref"] = field, value
        return req.to_upscale(await _image(value, field, guard, settings.max_image_pixels))

    async def admit(self, call: Call, internal: UpscaleRequest) -> UpscaleRequest:
        call.extra["owner"] = owner(call.request)  # no generation limits: one model pass
        return internal

    async def execute(self, call: Call) -> Job:
        req, request, be = call.parsed, call.request, call.backend
        version = call.route.options["version"]
        t0 = time.perf_counter()
        with request.app.state.admission:  # counts against the bounded queue
            out = (await be.op("upscale", call.internal)).images[0]
            restore = req.face_restore(out)
            if restore is not None:
                out = (await be.op("face_restore", restore)).image
        result = as_result(out, req.model_id, time.perf_counter() - t0)
        runner = request.app.state.jobs
        await runner.start()  # restart recovery, if the lifespan did not run it
        job_id = await _new_id(runner)
        result = await anyio.to_thread.run_sync(store_result, be.storage, result, job_id,
                                                req.base64)
        field, value = call.extra["image_ref"]
        job = Job(id=job_id, dialect=DIALECT_NAME, keep_bytes=req.base64,
                  owner=call.extra["owner"], webhook=req.webhook,
                  track_id=None if req.track_id is None else str(req.track_id),
                  request={"version": version, "meta": req.meta(field, value, job_id),
                           "fetch_result": _fetch_url(request, version, job_id)})
        return runner.record(job, result)


async def _fetch(request: Request, job_id: str | None) -> dict:
    data = await _authorised(request)
    if job_id is None:
        body = parse(FetchRequest, data)
        job_id = body.request_id if body.request_id is not None else data.get("id")
    if isinstance(job_id, float) and job_id.is_integer():
        job_id = int(job_id)
    if job_id in (None, "") or isinstance(job_id, (bool, dict, list)):
        raise ValidationFailed("request_id", fields=[FieldError(
            "request_id", "The request id field is required.")])
    job = await request.app.state.jobs.aget(str(job_id).strip())
    if job is None or job.dialect != DIALECT_NAME or job.owner != owner(request):
        raise JobNotFound("Request not found")  # another key's job is as unknown as none
    return job_body(job)


async def fetch_by_path(request: Request, job_id: str):
    return await _fetch(request, job_id)


async def fetch_by_body(request: Request):
    return await _fetch(request, None)


async def system_load(request: Request):
    """The real queue: background jobs generating plus every dialect's admitted generations."""
    await _authorised(request)
    runner = request.app.state.jobs
    queue = runner.queue() + request.app.state.admission.active
    eta = round(runner.avg_seconds * queue, 2)
    return {"queue_num": queue, "queue_time": eta, "status": "ok"}


async def model_list(request: Request):
    """The models this server has (the registry), in upstream's model_list item shape."""
    await _authorised(request)
    models = await anyio.to_thread.run_sync(backend(request).registry.models)
    return [{"model_id": m.name, "model_name": m.name, "status": "model_ready",
             "model_category": "stable_diffusion", "is_nsfw": "no", "featured": "no",
             "description": m.title, "screenshots": "", "api_calls": 0} for m in models]


async def unknown(request: Request, rest: str):
    """Any other /api/* path: upstream's error body, not FastAPI's {"detail"}."""
    raise NotFound(f"Not found: {request.method} {request.url.path}")


# -- routes, one block (all POST, as upstream) ---------------------------------------------------
def _generation(path: str, model: type[Text2ImgRequest], version: str,
                needs_model: bool = True) -> Route:
    name = getattr(model, "route_name", model.mode.value)
    return Route(path, model, f"{version}_{name}",
                 {"version": version, "needs_model": needs_model})


GENERATION = (
    _generation("/api/v3/text2img", Text2ImgRequest, "v3", needs_model=False),
    _generation("/api/v3/img2img", Img2ImgRequest, "v3", needs_model=False),
    _generation("/api/v3/inpaint", InpaintRequest, "v3", needs_model=False),
    # the old v3 dreambooth aliases: v4's bodies (model_id required) under v3 paths
    _generation("/api/v3/dreambooth", Text2ImgRequest, "v4"),
    _generation("/api/v3/dreambooth/img2img", Img2ImgRequest, "v4"),
    _generation("/api/v3/dreambooth/inpaint", InpaintRequest, "v4"),
    _generation("/api/v4/dreambooth", Text2ImgRequest, "v4"),
    _generation("/api/v4/dreambooth/img2img", Img2ImgRequest, "v4"),
    _generation("/api/v4/dreambooth/inpaint", InpaintRequest, "v4"),
    # v5 ControlNet (docs.modelslab.com/image-generation/controlnet: main and multi, one body)
    _generation("/api/v5/controlnet", ControlNetRequest, "v5"),
    # v6, what today's official clients call (docs.modelslab.com: /api/v6/images/...)
    _generation("/api/v6/images/text2img", Text2ImgRequest, "v6"),
    _generation("/api/v6/images/img2img", Img2ImgRequest, "v6"),
    _generation("/api/v6/images/inpaint", InpaintRequest, "v6"),
    # ControlNet under v6 images: where the official SDK (modelslab_py Community.controlnet) posts
    _generation("/api/v6/images/controlnet", ControlNetRequest, "v6"),
    # v6 realtime (docs.modelslab.com/image-generation/realtime-stable-diffusion; the SDK's
    # Realtime API): no model_id, the server's default model, as v3
    _generation("/api/v6/realtime/text2img", Text2ImgRequest, "v6_realtime", needs_model=False),
    _generation("/api/v6/realtime/img2img", Img2ImgRequest, "v6_realtime", needs_model=False),
    _generation("/api/v6/realtime/inpaint", InpaintRequest, "v6_realtime", needs_model=False),
)
ROUTES = [
    ("/api/v3/fetch", fetch_by_body),
    ("/api/v3/fetch/{job_id}", fetch_by_path),
    ("/api/v3/system_load", system_load),
    ("/api/v3/dreambooth/fetch", fetch_by_body),
    ("/api/v3/dreambooth/fetch/{job_id}", fetch_by_path),
    ("/api/v4/dreambooth/fetch", fetch_by_body),  # {"key", "request_id"}
    ("/api/v4/dreambooth/fetch/{job_id}", fetch_by_path),  # what v4's fetch_result points at
    ("/api/v4/dreambooth/model_list", model_list),
    ("/api/v4/dreambooth/system_load", system_load),
    ("/api/v5/fetch", fetch_by_body),
    ("/api/v5/fetch/{job_id}", fetch_by_path),
    ("/api/v6/images/fetch", fetch_by_body),
    ("/api/v6/images/fetch/{job_id}", fetch_by_path),
    ("/api/v6/fetch", fetch_by_body),
    ("/api/v6/fetch/{job_id}", fetch_by_path),
    ("/api/v6/images/model_list", model_list),
    ("/api/v6/dreambooth/model_list", model_list),
    ("/api/v6/images/system_load", system_load),
    ("/api/v6/realtime/fetch", fetch_by_body),
    ("/api/v6/realtime/fetch/{job_id}", fetch_by_path),
    ("/api/v6/image_editing/fetch", fetch_by_body),
    ("/api/v6/image_editing/fetch/{job_id}", fetch_by_path),  # super resolution's fetch_result
]
DIALECT = ModelsLab()
DIALECT.routes = GENERATION
SUPER_RESOLUTION = SuperResolution()
SUPER_RESOLUTION.routes = (
    Route("/api/v3/super_resolution", SuperResolutionRequest, "v3_super_resolution",
          {"version": "v3"}),
    Route("/api/v6/image_editing/super_resolution", SuperResolutionRequest,
          "v6_super_resolution", {"version": "v6_editing"}),
)
router = DIALECT.router()
for _route in SUPER_RESOLUTION.routes:  # the same generic endpoint, on ModelsLab's router
    router.add_api_route(_route.path, endpoint(SUPER_RESOLUTION, _route), methods=["POST"],
                         name=_route.name, **body(_route.model))
for _path, _endpoint in ROUTES:
    router.add_api_route(_path, _endpoint, methods=["POST"])
# Every other /api/* path and method answers in upstream's error body. A router of its own, which
# the app includes after every other route, so it never shadows one added later.
fallback = APIRouter(route_class=dialect_route(render_error))
fallback.add_api_route("/api/{rest:path}", unknown, include_in_schema=False,
                       methods=["GET", "POST", "PUT", "PATCH", "DELETE"])

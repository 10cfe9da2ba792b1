"""A1111 requests -> GenerationRequest, results -> A1111 responses, errors -> A1111's envelope.

Everything here is pure (no I/O, no torch): the router feeds it decoded bytes and a result.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import time
import uuid

from fastapi.responses import JSONResponse
from pydantic import ValidationError

from shared import __version__
from shared.dialects.a1111 import upstream
from shared.dialects.a1111.scripts import is_known as is_known_script
from shared.dialects.a1111.protocol import (SDGATE_FIELDS, Img2ImgRequest, ProcessingRequest,
                                            Txt2ImgRequest)
from shared.engine import samplers
from shared.engine.prompts import extract_networks
from shared.errors import (FieldError, InvalidRequest, SdgateError, Unsupported, ValidationFailed,
                           from_pydantic, status_of)
from shared.generation import (SEED_BOUND, GenerationRequest, GenerationResult, HiresFix,
                               IPAdapterRef, Mode, OutputFormat, Refiner)
from shared.infotext import parse_infotext

log = logging.getLogger(__name__)

VERSION = f"sdgate-{__version__}"
DEFAULT_HR_STRENGTH = 0.7  # A1111's UI default when a hires request leaves it null
SAMPLES_FORMATS = {"png": OutputFormat.png, "jpg": OutputFormat.jpeg, "jpeg": OutputFormat.jpeg,
                   "webp": OutputFormat.webp}
# Options sdgate honours, with their defaults (GET /options shows them, POST /options sets them).
OPTION_DEFAULTS = {"sd_model_checkpoint": None, "CLIP_stop_at_last_layers": 1,
                   "samples_format": "png", "sd_vae": "Automatic", "eta_noise_seed_delta": 0}
# Upstream options (modules/shared_options.py defaults) that change no pixel here: shown by GET
# /options and stored by POST /options for clients that read them, without effect (saving,
# UI and infotext display settings; sdgate returns images and never writes them to disk).
DISPLAY_OPTIONS = {"samples_save": True, "grid_save": True, "save_images_add_number": True,
                   "outdir_samples": "", "outdir_txt2img_samples": "outputs/txt2img-images",
                   "outdir_img2img_samples": "outputs/img2img-images", "send_seed": True,
                   "send_size": True,
                   "export_for_4chan": True, "live_previews_enable": True,
                   "show_progress_every_n_steps": 10, "sd_checkpoint_cache": 0,
                   "sd_vae_checkpoint_cache": 0, "quicksettings_list": ["sd_model_checkpoint"]}
OPTION_DEFAULTS.update(DISPLAY_OPTIONS)
# Token merging (upstream's "optimizations" section, applied through tomesd; here
# shared.engine.tome): txt2img's ratio, img2img's (0: txt2img's), the hires pass's (0: txt2img's).
TOKEN_MERGING = ("token_merging_ratio", "token_merging_ratio_img2img", "token_merging_ratio_hr")
OPTION_DEFAULTS.update({k: upstream.OPTIONS[k] for k in TOKEN_MERGING})
# Settings that change the picture in ways sdgate cannot honour: only their neutral values pass.
NEUTRAL_OPTIONS = {"sd_vae": ("Automatic", "None", None), "eta_noise_seed_delta": (0, None),
                   **{k: (upstream.OPTIONS[k], None) for k in upstream.IMAGE_OPTIONS_AT_DEFAULT}}


# -- errors --------------------------------------------------------------------------------------
def render_error(err: SdgateError) -> JSONResponse:
    """Upstream's `{error, detail, body, errors}` with the status from the one table."""
    status = status_of(err)
    if isinstance(err, ValidationFailed) and err.fields:
        detail = [{"loc": ["body", *f.field.split(".")], "msg": f.message, "type": "value_error"}
                  for f in err.fields]
        body = {"error": "RequestValidationError", "detail": detail, "body": "",
                "errors": err.message}
    else:
        body = {"error": "HTTPException" if status < 500 else type(err).__name__,
                "detail": err.message, "body": "", "errors": f"{status}: {err.message}"}
    return JSONResponse(body, status_code=status)


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", param=field, fields=[FieldError(field, message)])


# -- infotext field (v1.8+): fills fields the request did not set ----------------------------------
_INFOTEXT_FIELDS = {"Prompt": "prompt", "Negative prompt": "negative_prompt", "Steps": "steps",
                    "Sampler": "sampler_name", "Schedule type": "scheduler",
                    "CFG scale": "cfg_scale", "Seed": "seed", "Variation seed": "subseed",
                    "Variation seed strength": "subseed_strength",
                    "Denoising strength": "denoising_strength"}


def _int(field: str, value) -> int:
    """int() of a user's value, or a 422 naming the field (never a 500)."""
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        raise _invalid(field, f"{value!r} is not an integer") from None


def apply_infotext(data: dict) -> dict:
    """Upstream's `infotext` request field: its parameters fill the fields not given."""
    text = data.get("infotext")
    if not text:
        return data
    params = parse_infotext(text)
    out = dict(data)
    for label, field in _INFOTEXT_FIELDS.items():
        if params.get(label) not in (None, "") and field not in data:
            out[field] = params[label]
    if "Size" in params and "width" not in data and "height" not in data:
        size = params["Size"].split("x")
        if len(size) != 2:
            raise _invalid("infotext", f"Size {params['Size']!r} is not WIDTHxHEIGHT")
        out["width"], out["height"] = (_int("infotext", v) for v in size)
    settings = dict(out.get("override_settings") or {})
    if "Clip skip" in params:
        settings.setdefault("CLIP_stop_at_last_layers", _int("infotext", params["Clip skip"]))
    # upstream's infotext_to_setting_name_mapping
    for label, key in (("Token merging ratio", "token_merging_ratio"),
                       ("Token merging ratio hr", "token_merging_ratio_hr")):
        if params.get(label) not in (None, ""):
            settings.setdefault(key, token_merging(key, params[label], "infotext."))
    if settings:
        out["override_settings"] = settings
    return out


# -- requests ------------------------------------------------------------------------------------
def schedule_name(value: str | None) -> str | None:
    """A1111 schedule type by name ("sgm_uniform"), label ("SGM Uniform") or alias; unknown
    names are a 404 naming the choices (samplers.schedule_key)."""
    return samplers.schedule_key(value)


def _refuse_unsupported(req: ProcessingRequest) -> None:
    """Features that need weights or machinery sdgate does not have: a clear error, not silence."""
    if req.styles:
        raise Unsupported(f"prompt styles {req.styles} are not configured on this server; "
                          "put their text in the prompt", param="styles")
    if req.script_name:
        raise ValidationFailed(f"Script '{req.script_name}' not found", param="script_name",
                               fields=[FieldError("script_name", "not found")])
    for name in req.alwayson_scripts or {}:
        if is_known_script(name):  # shared.dialects.a1111.scripts
            continue
        raise ValidationFailed(f"always on script {name} not found", param="alwayson_scripts",
                               fields=[FieldError("alwayson_scripts", f"{name} not found")])
    if req.firstpass_image:
        raise Unsupported("firstpass_image is not supported", param="firstpass_image")
    if req.s_churn or (req.s_noise not in (None, 1, 1.0)) or req.s_min_uncond:
        raise Unsupported("s_churn / s_noise / s_min_uncond (k-diffusion sampler knobs) are not "
                          "supported; leave them unset, 0 or 1", param="s_churn")


def check_option(key: str, value, where: str = "") -> None:
    """A value sdgate cannot use for an option it honours: a 4xx naming `where` + key."""
    if key in TOKEN_MERGING and value is not None:
        token_merging(key, value, where)


def token_merging(key: str, value, where: str = "") -> float:
    """A token merging ratio option's value: a number from 0 up to (not including) 1."""
    try:
        ratio = 0.0 if value is None else float(value)
    except (TypeError, ValueError):
        ratio = -1.0
    if isinstance(value, bool) or not 0 <= ratio < 1:
        raise _invalid(where + key, f"{value!r} is not a token merging ratio (0 <= ratio < 1; "
                       "0: off)")
    return ratio


def _token_merging(req: ProcessingRequest, settings: dict) -> tuple[float, float]:
    """(first pass, hires pass) ratios as upstream's get_token_merging_ratio picks them: img2img
    takes token_merging_ratio when override_settings sets it, else its own option, else
    txt2img's; the hires pass its own, else the first pass's (0 falls through, as upstream)."""
    def ratio(key):
        return token_merging(key, settings.get(key), "override_settings.")

    base = ratio("token_merging_ratio")
    if isinstance(req, Txt2ImgRequest):
        return base, ratio("token_merging_ratio_hr") or base
    overridden = "token_merging_ratio" in (req.override_settings or {})
    return (overridden and base) or ratio("token_merging_ratio_img2img") or base, 0.0


def _settings(req: ProcessingRequest, options: dict) -> dict:
    """Effective settings: the server's options overlaid with this request's override_settings."""
    overrides = req.override_settings or {}
    for key, value in overrides.items():
        check_option(key, value, "override_settings.")
    for key, allowed in NEUTRAL_OPTIONS.items():
        if key in overrides and overrides[key] not in allowed:
            raise Unsupported(f"override_settings.{key}={overrides[key]!r} is not supported",
                              param=f"override_settings.{key}")
    ignored = sorted(set(overrides) - set(OPTION_DEFAULTS))
    if ignored:
        log.info("a1111: override_settings without effect here: %s", ignored)
    return {**OPTION_DEFAULTS, **options, **overrides}


def hires_size(req: Txt2ImgRequest, w: int, h: int) -> tuple[int, int]:
    """Upstream's hires target: scaled, or hr_resize_x/y (one of them keeps the aspect)."""
    if req.firstphase_width or req.firstphase_height:
        return req.width, req.height
    x, y = req.hr_resize_x, req.hr_resize_y
    if not x and not y:
        return int(w * req.hr_scale), int(h * req.hr_scale)
    if not y:
        return x, x * h // w
    if not x:
        return y * w // h, y
    return x, y


def _hires(req: Txt2ImgRequest, w: int, h: int, model: str | None) -> HiresFix | None:
    if not req.enable_hr:
        return None
    if req.hr_checkpoint_name and req.hr_checkpoint_name not in ("Use same checkpoint", model):
        raise Unsupported("hr_checkpoint_name (another model for the hires pass) is not "
                          "supported", param="hr_checkpoint_name")
    hw, hh = hires_size(req, w, h)
    return HiresFix(width=hw, height=hh, steps=req.hr_second_pass_steps or None,
                    strength=DEFAULT_HR_STRENGTH if req.denoising_strength is None
                    else req.denoising_strength,  # 0 is honoured: no second denoising
                    upscaler=req.hr_upscaler or "Latent", sampler=req.hr_sampler_name,
                    scheduler=schedule_name(req.hr_scheduler), prompt=req.hr_prompt or None,
                    negative_prompt=req.hr_negative_prompt or None)


def _refiner(req: ProcessingRequest) -> Refiner | None:
    """refiner_checkpoint + refiner_switch_at (upstream: no checkpoint or "None", or a switch
    point at 1 or later, never switches)."""
    name = (req.refiner_checkpoint or "").strip()
    if name.lower() in ("", "none"):
        return None
    at = req.refiner_switch_at
    if at is None:
        raise _invalid("refiner_switch_at", "required with refiner_checkpoint: the fraction of "
                       "the steps the base model runs (0 < x < 1)")
    if at >= 1:
        return None
    if at <= 0:
        raise _invalid("refiner_switch_at", "must be above 0 (the base model runs first)")
    return Refiner(model=name, switch_at=at)


def _split_units(units: list, init: bytes | None) -> dict:
    """sd-webui-controlnet units: ControlNets, and IP-Adapters (no image: the init image)."""
    ips = [u for u in units if isinstance(u, IPAdapterRef)]
    if any(not u.images for u in ips) and init is None:
        raise InvalidRequest("alwayson_scripts.controlnet: an IP-Adapter unit has no image "
                             "(txt2img needs one)", param="alwayson_scripts.controlnet")
    return {"controlnets": [u for u in units if not isinstance(u, IPAdapterRef)],
            "ip_adapters": [u if u.images else u.model_copy(update={"images": [init]})
                            for u in ips]}


def to_internal(req: ProcessingRequest, options: dict, *, init: bytes | None = None,
                mask: bytes | None = None, task_id: str | None = None,
                controlnets: list | None = None) -> GenerationRequest:
    """The internal request for an A1111 txt2img or img2img request."""
    _refuse_unsupported(req)
    settings = _settings(req, options)
    model = (req.override_settings or {}).get("sd_model_checkpoint") or req.model \
        or settings.get("sd_model_checkpoint")
    fmt = str(settings.get("samples_format") or "png").lower()
    if fmt not in SAMPLES_FORMATS:
        raise _invalid("override_settings.samples_format", f"choose one of {list(SAMPLES_FORMATS)}")
    prompt = req.prompt
    if req.disable_extra_networks:  # upstream drops the tags without applying them
        prompt = extract_networks(prompt)[0]
    w, h = req.width, req.height
    fields = dict(
        model=model, prompt=prompt, negative_prompt=req.negative_prompt, width=w, height=h,
        steps=req.steps, guidance=req.cfg_scale,
        sampler=req.sampler_name or getattr(req, "sampler_index", None) or "Euler",
        scheduler=schedule_name(req.scheduler), seed=req.seed,
        subseed=req.subseed if req.subseed != -1 else secrets.randbelow(SEED_BOUND),
        subseed_strength=req.subseed_strength, num_images=req.batch_size * req.n_iter,
        batch_size=req.batch_size, clip_skip=_int("override_settings.CLIP_stop_at_last_layers",
                                                  settings.get("CLIP_stop_at_last_layers") or 1),
        output_format=SAMPLES_FORMATS[fmt], tiling=bool(req.tiling), eta=req.eta,
        task_id=task_id or req.force_task_id or uuid.uuid4().hex,
        **_split_units(controlnets or [], init),
        defaulted=_defaulted(req), refiner=_refiner(req))
    if req.seed_resize_from_w > 0 and req.seed_resize_from_h > 0:
        fields["seed_resize_from"] = (req.seed_resize_from_w, req.seed_resize_from_h)
    first, hr_ratio = _token_merging(req, settings)
    fields["token_merging_ratio"] = first  # upstream's tomesd call: use_rand=False
    if isinstance(req, Txt2ImgRequest):
        if req.enable_hr and (req.firstphase_width or req.firstphase_height):
            w, h = req.firstphase_width or w, req.firstphase_height or h  # old hires API
            fields.update(width=w, height=h)
        hires = _hires(req, w, h, model)
        if hires is not None and hr_ratio != first:
            hires = hires.model_copy(update={"token_merging_ratio": hr_ratio})
        fields["hires"] = hires
    else:
        if req.subseed_strength > 0:
            raise Unsupported("subseed variation is only supported for txt2img",
                              param="subseed_strength")
        if req.initial_noise_multiplier not in (None, 1, 1.0):
            raise Unsupported("initial_noise_multiplier other than 1 is not supported",
                              param="initial_noise_multiplier")
        fields.update(mode=Mode.inpaint if mask else Mode.img2img, init_image=init, mask=mask,
                      strength=req.denoising_strength, resize_mode=req.resize_mode,
                      mask_blur=req.blur(), mask_invert=bool(req.inpainting_mask_invert),
                      inpainting_fill=req.inpainting_fill,
                      inpaint_full_res=req.inpaint_full_res,
                      inpaint_full_res_padding=req.inpaint_full_res_padding)
    try:
        return GenerationRequest(**fields)
    except ValidationError as e:
        raise from_pydantic(e) from e


def _defaulted(req: ProcessingRequest) -> list[str]:
    """The fields the client left unset: a distilled / flow model's own values replace
    upstream's defaults there (shared.engine.families.model_defaults)."""
    sent = req.model_fields_set
    out = [] if "steps" in sent else ["steps"]
    out += [] if "cfg_scale" in sent else ["guidance"]
    if not req.sampler_name and "sampler_index" not in sent:
        out.append("sampler")
    return out


# -- responses -----------------------------------------------------------------------------------
def parameters(req: ProcessingRequest) -> dict:
    """The request echoed with defaults filled, as upstream's `parameters` (init images and mask
    only with include_init_images, which upstream's vars(img2imgreq) echoes too)."""
    out = req.model_dump(include=set(type(req).model_fields) - SDGATE_FIELDS)
    if isinstance(req, Img2ImgRequest):
        if not req.include_init_images:
            out["init_images"], out["mask"] = None, None
    return out


def _extra_generation_params(infotext: str) -> dict:
    basic = {"Prompt", "Negative prompt", "Steps", "Sampler", "CFG scale", "Seed", "Size",
             "Model hash", "Model", "Version", "Clip skip"}
    return {k: v for k, v in parse_infotext(infotext).items() if k not in basic} \
        if infotext else {}


def ran_with(result: GenerationResult) -> dict:
    """Upstream's names of the values the model's own defaults set (steps, cfg, sampler)."""
    values = {"steps": ("steps", result.steps), "guidance": ("cfg_scale", result.guidance),
              "sampler": ("sampler_name", result.sampler)}
    return dict(values[k] for k in result.model_defaults if values[k][1] is not None)


def info(req: ProcessingRequest, internal: GenerationRequest, result: GenerationResult,
         job_timestamp: str | None = None) -> str:
    """Upstream's `info`: a JSON string describing the whole job (job_timestamp: the task's,
    as /progress reports it)."""
    imgs = result.images
    n = len(imgs)
    first = imgs[0].infotext if imgs else ""
    ran = ran_with(result)
    obj = {
        "prompt": req.prompt, "all_prompts": [req.prompt] * n,
        "negative_prompt": req.negative_prompt, "all_negative_prompts": [req.negative_prompt] * n,
        "seed": result.seed, "all_seeds": [i.seed for i in imgs],
        "subseed": result.subseed, "all_subseeds": [i.subseed for i in imgs],
        "subseed_strength": req.subseed_strength, "width": internal.width,
        "height": internal.height, "sampler_name": ran.get("sampler_name", internal.sampler),
        "cfg_scale": ran.get("cfg_scale", req.cfg_scale), "steps": ran.get("steps", req.steps),
        "batch_size": req.batch_size, "restore_faces": bool(req.restore_faces),
        "face_restoration_model": None, "sd_model_name": result.model,
        "sd_model_hash": result.model_hash, "sd_vae_name": None, "sd_vae_hash": None,
        "seed_resize_from_w": req.seed_resize_from_w, "seed_resize_from_h": req.seed_resize_from_h,
        "denoising_strength": req.denoising_strength,
        "extra_generation_params": _extra_generation_params(first),
        "index_of_first_image": 0, "infotexts": [i.infotext for i in imgs],
        "styles": req.styles or [], "job_timestamp": job_timestamp or time.strftime("%Y%m%d%H%M%S"),
        "clip_skip": internal.clip_skip,
        "is_using_inpainting_conditioning": False, "version": VERSION,
    }
    return json.dumps(obj)


def render(req: ProcessingRequest, internal: GenerationRequest, result: GenerationResult,
           urls: bool, job_timestamp: str | None = None) -> dict:
    """`{images, parameters, info}`: base64 PNGs (or storage URLs when asked for)."""
    if not req.send_images:
        images = []
    elif urls:
        images = [i.url for i in result.images]
    else:
        images = [base64.b64encode(i.data).decode("ascii") for i in result.images]
    return {"images": images, "parameters": {**parameters(req), **ran_with(result)},
            "info": info(req, internal, result, job_timestamp)}


def progress(task, idle=None) -> dict:
    """GET /progress for one task (None: nothing running), in upstream's shape; idle, the last
    task's job_timestamp stays as upstream keeps it."""
    if task is None:
        state = {"skipped": False, "interrupted": False, "stopping_generation": False, "job": "",
                 "job_count": 0, "job_timestamp": idle.timestamp if idle else "0", "job_no": 0,
                 "sampling_step": 0, "sampling_steps": 0}
        return {"progress": 0, "eta_relative": 0, "state": state, "current_image": None,
                "textinfo": None}
    state = {"skipped": task.skipped, "interrupted": task.interrupted,
             "stopping_generation": task.interrupted, "job": task.job,
             "job_count": task.job_count, "job_timestamp": task.timestamp,
             "job_no": task.job_no, "sampling_step": task.sampling_step,
             "sampling_steps": task.sampling_steps}
    text = "Waiting..." if task.started is None else None
    return {"progress": task.fraction(), "eta_relative": task.eta(), "state": state,
            "current_image": None, "textinfo": text, "id_task": task.id}


def png_info(image) -> dict:
    """POST /png-info: the `parameters` text, other text chunks, and the parsed parameters."""
    text = image.info.get("parameters") or ""
    items = {k: v for k, v in image.info.items() if isinstance(v, str) and k != "parameters"}
    params = parse_infotext(text) if text else {}
    size = params.get("Size", "")
    if "x" in size:
        params["Size-1"], params["Size-2"] = size.split("x", 1)
    if text:
        params.setdefault("Clip skip", "1")
    return {"info": text, "items": items, "parameters": params}


def checked_init_images(req: Img2ImgRequest) -> str:
    """The one init image (sdgate takes one per request)."""
    if not req.init_images:
        raise _invalid("init_images", "at least one init image is required")
    if len(req.init_images) > 1:
        raise InvalidRequest("sdgate takes one init image per request; send one request per "
                             "image", param="init_images")
    return req.init_images[0]

"""sd-webui-controlnet's API: `alwayson_scripts.controlnet.args` units, and its routes mounted at
the root (/controlnet/model_list, module_list, detect, version, settings) like the extension's.

Field names and enum spellings are those of its internal_controlnet/external_code.py, old and
new. Fields that would change the picture but that sdgate cannot honour are refused, not ignored.
"""

from __future__ import annotations

import base64

from fastapi import APIRouter, Depends, Request
from pydantic import ValidationError

from shared.dialects.a1111 import serving
from shared.dialects.a1111.router import authorised, registry
from shared.dialects.base import backend, dialect_route, read_fields
from shared.engine import preprocessors
from shared.engine.controlnet_types import DetectRequest, ip_adapters, models
from shared.errors import InvalidRequest, Unsupported, from_pydantic
from shared.generation import ControlMode, ControlNetUnit, IPAdapterRef
from shared.images import b64decode_strict, check_image

SCRIPT = "controlnet"
API_VERSION = 2  # external_code.get_api_version()
MAX_UNITS = 4
RESIZE_MODES = {"just resize": 0, "crop and resize": 1, "resize and fill": 2,
                "inner fit (scale to fit)": 1, "outer fit (shrink to fit)": 2,
                "scale to fit (inner fit)": 1, "envelope (outer fit)": 2}
CONTROL_MODES = {"balanced": ControlMode.balanced,
                 "my prompt is more important": ControlMode.prompt,
                 "controlnet is more important": ControlMode.controlnet}
_CONTROL_BY_INT = [ControlMode.balanced, ControlMode.prompt, ControlMode.controlnet]
# Accepted without effect on the picture (memory, UI and saving switches).
NO_EFFECT = {"enabled", "low_vram", "lowvram", "save_detected_map", "is_ui", "input_mode",
             "batch_images", "output_dir", "loopback", "hr_option", "use_preview_as_input",
             "generated_image", "batch_image_dir", "batch_mask_dir", "batch_input_gallery",
             "batch_mask_gallery", "image_fidelity", "inpaint_crop_input_image"}
KNOWN = {"module", "model", "weight", "image", "input_image", "mask", "mask_image",
         "resize_mode", "processor_res", "threshold_a", "threshold_b", "guidance_start",
         "guidance_end", "guidance", "control_mode", "guessmode", "pixel_perfect",
         "effective_region_mask", "ipadapter_input", "union_control_type"} | NO_EFFECT


# sd-webui-controlnet's IP-Adapter preprocessors (its CLIP vision encoders): the unit is an image
# prompt through shared.engine.ipadapter, the encoder the one beside the adapter file.
IP_MODULES = ("ip-adapter_clip_sd15", "ip-adapter_clip_h", "ip-adapter_clip_sdxl",
              "ip-adapter_clip_sdxl_plus_vith", "ip-adapter_clip_g", "ip-adapter-auto")
IP_NEEDS_FACES = ("ip-adapter_face_id", "ip-adapter_face_id_plus", "ip-adapter_pulid",
                  "ip-adapter_instantid")


def is_script(name: str) -> bool:
    return name.strip().lower() == SCRIPT


def _enum(value, names: dict, by_int: list, field: str):
    if isinstance(value, bool):
        raise InvalidRequest(f"{field}: not a mode", param=field)
    if isinstance(value, int | float) and int(value) == value and 0 <= value < len(by_int):
        return by_int[int(value)]
    key = str(value).strip().lower()
    for name, mode in names.items():
        if key == name or key == name.replace(" ", "_"):
            return mode
    raise InvalidRequest(f"{field}={value!r}: choose one of {list(names)} or 0-{len(by_int) - 1}",
                         param=field)


def _image(value, field: str, max_px: int) -> tuple[bytes | None, bytes | None]:
    """(image, mask) from a base64 string or an {image, mask} dict."""
    if value in (None, "", {}):
        return None, None
    if isinstance(value, dict):
        img, _ = _image(value.get("image"), f"{field}.image", max_px)
        mask, _ = _image(value.get("mask"), f"{field}.mask", max_px)
        return img, mask
    if not isinstance(value, str):
        raise InvalidRequest(f"{field}: expected a base64 image or {{image, mask}}", param=field)
    if value.startswith(("http://", "https://")):
        raise Unsupported(f"{field}: image URLs are not fetched; send base64", param=field)
    return check_image(b64decode_strict(value, field), max_px, field), None


def _unit(i: int, raw, max_px: int) -> ControlNetUnit | IPAdapterRef | None:
    """One unit, or None for a disabled / empty one (upstream skips them too)."""
    field = f"alwayson_scripts.controlnet.args.{i}"
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{field}: each ControlNet unit is an object (positional unit "
                             "lists are not supported)", param=field)
    unknown = sorted(set(raw) - KNOWN)
    if unknown:
        raise InvalidRequest(f"{field}: unknown ControlNet unit fields {unknown}", param=field)
    if raw.get("enabled", True) is False:
        return None
    model = str(raw.get("model") or "None")
    module = str(raw.get("module") or "none")
    if module.strip().lower().startswith("ip-adapter"):
        if model.lower() == "none":
            raise InvalidRequest(f"{field}: module {module!r} without a model; choose an "
                                 "IP-Adapter from /controlnet/model_list", param=f"{field}.model")
        return _ip_adapter(field, raw, model, module, max_px)
    if model.lower() == "none":
        if preprocessors.canonical(module) == "none":
            return None  # an empty unit slot
        raise InvalidRequest(f"{field}: module {module!r} without a model; choose a model "
                             "from /controlnet/model_list", param=f"{field}.model")
    if raw.get("ipadapter_input") not in (None, "", []):
        raise Unsupported(f"{field}.ipadapter_input (precomputed embeddings) is not supported; "
                          "send the image", param=f"{field}.ipadapter_input")
    if raw.get("union_control_type") not in (None, "", "Unknown"):
        raise Unsupported(f"{field}.union_control_type is not supported", param=field)
    image, mask = _image(raw.get("image", raw.get("input_image")), f"{field}.image", max_px)
    mask_raw = raw.get("mask_image", raw.get("mask"))
    if mask_raw:
        mask = _image(mask_raw, f"{field}.mask", max_px)[0]
    mode = raw.get("control_mode")
    if mode is None:
        mode = ControlMode.controlnet if raw.get("guessmode") else ControlMode.balanced
    else:
        mode = _enum(mode, CONTROL_MODES, _CONTROL_BY_INT, f"{field}.control_mode")
    resize_mode = _enum(raw.get("resize_mode", 1), RESIZE_MODES, [0, 1, 2], f"{field}.resize_mode")
    res = raw.get("processor_res", -1)
    fields = dict(model=model, module=module, image=image, mask=mask,
                  region_mask=_region(raw, field, max_px),
                  weight=raw.get("weight", 1.0), resize_mode=resize_mode, control_mode=mode,
                  processor_res=512 if res is None or res < 0 else res,
                  threshold_a=raw.get("threshold_a"), threshold_b=raw.get("threshold_b"),
                  guidance_start=raw.get("guidance_start", 0.0),
                  guidance_end=raw.get("guidance_end", raw.get("guidance", 1.0)),
                  pixel_perfect=bool(raw.get("pixel_perfect", False)))
    try:
        return ControlNetUnit(**fields)
    except ValidationError as e:
        raise from_pydantic(e, field + ".") from e


def _region(raw: dict, field: str, max_px: int) -> bytes | None:
    """effective_region_mask: where the unit acts (white), as upstream's first channel."""
    return _image(raw.get("effective_region_mask"), f"{field}.effective_region_mask", max_px)[0]


def _ip_adapter(field: str, raw: dict, model: str, module: str, max_px: int) -> IPAdapterRef:
    """An ip-adapter_* unit: its image (None: the init image, filled in by serving) and weight."""
    name = module.strip().lower()
    if name.startswith(IP_NEEDS_FACES):
        raise Unsupported(f"{field}.module {module!r} needs insightface face embeddings, which "
                          f"this server does not have; IP-Adapter modules: {list(IP_MODULES)}",
                          param=f"{field}.module")
    if name not in IP_MODULES:
        raise InvalidRequest(f"{field}.module {module!r}: choose one of {list(IP_MODULES)}",
                             param=f"{field}.module")
    start, end = raw.get("guidance_start", 0.0), raw.get("guidance_end", raw.get("guidance", 1.0))
    if (start, end) != (0, 1) and (start, end) != (0.0, 1.0):
        raise Unsupported(f"{field}: IP-Adapter units act on every step (guidance_start 0, "
                          "guidance_end 1)", param=f"{field}.guidance_start")
    mode = raw.get("control_mode")
    if mode is not None and _enum(mode, CONTROL_MODES, _CONTROL_BY_INT,
                                  f"{field}.control_mode") is not ControlMode.balanced:
        raise Unsupported(f"{field}: IP-Adapter units take control_mode Balanced only",
                          param=f"{field}.control_mode")
    image, mask = _image(raw.get("image", raw.get("input_image")), f"{field}.image", max_px)
    if mask or raw.get("mask_image", raw.get("mask")):
        raise Unsupported(f"{field}: masks on IP-Adapter units are not supported",
                          param=f"{field}.mask")
    weight = raw.get("weight", 1.0)
    try:
        ref = IPAdapterRef(model=model, images=[image or b"pending"], scale=weight,
                           region_mask=_region(raw, field, max_px))
    except ValidationError as e:
        raise from_pydantic(e, field + ".") from e
    return ref if image else ref.model_copy(update={"images": []})  # serving adds the init image


def units(scripts: dict | None, max_px: int) -> list[ControlNetUnit | IPAdapterRef]:
    """The enabled units of a request's alwayson_scripts (none if it has no controlnet entry)."""
    for name, value in (scripts or {}).items():
        if not is_script(name):
            continue
        args = value.get("args") if isinstance(value, dict) else value
        if not isinstance(args, list):
            raise InvalidRequest("alwayson_scripts.controlnet.args must be a list of units",
                                 param="alwayson_scripts.controlnet.args")
        out = [u for i, raw in enumerate(args) if (u := _unit(i, raw, max_px)) is not None]
        if len(out) > MAX_UNITS:
            raise InvalidRequest(f"at most {MAX_UNITS} ControlNet units", param="alwayson_scripts")
        return out
    return []


# -- routes at the root, as the extension mounts them ---------------------------------------------
router = APIRouter(route_class=dialect_route(serving.render_error),
                   dependencies=[Depends(authorised)], tags=["sd-webui-controlnet"])


@router.get("/controlnet/version")
def version():
    return {"version": API_VERSION}


@router.get("/controlnet/settings")
def settings():
    return {"control_net_unit_count": MAX_UNITS}


@router.get("/controlnet/model_list")
def model_list(request: Request, update: bool = True):
    root = registry(request).root
    return {"model_list": list(models(root)) + list(ip_adapters(root))}


@router.get("/controlnet/module_list")
def module_list(alias_names: bool = False):
    names = list(preprocessors.DEFAULTS) + list(IP_MODULES)
    detail = {name: {"model_free": False, "sliders": []} for name in IP_MODULES}
    for name, (a, b) in preprocessors.DEFAULTS.items():
        sliders = [{"name": "Resolution", "value": 512, "min": 64, "max": 2048}] \
            if name != "none" else []
        for label, value in (("Threshold A", a), ("Threshold B", b)):
            if value is not None:
                sliders.append({"name": label, "value": value})
        detail[name] = {"model_free": False, "sliders": sliders}
    return {"module_list": names, "module_detail": detail}


@router.post("/controlnet/detect")
async def detect(request: Request):
    data = await read_fields(request)
    max_px = request.app.state.settings.max_image_pixels
    images = data.get("controlnet_input_images") or []
    if not isinstance(images, list) or not images:
        raise InvalidRequest("controlnet_input_images: at least one base64 image is required",
                             param="controlnet_input_images")
    if data.get("controlnet_masks"):
        raise Unsupported("controlnet_masks are not supported", param="controlnet_masks")
    module = str(data.get("controlnet_module") or "none")
    preprocessors.canonical(module)  # unknown or weight-needing modules: 4xx before decoding
    decoded = [_image(img, f"controlnet_input_images.{i}", max_px)[0]
               for i, img in enumerate(images)]
    res = data.get("controlnet_processor_res", 512)
    a, b = data.get("controlnet_threshold_a", -1), data.get("controlnet_threshold_b", -1)
    try:
        req = DetectRequest(module=module, images=decoded,
                            processor_res=512 if res is None or res < 0 else res,
                            threshold_a=None if a is None or a < 0 else a,
                            threshold_b=None if b is None or b < 0 else b)
    except ValidationError as e:
        raise from_pydantic(e) from e
    result = await backend(request).op("controlnet_detect", req)
    return {"images": [base64.b64encode(x).decode("ascii") for x in result.images],
            "info": "Success"}

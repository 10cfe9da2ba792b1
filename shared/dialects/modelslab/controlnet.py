"""ModelsLab's ControlNet endpoint (POST /api/v5/controlnet), field for field.

Upstream: docs.modelslab.com/image-generation/controlnet/controlnet-main and controlnet-multi
(the same body): the v4 fields plus controlnet_model (comma-separated for multi-ControlNet),
controlnet_type, auto_hint, guess_mode, init_image, control_image, mask_image, strength,
controlnet_conditioning_scale (one value, or one per model), ip_adapter_id / _scale / _image
(an IP-Adapter image prompt beside the control) and temp.

Which pipeline runs (upstream documents no rule; this is sdgate's, in docs/modelslab.md):
mask_image given -> inpaint init_image; control_image and init_image -> img2img of init_image;
only one image -> text to image with that image as the control (the endpoint's original use).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, ClassVar

from pydantic import Field, ValidationError

from shared.dialects.modelslab.protocol import Blank, Switch, Text2ImgRequest, laravel_errors
from shared.engine import preprocessors
from shared.engine.controlnet_types import models
from shared.errors import FieldError, SdgateError, ValidationFailed
from shared.generation import ControlMode, ControlNetUnit, GenerationRequest, Mode

# ModelsLab's controlnet_type names -> sd-webui-controlnet preprocessor names (others are taken
# as preprocessor names themselves). Those needing annotator weights are refused by name.
TYPES = {"canny": "canny", "depth": "depth", "hed": "softedge_hed", "mlsd": "mlsd",
         "normal": "normal_bae", "openpose": "openpose", "scribble": "scribble_xdog",
         "segmentation": "seg", "inpaint": "inpaint", "softedge": "softedge",
         "lineart": "lineart", "shuffle": "shuffle", "tile": "tile_resample",
         "face_detector": "mediapipe_face", "qrcode": "none", "none": "none"}
MAX_UNITS = 4


def _invalid(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(message, fields=[FieldError(field, message)])


def _list(raw, field: str) -> list[str]:
    return [p.strip() for p in str(raw if raw is not None else "").split(",") if p.strip()]


class ControlNetRequest(Text2ImgRequest):
    """POST /api/v5/controlnet: the text2img fields plus the ControlNet ones."""

    controlnet_model: Annotated[str, Field(min_length=1)]  # "canny" or "canny,depth"
    controlnet_type: Annotated[str | None, Blank] = None  # one for all, or one per model
    auto_hint: Switch = False  # yes: preprocess the image by controlnet_type; no: it is the hint
    guess_mode: Switch = False  # "ControlNet is more important" (diffusers' guess_mode)
    init_image: Annotated[str | None, Blank] = None  # a URL, or base64
    control_image: Annotated[str | None, Blank] = None
    mask_image: Annotated[str | None, Blank] = None
    strength: Annotated[float, Blank, Field(ge=0, le=1)] = 0.7
    controlnet_conditioning_scale: Annotated[str | float | None, Blank] = None  # "0.7" or "1,0.5"
    # ip_adapter_id / _scale / _image and temp: Text2ImgRequest's (v6 has them on every route)

    route_name: ClassVar[str] = "controlnet"

    @property
    def run_mode(self) -> Mode:
        if self.mask_image:
            return Mode.inpaint
        return Mode.img2img if self.init_image and self.control_image else Mode.txt2img

    def image_inputs(self) -> dict[str, tuple[str, str]]:
        """internal name -> (field, URL or base64) of every image to read."""
        if self.mask_image and not self.init_image:
            raise _invalid("init_image", "The init image field is required with mask_image.")
        if not (self.init_image or self.control_image):
            raise _invalid("init_image", "The init image field is required (or control_image).")
        out = super().image_inputs()  # the IP-Adapter image, if any
        if self.run_mode is not Mode.txt2img:
            out["init_image"] = ("init_image", self.init_image)
        if self.mask_image:
            out["mask"] = ("mask_image", self.mask_image)
        control = self.control_image or self.init_image
        out["control_image"] = ("control_image" if self.control_image else "init_image", control)
        return out

    def refusals(self) -> list[FieldError]:
        out = [f for f in super().refusals() if f.field not in ("panorama", "self_attention")]
        for name in ("panorama", "self_attention"):
            if getattr(self, name):
                out.append(FieldError(name, f"{name} cannot be combined with ControlNet."))
        return out

    def units(self, root: Path, control: bytes) -> list[ControlNetUnit]:
        """One unit per controlnet_model, with its type, scale and the control image."""
        names = _list(self.controlnet_model, "controlnet_model")
        found = models(root)
        for name in names:
            if name not in found and Path(name).stem not in found:
                raise _invalid("controlnet_model", f"The selected controlnet model {name!r} is "
                               f"invalid; choose from {list(found)}.")
        if len(names) > MAX_UNITS:
            raise _invalid("controlnet_model", f"At most {MAX_UNITS} controlnet models.")
        types = _list(self.controlnet_type, "controlnet_type") or names
        scales = _list(self.controlnet_conditioning_scale, "") or ["1"]
        for field, values in (("controlnet_type", types), ("controlnet_conditioning_scale",
                                                           scales)):
            if len(values) not in (1, len(names)):
                raise _invalid(field, f"The {field.replace('_', ' ')} must be one value or one "
                               "per controlnet model (comma-separated).")
        try:
            weights = [float(s) for s in scales]
        except ValueError:
            raise _invalid("controlnet_conditioning_scale", "The controlnet conditioning scale "
                           "must be a number.") from None
        mode = ControlMode.controlnet if self.guess_mode else ControlMode.balanced
        out = []
        for i, name in enumerate(names):
            module = self._module(types[i if len(types) > 1 else 0]) if self.auto_hint else "none"
            w = weights[i if len(weights) > 1 else 0]
            try:
                out.append(ControlNetUnit(model=name, module=module, image=control, weight=w,
                                          control_mode=mode, resize_mode=0,
                                          processor_res=min(self.width, self.height)))
            except ValidationError as e:
                fields = [FieldError("controlnet_conditioning_scale" if f.field == "weight"
                                     else f.field, f.message) for f in laravel_errors(e)]
                raise ValidationFailed(fields[0].message, fields=fields) from e
        return out

    @staticmethod
    def _module(kind: str) -> str:
        module = TYPES.get(kind.lower(), kind)
        try:
            preprocessors.canonical(module)
            return module
        except SdgateError as e:
            message = (f"{e.message} (controlnet_type {kind!r}; types: "
                       f"{sorted(k for k, v in TYPES.items() if v in preprocessors.DEFAULTS)})")
            raise type(e)(message, param="controlnet_type",
                          fields=[FieldError("controlnet_type", message)]) from e

    def meta_extra(self) -> dict:
        def shown(v):
            return v if v is None or v.startswith("http") else "base64"
        return {"controlnet_model": self.controlnet_model,
                "controlnet_type": self.controlnet_type or self.controlnet_model,
                "auto_hint": "yes" if self.auto_hint else "no",
                "guess_mode": "yes" if self.guess_mode else "no",
                "controlnet_conditioning_scale": str(self.controlnet_conditioning_scale or 1),
                "strength": self.strength, "init_image": shown(self.init_image),
                "control_image": shown(self.control_image),
                "mask_image": shown(self.mask_image), "ip_adapter_id": self.ip_adapter_id,
                "ip_adapter_scale": self.ip_adapter_scale,
                "ip_adapter_image": shown(self.ip_adapter_image)}

    def to_internal(self, model: str | None, enhance_suffix: str, upscaler: str | None = None,
                    *, root: Path, control_image: bytes, **images) -> GenerationRequest:
        units = self.units(root, control_image)
        base = super().to_internal(model, enhance_suffix, upscaler, root=root, **images)
        try:  # validated again: the mode's image rules and the units
            return GenerationRequest(**{**base.model_dump(), "mode": self.run_mode,
                                        "controlnets": units})
        except ValidationError as e:
            raise ValidationFailed("invalid request", fields=laravel_errors(e)) from e

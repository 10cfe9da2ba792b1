"""Seed 003 request bodies (stablediffusionapi.com / ModelsLab v3, v4, v6), field for field.

Upstream: ../shared/seeds/003, stablediffusionapi.com/docs (v3 text2img / img2img / inpaint, v4
dreambooth), docs.modelslab.com (v6 /api/v6/images/*: its openapi.json in ModelsLab/docs-v2 adds
ip_adapter_*, temp, highres_fix; its inpaint example sends `steps` for num_inference_steps).
Clients send numbers as strings ("512") and switches as "yes"/"no": both are accepted, and a
null or "" value means the upstream default. Validation messages are upstream's (Laravel's)
wording: {"prompt": ["The prompt field is required."]}.
"""

from __future__ import annotations

import secrets
from typing import Annotated, Any, ClassVar

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      model_validator)
from pydantic_core import PydanticUseDefault

from shared.engine import samplers
from shared.errors import FieldError, SamplerNotFound, Unsupported, ValidationFailed
from shared.generation import (SEED_BOUND, GenerationRequest, IPAdapterRef, LoraRef, Mode,
                               NsfwAction, PostUpscale, Variant)

MAX_SIDE = 1024
MAX_SAMPLES = 4
UPSCALE_FACTOR = 2  # text2img `upscale: yes` doubles each side (upstream's docs)
MAX_STEPS = 51  # the v3 docs say 1-50; the v4 docs list 21, 31, 41 and 51
TOMESD_RATIO = 0.5  # tomesd.apply_patch's default ratio (ModelsLab documents none)

# diffusers schedulers that take `use_karras_sigmas` (tests check this against diffusers)
KARRAS_CAPABLE = frozenset({
    "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "KDPM2DiscreteScheduler",
    "KDPM2AncestralDiscreteScheduler", "EulerDiscreteScheduler", "HeunDiscreteScheduler",
    "LMSDiscreteScheduler", "UniPCMultistepScheduler", "DEISMultistepScheduler",
    "DPMSolverSDEScheduler"})
# algorithm_type values: DPMSolverMultistepScheduler's default, and its SDE variant (A1111 name).
# "dpmsolver+++" is upstream's documented spelling of the SDE one (stablediffusionapi.com/docs/
# a1111schedulers: "DPM++ 2M SDE = DPMSolverMultistepScheduler with algorithm_type dpmsolver+++").
ALGORITHMS = {"dpmsolver++": None, "sde-dpmsolver++": "DPM++ 2M SDE",
              "dpmsolver+++": "DPM++ 2M SDE"}

_YES = {"yes", "true", "1", "on"}
_NO = {"no", "false", "0", "off"}


def _blank(v: Any) -> bool:
    """null, "" and blanks: a field not given."""
    return v is None or (isinstance(v, str) and not v.strip())


def _blank_is_default(v: Any) -> Any:
    """null and "" mean "not given": the field's default applies."""
    if _blank(v):
        raise PydanticUseDefault()
    return v.strip() if isinstance(v, str) else v


def _switch(v: Any) -> Any:
    v = _blank_is_default(v)
    if isinstance(v, bool):
        return v
    if str(v).lower() in _YES:
        return True
    if str(v).lower() in _NO:
        return False
    return v  # pydantic reports it


Switch = Annotated[bool, BeforeValidator(_switch)]
Blank = BeforeValidator(_blank_is_default)
# upstream field -> the GenerationRequest field a model's own default may set when it is unset
MODEL_DEFAULTED = {"num_inference_steps": "steps", "guidance_scale": "guidance",
                   "scheduler": "sampler"}
# other names upstream's own example bodies use for a field (v6 inpaint sends "steps": "21")
ALIASES = {"steps": "num_inference_steps"}


class Text2ImgRequest(BaseModel):
    """POST /api/v3/text2img and /api/v4/dreambooth."""

    model_config = ConfigDict(extra="allow")  # upstream's other knobs are logged, not fatal

    key: str | None = None
    model_id: Annotated[str | None, Blank] = None  # v4; required there
    prompt: Annotated[str, Field(min_length=1)]
    negative_prompt: Annotated[str, Blank] = ""
    width: Annotated[int, Blank, Field(ge=8, le=MAX_SIDE)] = 512
    height: Annotated[int, Blank, Field(ge=8, le=MAX_SIDE)] = 512
    samples: Annotated[int, Blank, Field(ge=1, le=MAX_SAMPLES)] = 1
    num_inference_steps: Annotated[int, Blank, Field(ge=1, le=MAX_STEPS)] = 20
    guidance_scale: Annotated[float, Blank, Field(ge=1, le=20)] = 7.5
    seed: Annotated[int | None, Blank, Field(ge=0, le=2**32 - 1)] = None  # null: random
    safety_checker: Switch = True
    safety_checker_type: Annotated[NsfwAction, Blank] = NsfwAction.black
    enhance_prompt: Switch = True
    multi_lingual: Switch = False
    panorama: Switch = False
    self_attention: Switch = False
    upscale: Switch = False
    embeddings_model: Annotated[str | None, Blank] = None
    lora_model: Annotated[str | None, Blank] = None  # comma-separated
    lora_strength: Annotated[str | float | None, Blank] = None  # one value, or one per LoRA
    scheduler: Annotated[str | None, Blank] = None  # a diffusers class name
    use_karras_sigmas: Switch = True
    algorithm_type: Annotated[str | None, Blank] = None
    vae: Annotated[str | None, Blank] = None
    clip_skip: Annotated[int, Blank, Field(ge=1, le=8)] = 1
    # upstream's default is "yes"; unset (None) runs it too, except on SD3 / Flux (see below)
    tomesd: Annotated[bool | None, BeforeValidator(_switch)] = None
    webhook: Annotated[str | None, Blank] = None
    track_id: Annotated[str | int | None, Blank] = None
    base64: Switch = False
    # v6 (docs.modelslab.com's openapi.json for /api/v6/images/*)
    ip_adapter_id: Annotated[str | None, Blank] = None  # a file stem under <models>/IP-Adapter
    ip_adapter_scale: Annotated[float, Blank, Field(ge=0, le=2)] = 1.0  # diffusers' default
    ip_adapter_image: Annotated[str | None, Blank] = None  # a URL, or base64
    highres_fix: Switch = False  # refused: upstream documents no size / strength for it
    enhance_style: Annotated[str | None, Blank] = None  # refused: upstream's style presets
    instant_response: Switch = False  # yes: answer `processing` at once (fetch / webhook)
    temp: Switch = False  # temporary links: storage lifetime only, no effect on the picture

    mode: ClassVar[Mode] = Mode.txt2img

    @model_validator(mode="before")
    @classmethod
    def _blank_is_unset(cls, data: Any) -> Any:
        """null / "" steps, guidance and scheduler are left unset (model_fields_set); `steps`
        is read as num_inference_steps when that is not given."""
        if isinstance(data, dict):
            data = dict(data)
            for alias, name in ALIASES.items():
                if alias in data:
                    value = data.pop(alias)
                    if _blank(data.get(name)):
                        data[name] = value
            data = {k: v for k, v in data.items() if k not in MODEL_DEFAULTED or not _blank(v)}
        return data

    def defaulted(self) -> list[str]:
        """Engine fields the client left unset: a distilled / flow model's own steps, guidance
        and scheduler apply there."""
        return [mine for theirs, mine in MODEL_DEFAULTED.items()
                if theirs not in self.model_fields_set]

    def refusals(self) -> list[FieldError]:
        """Switches sdgate cannot honour here: refused, never silently ignored."""
        out = []
        if self.vae:
            out.append(FieldError("vae", "Custom VAEs are not available; the model's own VAE "
                                  "is used. Send vae null."))
        if self.panorama and self.self_attention:
            out.append(FieldError("panorama", "panorama and self_attention cannot be combined."))
        if self.highres_fix:
            out.append(FieldError("highres_fix", "highres_fix is not available here (upstream "
                                  "documents no size or strength for it); send highres_fix "
                                  "\"no\", or upscale \"yes\" for a 2x model upscale."))
        if self.enhance_style:
            out.append(FieldError("enhance_style", "enhance_style presets are not available "
                                  "here; send enhance_style null and write the style into the "
                                  "prompt."))
        if self.mode is not Mode.txt2img:
            for name in ("panorama", "self_attention"):
                if getattr(self, name):
                    out.append(FieldError(name, f"{name} is available for text to image only."))
        return out

    def image_inputs(self) -> dict[str, tuple[str, str]]:
        """internal name -> (field, URL or base64) of every image the request reads."""
        if self.ip_adapter_id and not self.ip_adapter_image:
            raise ValidationFailed("ip_adapter_image", fields=[FieldError(
                "ip_adapter_image", "The ip adapter image field is required with "
                "ip_adapter_id.")])
        if self.ip_adapter_image:
            return {"ip_adapter_image": ("ip_adapter_image", self.ip_adapter_image)}
        return {}

    def meta_extra(self) -> dict:
        """Upstream meta keys of this endpoint beyond text2img's."""
        return {}

    def check_embeddings(self, installed) -> None:
        """embeddings_model ("a" or "a,b"): each must be an installed textual inversion (they
        apply where their name appears in the prompt, A1111's rule); a missing one is refused
        rather than silently drawing without it."""
        names = [n.strip() for n in (self.embeddings_model or "").split(",") if n.strip()]
        missing = [n for n in names if n not in installed]
        if missing:
            raise ValidationFailed("embeddings_model", fields=[FieldError(
                "embeddings_model", f"The embeddings model {missing[0]!r} is not installed "
                f"(<models_dir>/embeddings); installed: {sorted(installed)}.")])

    def ip_adapter_refs(self, root, image: bytes | None) -> list[IPAdapterRef]:
        """ip_adapter_image (with ip_adapter_id / _scale) as an IP-Adapter image prompt; the id
        must name an adapter installed under <models_dir>/IP-Adapter."""
        if image is None:
            return []
        from shared.engine.controlnet_types import ip_adapters

        found = ip_adapters(root) if root is not None else {}
        if not found:
            raise ValidationFailed("ip_adapter_id", fields=[FieldError(
                "ip_adapter_id", "No IP-Adapter is installed on this server "
                "(<models_dir>/IP-Adapter); send ip_adapter_image null.")])
        if self.ip_adapter_id and self.ip_adapter_id not in found:
            raise ValidationFailed("ip_adapter_id", fields=[FieldError(
                "ip_adapter_id", f"The selected ip adapter id {self.ip_adapter_id!r} is "
                f"invalid; choose from {list(found)}.")])
        return [IPAdapterRef(model=self.ip_adapter_id, images=[image],
                             scale=self.ip_adapter_scale)]

    def sampler(self) -> tuple[str | None, str | None]:
        """(sampler, schedule type) for the engine, from scheduler / algorithm_type / karras."""
        name = self.scheduler
        algo = (self.algorithm_type or "").lower()
        if algo and algo != "none":
            if algo not in ALGORITHMS or (name or "") != "DPMSolverMultistepScheduler":
                raise ValidationFailed("algorithm_type", fields=[FieldError(
                    "algorithm_type", "The algorithm type must be dpmsolver++ or sde-dpmsolver++ "
                    "and needs the DPMSolverMultistepScheduler scheduler.")])
            name = ALGORITHMS[algo] or name
        karras = self.use_karras_sigmas and (self.scheduler or "") in KARRAS_CAPABLE
        schedule = "karras" if karras else None
        try:
            samplers.resolve(name, schedule)
        except SamplerNotFound as e:
            raise ValidationFailed(e.message, fields=[FieldError(
                "scheduler", "The selected scheduler is invalid.")]) from e
        return name, schedule

    def loras(self) -> list[LoraRef]:
        """lora_model "a,b" with lora_strength "0.6" (for all) or "0.6,0.9" (one each)."""
        names = [n.strip() for n in (self.lora_model or "").split(",") if n.strip()]
        if not names:
            return []
        raw = str(self.lora_strength) if self.lora_strength is not None else "1"
        try:
            weights = [float(w) for w in raw.split(",") if w.strip()]
        except ValueError:
            weights = []
        if len(weights) == 1:
            weights *= len(names)
        if len(weights) != len(names) or not all(-10 <= w <= 10 for w in weights):
            raise ValidationFailed("lora_strength", fields=[FieldError(
                "lora_strength", "The lora strength must be one number, or one per lora model "
                "(comma-separated), each between -10 and 10.")])
        return [LoraRef(name=n, weight=w) for n, w in zip(names, weights)]

    def token_merging(self) -> dict:
        """tomesd as the engine's token merging: `tomesd.apply_patch`'s defaults (ratio 0.5,
        random destinations; upstream documents no ratio). Left unset, it is upstream's default
        "yes", which a model without a UNet (SD3, Flux) skips instead of refusing."""
        if self.tomesd is False:
            return {}
        return {"token_merging_ratio": TOMESD_RATIO, "token_merging_random": True,
                "token_merging_optional": self.tomesd is None}

    def effective_prompt(self, enhance_suffix: str) -> str:
        """The prompt the engine gets: enhance_prompt appends sdgate's fixed quality terms."""
        if self.enhance_prompt and enhance_suffix:
            return f"{self.prompt}, {enhance_suffix}"
        return self.prompt

    def to_internal(self, model: str | None, enhance_suffix: str, upscaler: str | None = None,
                    *, root=None, ip_adapter_image: bytes | None = None,
                    **images) -> GenerationRequest:
        """The engine request; a null seed becomes a fixed random one now, so re-runs agree.
        `upscale: yes` is upstream's 2x (512 px asked, 1024 px returned) with `upscaler`;
        `root` is the models folder (IP-Adapters)."""
        sampler, schedule = self.sampler()
        refs = self.ip_adapter_refs(root, ip_adapter_image)
        variant = (Variant.panorama if self.panorama else
                   Variant.self_attention if self.self_attention else None)
        seed = self.seed if self.seed is not None else secrets.randbelow(SEED_BOUND)
        try:
            return GenerationRequest(
                mode=self.mode, model=model, prompt=self.effective_prompt(enhance_suffix),
                negative_prompt=self.negative_prompt, width=self.width, height=self.height,
                steps=self.num_inference_steps, guidance=self.guidance_scale, sampler=sampler,
                scheduler=schedule, seed=seed, num_images=self.samples,
                clip_skip=self.clip_skip, safety_checker=self.safety_checker,
                safety_checker_type=self.safety_checker_type, variant=variant,
                loras=self.loras(),
                upscale=PostUpscale(upscaler=upscaler, scale=UPSCALE_FACTOR)
                if self.upscale else None,
                strength=getattr(self, "strength", 0.75), defaulted=self.defaulted(),
                ip_adapters=refs, **self.token_merging(), **images)
        except ValidationError as e:
            raise ValidationFailed("invalid request", fields=laravel_errors(e)) from e


class Img2ImgRequest(Text2ImgRequest):
    """POST /api/v3/img2img and /api/v4/dreambooth/img2img: adds init_image and strength."""

    init_image: Annotated[str, Field(min_length=1)]  # a URL, or base64
    strength: Annotated[float, Blank, Field(ge=0, le=1)] = 0.7

    mode: ClassVar[Mode] = Mode.img2img

    def image_inputs(self) -> dict[str, tuple[str, str]]:
        return {**super().image_inputs(), "init_image": ("init_image", self.init_image)}


class InpaintRequest(Img2ImgRequest):
    """POST /api/v3/inpaint and /api/v4/dreambooth/inpaint: adds mask_image (white = repaint)."""

    mask_image: Annotated[str, Field(min_length=1)]

    mode: ClassVar[Mode] = Mode.inpaint

    def image_inputs(self) -> dict[str, tuple[str, str]]:
        return {**super().image_inputs(), "mask": ("mask_image", self.mask_image)}


class FetchRequest(BaseModel):
    """POST /api/v3/fetch/{id} and /api/v4/dreambooth/fetch ({key, request_id})."""

    model_config = ConfigDict(extra="allow")

    key: str | None = None
    request_id: Annotated[str | int | None, Blank] = None


# -- Laravel-style validation messages -----------------------------------------------------------
# pydantic error type -> upstream's message ({field} is the name with spaces, others from ctx)
MESSAGES = {
    "missing": "The {field} field is required.",
    "string_too_short": "The {field} field is required.",
    "less_than_equal": "The {field} must not be greater than {le}.",
    "less_than": "The {field} must be less than {lt}.",
    "greater_than_equal": "The {field} must be at least {ge}.",
    "greater_than": "The {field} must be greater than {gt}.",
    "int_parsing": "The {field} must be an integer.",
    "int_type": "The {field} must be an integer.",
    "int_from_float": "The {field} must be an integer.",
    "float_parsing": "The {field} must be a number.",
    "float_type": "The {field} must be a number.",
    "bool_parsing": "The {field} field must be yes or no.",
    "bool_type": "The {field} field must be yes or no.",
    "enum": "The selected {field} is invalid.",
    "literal_error": "The selected {field} is invalid.",
    "string_type": "The {field} must be a string.",
}


def _message(err: dict) -> str:
    if not err.get("loc") and err.get("type") == "value_error":  # a whole-request rule
        return str(err.get("msg", "")).removeprefix("Value error, ")
    field = str(err["loc"][0]).replace("_", " ") if err.get("loc") else "request"
    template = MESSAGES.get(err.get("type", ""), "The {field} is invalid.")
    return template.format(field=field, **(err.get("ctx") or {}))


def laravel_errors(exc: ValidationError) -> list[FieldError]:
    """pydantic's errors as one FieldError per problem, in upstream's wording."""
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if not str(p).isdigit()]
        out.append(FieldError(loc[0] if loc else "request", _message(err)))
    return out


def parse(model: type[BaseModel], data: dict):
    """Validate a body into a request model, with upstream's per-field messages."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        fields = laravel_errors(e)
        raise ValidationFailed("; ".join(f.message for f in fields), fields=fields) from e


def refuse(fields: list[FieldError]) -> None:
    """Raise Unsupported listing every refused switch, if any."""
    if fields:
        raise Unsupported("; ".join(f.message for f in fields), param=fields[0].field,
                          fields=fields)

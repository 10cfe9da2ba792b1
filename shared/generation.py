"""The one internal request and result that every API shape translates to and from.

Only the engine (and the backend that uploads its output) sees these types; dialects build a
GenerationRequest from their own request and render a GenerationResult into their own response.
"""

from __future__ import annotations

import enum
import secrets
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

# A1111 draws random seeds below this bound; we do the same everywhere.
SEED_BOUND = 4294967294
MAX_SEED = 2**64 - 1
MIN_SIDE = 8  # smallest image side the engine draws (one latent pixel)


class Mode(str, enum.Enum):
    """Which pipeline a request needs."""

    txt2img = "txt2img"
    img2img = "img2img"
    inpaint = "inpaint"


class OutputFormat(str, enum.Enum):
    """Encoded image format of the results."""

    png = "png"
    jpeg = "jpeg"
    webp = "webp"


class NsfwAction(str, enum.Enum):
    """What replaces an image the safety checker flags."""

    black = "black"
    blur = "blur"
    pixelate = "pixelate"
    sensitive_content_text = "sensitive_content_text"  # black with a "sensitive content" label


class Variant(str, enum.Enum):
    """A text-to-image pipeline derived from the loaded model instead of the plain one."""

    panorama = "panorama"  # MultiDiffusion (StableDiffusionPanoramaPipeline)
    self_attention = "self_attention"  # self-attention guidance (StableDiffusionSAGPipeline)


MIME = {OutputFormat.png: "image/png", OutputFormat.jpeg: "image/jpeg",
        OutputFormat.webp: "image/webp"}


class LoraRef(BaseModel):
    """One LoRA to apply: a file stem under <models_dir>/Lora and its multipliers."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    weight: float = Field(1.0, ge=-10.0, le=10.0)  # text encoder, and UNet unless unet_weight
    unet_weight: float | None = Field(None, ge=-10.0, le=10.0)


class HiresFix(BaseModel):
    """A second img2img pass over the upscaled first-pass image (A1111's "hires fix")."""

    model_config = ConfigDict(extra="forbid")

    width: int = Field(ge=MIN_SIDE, le=4096)  # final size: the first pass is upscaled to cover it, then
    height: int = Field(ge=MIN_SIDE, le=4096)  # centre-cropped
    steps: int | None = Field(None, ge=1, le=500)  # None: the first pass's steps
    strength: float = Field(0.7, ge=0.0, le=1.0)  # 0: the upscaled first pass, undenoised
    upscaler: str = "Latent"  # a latent mode ("Latent", "Latent (bicubic)", ...), "Lanczos", ...
    sampler: str | None = None  # None: the first pass's sampler and schedule type
    scheduler: str | None = None
    prompt: str | None = None  # None: the first pass's prompts
    negative_prompt: str | None = None
    token_merging_ratio: float | None = Field(None, ge=0.0, lt=1.0)  # None: the first pass's


class PostUpscale(BaseModel):
    """Every generated image upscaled by a model upscaler before encoding (ModelsLab `upscale`)."""

    model_config = ConfigDict(extra="forbid")

    upscaler: str = Field(min_length=1)  # a model file's stem or its A1111 name (postprocess.py)
    scale: float = Field(2.0, ge=1.0, le=8.0)


class Refiner(BaseModel):
    """A second model that finishes the denoising from `switch_at` of the schedule on."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    switch_at: float = Field(gt=0.0, lt=1.0)  # fraction of the steps the base model runs


class ControlMode(str, enum.Enum):
    """sd-webui-controlnet's control modes."""

    balanced = "balanced"
    prompt = "prompt"  # "My prompt is more important"
    controlnet = "controlnet"  # "ControlNet is more important" (diffusers' guess_mode)


class ControlNetUnit(BaseModel):
    """One ControlNet: a model under <models_dir>/ControlNet and its control image."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    image: bytes | None = None  # None: the init image (img2img / inpaint)
    weight: float = Field(1.0, ge=0.0, le=2.0)  # controlnet_conditioning_scale
    guidance_start: float = Field(0.0, ge=0.0, le=1.0)
    guidance_end: float = Field(1.0, ge=0.0, le=1.0)
    control_mode: ControlMode = ControlMode.balanced
    resize_mode: int = Field(1, ge=0, le=2)  # 0 just resize, 1 crop and resize, 2 resize and fill
    pixel_perfect: bool = False
    processor_res: int = Field(512, ge=64, le=4096)
    module: str = "none"  # preprocessor (shared.engine.preprocessors)
    threshold_a: float | None = None  # None: the preprocessor's default
    threshold_b: float | None = None
    mask: bytes | None = None  # inpaint preprocessors' mask (refused: none is implemented)
    region_mask: bytes | None = None  # effective region: white = where the unit acts

    @model_validator(mode="after")
    def _window(self):
        if self.guidance_start > self.guidance_end:
            raise ValueError("guidance_start must not exceed guidance_end")
        return self


class IPAdapterRef(BaseModel):
    """One IP-Adapter (image prompt): a file under <models_dir>/IP-Adapter and its references."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None  # file stem; None: the only / first adapter that fits the model
    images: list[bytes] = Field(min_length=1, max_length=16)  # encoded; several: tokens combined
    scale: float = Field(1.0, ge=0.0, le=2.0)  # 0: the same pixels as no adapter
    region_mask: bytes | None = None  # effective region: white = where the image prompt acts


class GenerationRequest(BaseModel):
    """What to generate, in engine terms. Defaults live here and nowhere else."""

    model_config = ConfigDict(extra="forbid")

    mode: Mode = Mode.txt2img
    model: str | None = None  # None: the configured default model
    prompt: str
    negative_prompt: str = ""
    width: int = Field(512, ge=MIN_SIDE, le=4096)
    height: int = Field(512, ge=MIN_SIDE, le=4096)
    steps: int = Field(20, ge=1, le=500)
    guidance: float = Field(7.0, ge=0.0, le=100.0)
    sampler: str | None = None  # A1111 name or diffusers class name; None: the model's own
    scheduler: str | None = None  # A1111 schedule type ("karras", "exponential", ...)
    seed: int = Field(-1, ge=-1, le=MAX_SEED)  # -1: random
    subseed: int = Field(-1, ge=-1, le=MAX_SEED)
    subseed_strength: float = Field(0.0, ge=0.0, le=1.0)
    num_images: int = Field(1, ge=1, le=64)
    strength: float = Field(0.75, ge=0.0, le=1.0)  # img2img / inpaint denoising strength
    init_image: bytes | None = None  # encoded image, already checked by shared.images
    mask: bytes | None = None  # encoded image; white = repaint
    clip_skip: int = Field(1, ge=1, le=12)
    output_format: OutputFormat = OutputFormat.png
    safety_checker: bool = False
    safety_checker_type: NsfwAction = NsfwAction.black
    variant: Variant | None = None  # txt2img only
    loras: list[LoraRef] = Field(default_factory=list)  # besides <lora:name:w> prompt tags
    # Free-form extras a dialect wants recorded in the image's infotext.
    extra_params: dict[str, str] = Field(default_factory=dict)
    # -- A1111 semantics (seed 001 / issue 4); any dialect may use them --
    batch_size: int | None = Field(None, ge=1, le=64)  # images per pipeline call; None: all
    tiling: bool = False  # seamless textures: circular padding in every conv layer
    hires: HiresFix | None = None
    eta: float | None = Field(None, ge=0.0, le=1.0)  # DDIM's eta (others ignore it)
    seed_resize_from: tuple[int, int] | None = None  # (w, h): draw the noise at this size
    resize_mode: int = Field(0, ge=0, le=3)  # init image: 0 stretch, 1 crop, 2 fill, 3 latent
    mask_blur: tuple[int, int] = (0, 0)  # Gaussian blur (x, y) of the mask, pixels
    mask_invert: bool = False  # repaint the black part of the mask instead
    inpainting_fill: int = Field(1, ge=0, le=3)  # 0 fill, 1 original, 2 latent noise, 3 nothing
    inpaint_full_res: bool = False  # repaint only the masked region, at full resolution
    inpaint_full_res_padding: int = Field(0, ge=0, le=1024)
    task_id: str | None = None  # handle for progress / interrupt / skip (shared.progress)
    owner: str = ""  # the API key id that asked (tenant isolation of tasks and jobs)
    # -- OpenAI Images (issue 15) --
    output_quality: int | None = Field(None, ge=0, le=100)  # jpeg/webp quality; None: 90
    safety_checker_optional: bool = False  # no checker installed: skip it instead of refusing
    partial_images: int = Field(0, ge=0, le=3)  # streamed previews of intermediate latents
    controlnets: list[ControlNetUnit] = Field(default_factory=list)  # shared.engine.controlnet
    refiner: Refiner | None = None  # shared.engine.refiner (A1111 refiner_checkpoint)
    upscale: PostUpscale | None = None  # after generation (and hires), before encoding
    ip_adapters: list[IPAdapterRef] = Field(default_factory=list, max_length=4)  # .ipadapter
    # -- token merging (ToMe; shared.engine.tome): UNet families only --
    token_merging_ratio: float = Field(0.0, ge=0.0, lt=1.0)  # share of tokens merged; 0: off
    token_merging_random: bool = False  # random destinations (tomesd's use_rand), image-seeded
    # the API shape's default rather than the client's ask (ModelsLab's tomesd left unset): a
    # family without a UNet (SD3, Flux) runs without it instead of refusing the request
    token_merging_optional: bool = False
    # -- model defaults (issue 16) --
    # steps / guidance / sampler the client left unset: the values above are the API shape's
    # defaults, which a step-distilled (or flow-matching) model replaces with its card's
    # (shared.engine.families.apply_defaults). Fields not passed at all are added here.
    defaulted: list[Literal["steps", "guidance", "sampler"]] = Field(default_factory=list)

    @model_validator(mode="after")
    def _record_defaulted(self):
        for name in ("steps", "guidance", "sampler"):
            if name not in self.model_fields_set and name not in self.defaulted:
                self.defaulted.append(name)
        return self

    @model_validator(mode="after")
    def _images_for_mode(self):
        if self.mode is not Mode.txt2img and self.init_image is None:
            raise ValueError(f"{self.mode.value} needs an init image")
        if self.mode is Mode.inpaint and self.mask is None:
            raise ValueError("inpaint needs a mask")
        if self.variant is not None and self.mode is not Mode.txt2img:
            raise ValueError(f"{self.variant.value} is a text-to-image pipeline")
        return self

    @model_validator(mode="after")
    def _denoises_at_least_one_step(self):
        if self.mode is not Mode.txt2img and self.strength * self.steps < 1:
            raise ValueError(f"strength {self.strength} x {self.steps} steps is less than one "
                             "denoising step: raise strength or steps")
        return self

    @model_validator(mode="after")
    def _hires_for_txt2img(self):
        if self.hires is not None and self.mode is not Mode.txt2img:
            raise ValueError("hires fix is a txt2img feature")
        return self

    @staticmethod
    def nth_seed(seed: int, i: int) -> int:
        """Image i's seed: seed + i, wrapping at 2**64 (torch's seed range) as one rule."""
        return (seed + i) % (MAX_SEED + 1)

    def hires_token_merging_ratio(self) -> float:
        """The hires pass's token merging ratio: its own, else the first pass's."""
        own = self.hires.token_merging_ratio if self.hires is not None else None
        return self.token_merging_ratio if own is None else own

    def resolved_seed(self) -> int:
        """The seed to use: the request's, or a fresh random one below A1111's bound."""
        return self.seed if self.seed != -1 else secrets.randbelow(SEED_BOUND)


class GeneratedImage(BaseModel):
    """One output image; `url` is set once it is stored."""

    seed: int
    data: bytes | None = None
    mime_type: str = "image/png"
    width: int
    height: int
    nsfw: bool = False
    url: str | None = None
    infotext: str = ""
    subseed: int = -1


class GenerationResult(BaseModel):
    """Everything a dialect needs to render a response."""

    images: list[GeneratedImage]
    model: str
    seed: int  # the first image's seed
    subseed: int = -1
    timings: dict[str, float] = Field(default_factory=dict)  # seconds per phase
    model_hash: str = ""
    interrupted: bool = False  # stopped early by an interrupt (images are partly denoised)
    job_id: str = ""
    # what the engine ran with (the model's defaults where the client left them unset)
    steps: int | None = None
    guidance: float | None = None
    sampler: str | None = None  # the sampler's label as in the infotext
    model_defaults: list[str] = Field(default_factory=list)  # fields the model's defaults set

"""OpenAI Images request bodies, field for field, with their translation to a GenerationRequest.

Upstream: the official `openai` package (resources/images.py, types/image_*_params.py) and
platform.openai.com/docs/api-reference/images; fields are in the API reference's order. What
sdgate does with each field (honoured, accepted without effect, refused) is in docs/openai.md.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import FieldError, Unsupported, ValidationFailed
from shared.generation import MAX_SEED, GenerationRequest, IPAdapterRef, Mode, OutputFormat

# OpenAI's own model names are served by the configured default model: an app that only changes
# base_url keeps its `model=` argument. Prefixes, so newer OpenAI names keep working too.
OPENAI_MODEL_PREFIXES = ("dall-e-", "gpt-image-", "chatgpt-image-")
# GPT image models always answer with b64_json upstream; code written for them reads b64_json.
B64_DEFAULT_PREFIXES = ("gpt-image-", "chatgpt-image-")

# Every side a multiple of 8 (the latent grid), within what SD1.5 / SDXL render sensibly.
MIN_SIDE, MAX_SIDE = 64, 2048
_SIZE = re.compile(r"^\s*(\d{1,5})\s*[xX×]\s*(\d{1,5})\s*$")

# `quality` buys denoising steps; "auto", "standard" and "medium" keep the default steps.
QUALITY_STEPS = {"low": 10, "high": 30, "hd": 30, "xhigh": 40, "max": 50}
# The quality a response names (OpenAI echoes the one it rendered at): the default steps sit
# between low and high, so "auto" and omitted come back as "medium"; DALL-E's names as theirs.
QUALITY_ECHO = {"low": "low", "medium": "medium", "high": "high", "xhigh": "xhigh", "max": "max",
                "hd": "high", "standard": "medium", "auto": "medium", None: "medium"}

# Variations are img2img of the image with an empty prompt: enough noise to vary the details,
# little enough to keep the composition.
VARIATION_STRENGTH = 0.6
# Edits repaint the masked area from scratch, as OpenAI's do.
EDIT_STRENGTH = 1.0
# A gpt-image edit without a mask reworks the whole image (img2img); input_fidelity "high" keeps
# more of the input.
WHOLE_EDIT_STRENGTH = {None: 0.75, "low": 0.75, "high": 0.5}
# gpt-image edits with several images: the first is edited, the others are references, combined
# through one IP-Adapter (shared.engine.ipadapter) at this scale; input_fidelity "high" makes the
# inputs' features count more.
REFERENCE_SCALE = {None: 0.6, "low": 0.6, "high": 1.0}
MAX_EDIT_IMAGES = 16  # upstream's limit for gpt-image models

Quality = Literal["auto", "low", "medium", "high", "xhigh", "max", "standard", "hd"]
ResponseFormat = Literal["url", "b64_json"]
OutputFormatName = Literal["png", "jpeg", "webp", "gif", "svg"]


def invalid_field(param: str, message: str) -> ValidationFailed:
    """A 400-class error about one field."""
    return ValidationFailed(message, param=param, fields=[FieldError(param, message)])


def sdgate_model(name: str | None) -> str | None:
    """The sdgate model for an OpenAI `model` value; None means the configured default."""
    if not name or name.strip().lower().startswith(OPENAI_MODEL_PREFIXES):
        return None
    return name.strip()


def parse_size(size: str | None, auto: tuple[int, int]) -> tuple[int, int]:
    """(width, height) for an OpenAI `size`: "auto"/omitted gives `auto`, else "WxH" checked."""
    if size is None or size.strip().lower() in ("", "auto"):
        return auto
    m = _SIZE.match(size)
    if not m:
        raise invalid_field("size", f"Invalid size {size!r}: use 'auto' or 'WIDTHxHEIGHT' "
                                    "such as '512x512' or '1024x1024'")
    w, h = int(m[1]), int(m[2])
    for side in (w, h):
        if not MIN_SIDE <= side <= MAX_SIDE or side % 8:
            raise invalid_field("size", f"Invalid size {size!r}: width and height must be "
                                        f"multiples of 8 between {MIN_SIDE} and {MAX_SIDE}")
    return w, h


def fit_size(width: int, height: int) -> tuple[int, int]:
    """An input image's size made valid: scaled to fit MAX_SIDE, sides rounded to multiples of 8."""
    scale = min(1.0, MAX_SIDE / max(width, height))
    return tuple(min(MAX_SIDE, max(MIN_SIDE, round(s * scale / 8) * 8)) for s in (width, height))


class _ImagesRequest(BaseModel):
    """Fields every Images endpoint shares."""

    model_config = ConfigDict(extra="allow")  # newer client fields we do not know: logged

    model: str | None = None
    n: int | None = Field(None, ge=1, le=10)
    response_format: ResponseFormat | None = None
    size: str | None = None
    user: str | None = None  # no effect on the image; echoed as safety_identifier
    moderation: Literal["low", "auto"] | None = None  # auto (default): safety checker if installed

    # -- sdgate's own, not OpenAI's (the openai package sends it in extra_body) ---------------
    seed: int | None = Field(None, ge=-1, le=MAX_SEED)  # None / -1: random; image i: seed + i

    def echo(self) -> dict:
        """What the response repeats of the request: the quality rendered at (variations: the
        default steps) and the end user's identifier, as upstream."""
        return {"quality": QUALITY_ECHO[None], "safety_identifier": self.user or None}

    def screening(self) -> dict:
        """GenerationRequest's safety checker fields: moderation "auto" (OpenAI's default)
        screens with the checker when one is installed; "low" does not screen."""
        return dict(safety_checker=self.moderation != "low", safety_checker_optional=True)

    def seed_value(self) -> int:
        """GenerationRequest's seed: -1 (random) unless sdgate's `seed` extension was sent."""
        return -1 if self.seed is None else self.seed

    def response_kind(self) -> ResponseFormat:
        """url unless asked, except for GPT image models, which upstream answer in b64_json."""
        if self.response_format:
            return self.response_format
        name = (self.model or "").strip().lower()
        return "b64_json" if name.startswith(B64_DEFAULT_PREFIXES) else "url"


class _PromptedRequest(_ImagesRequest):
    """Fields of generations and edits (GPT image model options included)."""

    prompt: str = Field(min_length=1, max_length=32000)
    background: Literal["transparent", "opaque", "auto"] | None = None
    complexity: Literal["low", "medium", "high"] | None = None  # accepted; no effect
    frame_count: int | None = None  # GIF output only: refused with it
    frame_duration_ms: int | None = None  # GIF output only: refused with it
    output_compression: int | None = Field(None, ge=0, le=100)  # jpeg / webp quality
    output_format: OutputFormatName | None = None
    partial_images: int | None = Field(None, ge=0, le=3)
    quality: Quality | None = None
    safety_identifier: str | None = None  # no effect on the image; echoed
    stream: bool | None = None
    svg: dict | None = None  # SVG output only: refused with it (multipart: svg[model], ...)

    def echo(self) -> dict:
        """The quality rendered at, and the end user's identifier (a non-empty
        safety_identifier, else the deprecated user), as upstream echoes them."""
        who = self.safety_identifier or self.user or None
        return {"quality": QUALITY_ECHO[self.quality], "safety_identifier": who}

    def refuse_unsupported(self) -> None:
        """Options that would change the result in a way sdgate cannot: refused, not ignored."""
        for name in ("frame_count", "frame_duration_ms"):
            if getattr(self, name) is not None:
                raise Unsupported(f"{name} is for GIF output, which sdgate does not produce "
                                  "(output_format png, jpeg or webp)", param=name)
        if self.svg is not None or any(k.startswith("svg[") for k in self.model_extra or {}):
            raise Unsupported("svg is for SVG output, which sdgate does not produce "
                              "(output_format png, jpeg or webp)", param="svg")
        if self.partial_images and not self.stream:
            raise invalid_field("partial_images", "partial_images needs stream: true")
        if self.stream and (self.n or 1) > 1:
            raise invalid_field("n", "Streaming returns one image: send n 1 with stream")
        if self.background == "transparent":
            raise Unsupported("background 'transparent' is not supported: Stable Diffusion "
                              "renders opaque images", param="background")
        if self.output_format in ("gif", "svg"):
            raise Unsupported(f"output_format {self.output_format!r} is not supported; use png, "
                              "jpeg or webp", param="output_format")

    def common(self) -> dict:
        """GenerationRequest fields these options set (defaults stay GenerationRequest's)."""
        self.refuse_unsupported()
        out = dict(model=sdgate_model(self.model), prompt=self.prompt, num_images=self.n or 1,
                   seed=self.seed_value(),
                   output_format=OutputFormat(self.output_format or "png"),
                   output_quality=self.output_compression, **self.screening())
        if self.stream:
            out["partial_images"] = self.partial_images or 0
        if self.quality in QUALITY_STEPS:
            out["steps"] = QUALITY_STEPS[self.quality]
        return out


class ImageGenerateRequest(_PromptedRequest):
    """POST /v1/images/generations (JSON)."""

    events: ClassVar[str] = "image_generation"  # stream event names: <events>.partial_image, ...

    style: Literal["vivid", "natural"] | None = None  # accepted; DALL-E 3 only upstream

    def to_internal(self, native: int) -> GenerationRequest:
        width, height = parse_size(self.size, (native, native))
        return GenerationRequest(mode=Mode.txt2img, width=width, height=height, **self.common())


class ImageEditRequest(_PromptedRequest):
    """POST /v1/images/edits (multipart; `image` and `mask` arrive as files, outside this model)."""

    events: ClassVar[str] = "image_edit"

    input_fidelity: Literal["high", "low"] | None = None  # no-mask gpt-image edits: strength

    def whole_image(self, has_mask: bool) -> bool:
        """gpt-image models edit the whole image when no mask is sent (img2img)."""
        return not has_mask and (self.model or "").strip().lower().startswith(B64_DEFAULT_PREFIXES)

    def check_references(self, n: int) -> None:
        """Several images are a gpt-image feature (up to 16); dall-e-2 edits one."""
        if n and not (self.model or "").strip().lower().startswith(B64_DEFAULT_PREFIXES):
            raise Unsupported("several images are a gpt-image model feature; send one image, "
                              "or model gpt-image-1", param="image")
        if n + 1 > MAX_EDIT_IMAGES:
            raise Unsupported(f"at most {MAX_EDIT_IMAGES} images", param="image")

    def to_internal(self, image: bytes, mask: bytes | None, image_size: tuple[int, int],
                    references: list[bytes] | None = None) -> GenerationRequest:
        width, height = parse_size(self.size, fit_size(*image_size))
        common = self.common()
        if references:
            common["ip_adapters"] = [IPAdapterRef(images=references,
                                                  scale=REFERENCE_SCALE[self.input_fidelity])]
        if mask is None:
            return GenerationRequest(mode=Mode.img2img, width=width, height=height,
                                     init_image=image, **common,
                                     strength=WHOLE_EDIT_STRENGTH[self.input_fidelity])
        return GenerationRequest(mode=Mode.inpaint, width=width, height=height, init_image=image,
                                 mask=mask, strength=EDIT_STRENGTH, **common)


class ImageVariationRequest(_ImagesRequest):
    """POST /v1/images/variations (multipart; `image` arrives as a file)."""

    def to_internal(self, image: bytes, image_size: tuple[int, int]) -> GenerationRequest:
        width, height = parse_size(self.size, fit_size(*image_size))
        return GenerationRequest(mode=Mode.img2img, model=sdgate_model(self.model), prompt="",
                                 width=width, height=height, num_images=self.n or 1,
                                 seed=self.seed_value(), init_image=image,
                                 strength=VARIATION_STRENGTH, **self.screening())

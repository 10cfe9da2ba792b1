"""Seed 002: the form-encoded `POST /txt2img` and `POST /img2img` API (JSON accepted too).

Upstream: ../shared/seeds/002 — fields, ranges and the response are that document's, field for
field. Added by sdgate (fenced below): `negative_prompt`, `model`, `key`.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from shared.dialects.base import header_key
from shared.dialects.dialect import Call, Dialect, Route
from shared.errors import SdgateError, status_of
from shared.generation import MAX_SEED, GenerationRequest, GenerationResult, Mode
from shared.images import b64decode_strict, check_image, open_image


class Txt2ImgRequest(BaseModel):
    """POST /txt2img body, as the seed documents it."""

    model_config = ConfigDict(extra="allow")

    prompt: str = Field(min_length=1)
    seed: int | None = Field(None, ge=-1, le=MAX_SEED)
    num_outputs: int = Field(1, ge=1, le=4)
    width: int = Field(512, gt=0, le=1024)
    height: int = Field(512, gt=0, le=1024)
    num_inference_steps: int = Field(30, gt=0, le=150)
    guidance_scale: float = Field(7, gt=0, le=20)
    # -- sdgate additions --
    negative_prompt: str = ""
    model: str | None = None
    key: str | None = None

    def to_internal(self, mode: Mode = Mode.txt2img, **extra) -> GenerationRequest:
        return GenerationRequest(
            mode=mode, model=self.model, prompt=self.prompt,
            negative_prompt=self.negative_prompt, width=self.width, height=self.height,
            steps=self.num_inference_steps, guidance=self.guidance_scale,
            seed=-1 if self.seed is None else self.seed, num_images=self.num_outputs,
            defaulted=[mine for theirs, mine in (("num_inference_steps", "steps"),
                                                 ("guidance_scale", "guidance"))
                       if theirs not in self.model_fields_set] + ["sampler"], **extra)


class Img2ImgRequest(Txt2ImgRequest):
    """POST /img2img body: txt2img's fields plus strength and a base64 init image."""

    width: int | None = Field(None, gt=0, le=1024)  # default: the init image's own size
    height: int | None = Field(None, gt=0, le=1024)
    strength: float = Field(0.7, gt=0, lt=1)
    init_image: str = Field(min_length=1)


def _fit(w: int, h: int, limit: int = 1024) -> tuple[int, int]:
    """An init image's size scaled down to fit the documented (0,1024] range."""
    scale = min(1.0, limit / max(w, h))
    return max(1, int(w * scale)), max(1, int(h * scale))


FORM = ("application/x-www-form-urlencoded", "application/json")


class Form(Dialect):
    """The form API: the key in a header or the `key` field; `{status: "error", ...}` errors."""

    tags = ("seed 002: form API",)
    routes = (Route("/txt2img", Txt2ImgRequest, "txt2img", content_types=FORM),
              Route("/img2img", Img2ImgRequest, "img2img", content_types=FORM))

    def presented_key(self, call: Call):
        return header_key(call.request) or call.fields.get("key")

    async def to_internal(self, call: Call) -> GenerationRequest:
        req = call.parsed
        if not isinstance(req, Img2ImgRequest):
            return req.to_internal()
        max_px = call.settings.max_image_pixels
        init = check_image(b64decode_strict(req.init_image, "init_image"), max_px, "init_image")
        w, h = req.width, req.height
        if w is None or h is None:
            iw, ih = _fit(*open_image(init, max_px).size)
            w, h = w or iw, h or ih
        return req.model_copy(update={"width": w, "height": h}).to_internal(
            Mode.img2img, strength=req.strength, init_image=init)

    def render(self, call: Call, result: GenerationResult) -> dict:
        return {"images": [{"image_url": i.url, "mime_type": i.mime_type, "seed": i.seed}
                           for i in result.images], "status": "success"}

    def render_error(self, err: SdgateError) -> JSONResponse:
        """{status: "error", message, errors: {field: [messages]}} with the table's status."""
        body = {"status": "error", "message": err.message}
        if err.fields:
            errors: dict[str, list[str]] = {}
            for f in err.fields:
                errors.setdefault(f.field, []).append(f.message)
            body["errors"] = errors
        return JSONResponse(body, status_code=status_of(err))


DIALECT = Form()
router = DIALECT.router()

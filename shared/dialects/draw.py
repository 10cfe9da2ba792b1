"""Seed 000: APIGPT's `POST /v1/draw` (prompt, aspect-ratio size, quantity -> URLs).

Upstream: ../shared/seeds/000. Auth is `Authorization: Bearer <key>` or `API-KEY: <key>`.
Added by sdgate: `model` and `negative_prompt` (optional).
"""

from __future__ import annotations

import time

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from shared.dialects.dialect import Call, Dialect, Route
from shared.errors import SdgateError, status_of
from shared.generation import GenerationRequest, GenerationResult
from shared.sizes import size_for_ratio

MAX_QUANTITY = 4


class DrawRequest(BaseModel):
    """POST /v1/draw body."""

    model_config = ConfigDict(extra="allow")  # upstream passes extra keys through; we log them

    prompt: str = Field(min_length=1)
    size: str = "1:1"
    quantity: int = Field(1, ge=1, le=MAX_QUANTITY)
    # -- sdgate additions --
    model: str | None = None
    negative_prompt: str = ""

    def to_internal(self, native: int) -> GenerationRequest:
        width, height = size_for_ratio(self.size, native)
        return GenerationRequest(model=self.model, prompt=self.prompt,
                                 negative_prompt=self.negative_prompt, width=width,
                                 height=height, num_images=self.quantity)


class Draw(Dialect):
    """APIGPT's draw API: OpenAI-style errors, URLs in the answer."""

    tags = ("seed 000: /v1/draw",)
    routes = (Route("/v1/draw", DrawRequest, "draw"),)

    async def to_internal(self, call: Call) -> GenerationRequest:
        return call.parsed.to_internal(call.native)

    def render(self, call: Call, result: GenerationResult) -> dict:
        req = call.parsed
        return {"urls": [i.url for i in result.images], "object": "draw", "prompt": req.prompt,
                "model": result.model, "created": call.created, "end_at": int(time.time())}

    def render_error(self, err: SdgateError) -> JSONResponse:
        """OpenAI-style {"error": {message, type, param, code}} (APIGPT is an OpenAI-style
        gateway)."""
        return JSONResponse({"error": {"message": err.message, "type": type(err).__name__,
                                       "param": err.param, "code": err.code}},
                            status_code=status_of(err))


DIALECT = Draw()
router = DIALECT.router()

"""What every dialect router shares: capped body reading, validation, auth, and error rendering.

Each dialect gets its own APIRoute class, so a malformed request to one API is answered in that
API's own error envelope (never another dialect's, never FastAPI's default).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Callable
from urllib.parse import parse_qsl

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from shared.errors import (GenerationFailed, InvalidRequest, PayloadTooLarge, SdgateError,
                           Unauthorized, from_pydantic)

log = logging.getLogger(__name__)

ErrorRenderer = Callable[[SdgateError], Response]


def dialect_route(render: ErrorRenderer) -> type[APIRoute]:
    """An APIRoute class whose handler renders every failure with `render`."""

    class DialectRoute(APIRoute):
        def get_route_handler(self):
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                try:
                    return await handler(request)
                except SdgateError as e:
                    return render(e)
                except RequestValidationError as e:
                    return render(from_pydantic(e))
                except Exception as e:  # never a bare 500 page: the dialect's envelope
                    log.exception("unhandled error on %s", request.url.path)
                    return render(GenerationFailed(f"internal error: {type(e).__name__}"))

            return guarded

    return DialectRoute


async def read_capped(request: Request) -> bytes:
    """The raw body, refusing more than settings.max_body_bytes with 413."""
    limit = request.app.state.settings.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body of {declared} bytes is over the {limit} byte limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is over the {limit} byte limit")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # lets request.form() parse what was already read
    return body


async def read_fields(request: Request) -> dict:
    """The body as a dict, from JSON, a url-encoded form or a multipart form."""
    body = await read_capped(request)
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "application/x-www-form-urlencoded":
        return dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
    if ctype == "multipart/form-data":
        form = await request.form()
        out = {}
        for k, v in form.multi_items():
            out[k] = await v.read() if hasattr(v, "read") else v
        return out
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidRequest(f"body is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise InvalidRequest("body must be a JSON object")
    return data


def validate(model: type[BaseModel], data: dict, prefix: str = ""):
    """Build a request model, turning pydantic's errors into ValidationFailed."""
    try:
        obj = model.model_validate(data)
    except ValidationError as e:
        raise from_pydantic(e, prefix) from e
    extra = getattr(obj, "model_extra", None)
    if extra:
        log.info("%s: ignoring unknown fields %s", model.__name__, sorted(extra))
    return obj


def header_key(request: Request) -> str | None:
    """The API key from `Authorization: Bearer`, `API-KEY` or `X-API-Key` headers."""
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("api-key") or request.headers.get("x-api-key")


def check_key(request: Request, presented: str | None) -> None:
    """Refuse a missing or wrong key when keys are configured (constant-time compare)."""
    keys = request.app.state.settings.keys()
    if not keys:
        return
    if not presented:
        raise Unauthorized("Missing API key")
    if not any(hmac.compare_digest(presented.encode(), k.encode()) for k in keys):
        raise Unauthorized("Invalid API key")


def backend(request: Request):
    """The app's Backend."""
    return request.app.state.backend

"""What every dialect router shares: capped body reading, validation, auth, and error rendering.

Each dialect gets its own APIRoute class, so a malformed request to one API is answered in that
API's own error envelope (never another dialect's, never FastAPI's default).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import math
import uuid
from collections.abc import Callable
from urllib.parse import parse_qsl

import anyio
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError

from shared.accounts import metering
from shared.admission import check_limits
from shared.errors import (ClientGone, GenerationFailed, Interrupted, InvalidRequest,
                           PayloadTooLarge, SdgateError, Unauthorized, from_pydantic)
from shared.generation import GenerationRequest, GenerationResult
from shared.progress import TASKS

MAX_JSON_DEPTH = 32  # deeper bodies are refused before any model sees them
MAX_FORM_FIELDS = 200  # multipart / url-encoded fields (OpenAI edits send a handful)
ANONYMOUS = ""  # the owner of work done with no key (an open local server)

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
                except ClientGone as e:
                    log.info("%s: %s", request.url.path, e.message)
                    return rendered(e)
                except SdgateError as e:
                    return rendered(e)
                except (RequestValidationError, ValidationError) as e:
                    return rendered(from_pydantic(e))
                except Exception as e:  # never a bare 500 page: the dialect's envelope
                    log.exception("unhandled error on %s", request.url.path)
                    return rendered(GenerationFailed(f"internal error: {type(e).__name__}"))

            def rendered(err: SdgateError) -> Response:
                response = render(err)
                if err.retry_after is not None:
                    response.headers["Retry-After"] = str(max(1, math.ceil(err.retry_after)))
                return response

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
        pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True,
                          max_num_fields=MAX_FORM_FIELDS) if _few_fields(body) else None
        if pairs is None:
            raise InvalidRequest(f"form body has more than {MAX_FORM_FIELDS} fields")
        return dict(pairs)
    if ctype == "multipart/form-data":
        return await _multipart(request)
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except RecursionError as e:
        raise InvalidRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels") from e
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidRequest(f"body is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise InvalidRequest("body must be a JSON object")
    if _depth(data) > MAX_JSON_DEPTH:
        raise InvalidRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    return data


def _few_fields(body: bytes) -> bool:
    return body.count(b"&") < MAX_FORM_FIELDS


def _depth(value) -> int:
    """Nesting depth of a JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_JSON_DEPTH:
            break
        children = item.values() if isinstance(item, dict) else item if isinstance(
            item, list) else ()
        stack.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


async def _multipart(request: Request) -> dict:
    """A multipart body's fields (files as bytes); a malformed one is the client's mistake."""
    from starlette.exceptions import HTTPException
    from starlette.formparsers import MultiPartException

    try:
        form = await request.form(max_fields=MAX_FORM_FIELDS, max_files=MAX_FORM_FIELDS)
    except HTTPException as e:  # starlette's own wrapping of a MultiPartException
        raise InvalidRequest(f"malformed multipart/form-data body: {e.detail}") from e
    except (MultiPartException, AssertionError, KeyError, ValueError) as e:
        raise InvalidRequest(f"malformed multipart/form-data body: {e or type(e).__name__}") from e
    out = {}
    for k, v in form.multi_items():
        out[k] = await v.read() if hasattr(v, "read") else v
    return out


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


ERROR_RESPONSES = {str(code): {"description": text} for code, text in (
    (400, "invalid request"), (401, "missing or wrong API key"), (404, "unknown model, sampler "
    "or job"), (413, "body too large"), (422, "invalid fields"), (429, "rate limited"),
    (503, "busy: retry after Retry-After seconds"))}


def body(model: type[BaseModel], *content_types: str) -> dict:
    """Route keywords documenting a raw-body route's request schema and error answers in
    /openapi.json (the routes read their own bodies so each dialect renders its own errors)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    defs = schema.pop("$defs", {})
    content = {t: {"schema": schema} for t in content_types or ("application/json",)}
    return {"openapi_extra": {"requestBody": {"required": True, "content": content},
                              "x-sdgate-schemas": defs},
            "responses": ERROR_RESPONSES}


def openapi_with_bodies(app) -> dict:
    """The app's OpenAPI document with each route's body models under components/schemas."""
    if app.openapi_schema:
        return app.openapi_schema
    from fastapi.openapi.utils import get_openapi

    doc = get_openapi(title=app.title, version=app.version, description=app.description,
                      routes=app.routes)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    for item in doc.get("paths", {}).values():
        for operation in item.values():
            schemas.update(operation.pop("x-sdgate-schemas", {}) or {})
    app.openapi_schema = doc
    return doc


def header_key(request: Request) -> str | None:
    """The API key from `Authorization: Bearer`, `API-KEY` or `X-API-Key` headers."""
    auth = request.headers.get("authorization", "")
    if auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    return request.headers.get("api-key") or request.headers.get("x-api-key")


def key_id(key: str) -> str:
    """A stable, non-secret id for an API key: what jobs and tasks record as their owner."""
    return "key_" + hashlib.sha256(key.encode()).hexdigest()[:16]


def check_key(request: Request, presented) -> None:
    """Refuse a missing or wrong key when keys are configured (constant-time compare), and
    record the caller's key id as `request.state.key_id` (the owner of its work)."""
    if presented is not None and not isinstance(presented, str):
        raise Unauthorized("Invalid API key: the key must be a string")
    settings = request.app.state.settings
    keys = settings.keys()
    request.state.key_id = key_id(presented) if presented else ANONYMOUS
    if not keys and not settings.database_url:
        return
    if not presented:
        raise Unauthorized("Missing API key")
    if any(hmac.compare_digest(presented.encode(), k.encode()) for k in keys):
        return
    if settings.database_url:
        from shared.accounts import access  # only servers with a key database pay for SQLAlchemy
        if access.admit_stored(request, presented):  # scopes, requests per minute
            return
    raise Unauthorized("Invalid API key")


def owner(request: Request) -> str:
    """The key id of the caller (set by check_key), ANONYMOUS on an open server."""
    return getattr(request.state, "key_id", ANONYMOUS)


def backend(request: Request):
    """The app's Backend."""
    return request.app.state.backend


async def admit(request: Request, internal: GenerationRequest) -> GenerationRequest:
    """The checks every generation passes before any work: the caller's key id stamped as the
    owner, a task id, and the compute and prompt limits. (The generic endpoint has already
    resolved the model: shared/dialects/dialect.py.)"""
    internal = internal.model_copy(update={"owner": owner(request),
                                           "task_id": internal.task_id or uuid.uuid4().hex})
    async with metering.refusing(request, internal):  # a refusal is metered too
        check_limits(internal, request.app.state.settings)
        await check_loras(backend(request).registry, internal)
    return internal


async def check_loras(registry, internal: GenerationRequest) -> None:
    """Every LoRA the request names (fields and `<lora:...>` prompt tags) is installed, before
    any work: a background job is refused at once instead of failing later on the GPU. The
    LoRA folder is listed (in a thread) only when there is a LoRA to find."""
    from shared.engine import loras, prompts

    refs = internal.loras + loras.refs_from_tags(prompts.extract_networks(internal.prompt)[1])
    if refs:
        await anyio.to_thread.run_sync(loras.resolve, registry, refs)


async def generate(request: Request, internal: GenerationRequest, *, keep_bytes: bool = False,
                   allow_interrupted: bool = False) -> GenerationResult:
    """An admitted request through the bounded queue to the engine, interrupted when the client
    disconnects; an interrupted result is an error unless the shape can say so itself (A1111)."""
    await metering.begin(request, internal)  # the key's concurrency and quota; usage record
    async with metering.finishing(request, internal) as finished:  # ...and its end
        with request.app.state.admission:
            work = asyncio.ensure_future(backend(request).generate(internal,
                                                                   keep_bytes=keep_bytes))
            while True:
                done, _ = await asyncio.wait({work}, timeout=0.25)
                if done:
                    break
                if await request.is_disconnected():
                    await TASKS.ainterrupt(internal.task_id, internal.owner)
                    work.add_done_callback(_swallow)  # it ends at its next step; nobody awaits
                    raise ClientGone("client disconnected; its generation was interrupted")
            result = work.result()
        await finished(result)
    if result.interrupted and not allow_interrupted:
        raise Interrupted("the generation was interrupted before it finished")
    return result


def _swallow(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()

"""The one dialect contract, and the one generic endpoint every generation route runs through.

Each API shape implements `Dialect` in its own module; `Dialect.router()` registers its
generation routes on `endpoint()`, which always takes the same steps in the same order:

    read -> authenticate -> parse -> model resolved (once, in a thread) -> to_internal
         -> admit (owner, task id, limits) -> execute -> render      (render_error for failures)

A route whose work is an engine operation rather than a generation (ModelsLab's super
resolution) overrides `resolve` (its own model lookup) and `admit` (no GenerationRequest).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import anyio
from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from shared.dialects.base import admit as admit_generation
from shared.dialects.base import (body, check_key, dialect_route, generate, header_key,
                                  read_fields, validate)
from shared.errors import InvalidRequest
from shared.generation import GenerationRequest


@dataclass(frozen=True)
class Route:
    """One generation route of a dialect: path, body model, and the dialect's own per-route
    options (a mode, an API version ...)."""

    path: str
    model: type[BaseModel]
    name: str
    options: dict = field(default_factory=dict)
    content_types: tuple[str, ...] = ("application/json",)


@dataclass
class Call:
    """One request on its way through the generic endpoint (what each step adds)."""

    request: Request
    route: Route
    created: int = 0
    fields: dict = field(default_factory=dict)  # read
    parsed: Any = None  # parse: the dialect's request model
    model: Any = None  # the resolved ModelInfo (registry.resolve of model_name)
    native: int = 512  # that model's native side, pixels
    internal: GenerationRequest | None = None  # to_internal, then admitted
    extra: dict = field(default_factory=dict)  # the dialect's own per-call data

    @property
    def settings(self):
        return self.request.app.state.settings

    @property
    def backend(self):
        return self.request.app.state.backend


class Dialect:
    """One API shape. Override what differs; the defaults are the common case."""

    name: str = ""
    tags: tuple[str, ...] = ()
    routes: tuple[Route, ...] = ()

    async def read(self, call: Call) -> dict:
        """The request's fields (JSON, url-encoded or multipart), size-capped."""
        return await read_fields(call.request)

    def presented_key(self, call: Call):
        """The API key the client sent (None: none)."""
        return header_key(call.request)

    def authenticate(self, call: Call) -> None:
        """Refuse a missing or wrong key; records the caller's key id (the owner)."""
        check_key(call.request, self.presented_key(call))

    def parse(self, call: Call):
        """The dialect's request model from the fields (validation errors are 4xx)."""
        return validate(call.route.model, call.fields)

    def model_name(self, call: Call) -> str | None:
        """The model the request names (None: the server's default)."""
        return getattr(call.parsed, "model", None)

    async def resolve(self, call: Call) -> None:
        """Resolve `model_name` once, in a thread: call.model and its native side."""
        registry = call.backend.registry
        name = self.model_name(call)
        if name is not None and not isinstance(name, str):
            raise InvalidRequest(f"the model name must be a string, not {name!r}",
                                 param="model")
        call.model = await anyio.to_thread.run_sync(registry.resolve, name)
        call.native = await anyio.to_thread.run_sync(registry.native_size, call.model)

    async def to_internal(self, call: Call) -> GenerationRequest:
        """The internal request (images decoded here)."""
        raise NotImplementedError

    async def admit(self, call: Call, internal):
        """The checks before any work: owner, task id, limits (shared.dialects.base.admit)."""
        return await admit_generation(call.request, internal)

    async def execute(self, call: Call):
        """Run the admitted request; the default generates and waits for the result."""
        return await generate(call.request, call.internal)

    def render(self, call: Call, result) -> Response | dict:
        """The dialect's success body."""
        raise NotImplementedError

    def render_error(self, err) -> Response:
        """The dialect's error envelope for any SdgateError."""
        raise NotImplementedError

    def router(self, **kwargs) -> APIRouter:
        """An APIRouter with this dialect's error rendering and its generation routes."""
        router = APIRouter(route_class=dialect_route(self.render_error),
                           tags=list(self.tags), **kwargs)
        for route in self.routes:
            router.add_api_route(route.path, endpoint(self, route), methods=["POST"],
                                 name=route.name, **body(route.model, *route.content_types))
        return router


def endpoint(dialect: Dialect, route: Route):
    """The generic endpoint: every generation route of every dialect runs this."""

    async def run(request: Request):
        call = Call(request, route, created=int(time.time()))
        call.fields = await dialect.read(call)
        dialect.authenticate(call)
        call.parsed = dialect.parse(call)
        await dialect.resolve(call)
        call.internal = await dialect.admit(call, await dialect.to_internal(call))
        return dialect.render(call, await dialect.execute(call))

    run.__name__ = route.name
    return run

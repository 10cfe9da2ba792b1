"""Prometheus /metrics and a request id (X-Request-ID) on every response and log line."""
from __future__ import annotations

import logging
import re
import time
import uuid

from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

log = logging.getLogger("sdgate.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def shape_of(path: str) -> str:
    """The API shape a path belongs to (a label with few values, never the raw path)."""
    for prefix, shape in (("/sdapi/", "a1111"), ("/reactor/", "reactor"), ("/api/v", "modelslab"),
                          ("/v1/images", "openai"), ("/v1/models", "openai"), ("/v1/draw", "draw"),
                          ("/txt2img", "form"), ("/img2img", "form")):
        if path.startswith(prefix):
            return shape
    return "other"


def install(app: FastAPI) -> None:
    # one registry per app, so several apps in one process (tests) do not collide
    registry = CollectorRegistry()
    requests = Counter("sdgate_requests", "HTTP requests", ["shape", "status"], registry=registry)
    seconds = Histogram("sdgate_request_seconds", "HTTP request duration", ["shape"],
                        registry=registry)
    app.state.metrics_registry = registry

    # pure ASGI (not BaseHTTPMiddleware): streaming and client-disconnect checks stay untouched
    class Observe:
        def __init__(self, inner):
            self.inner = inner

        async def __call__(self, scope, receive, send):
            if scope["type"] != "http":
                return await self.inner(scope, receive, send)
            given = dict(scope.get("headers") or []).get(b"x-request-id", b"").decode("latin-1")
            rid = given if _SAFE_ID.match(given) else uuid.uuid4().hex  # no header injection
            scope.setdefault("state", {})["request_id"] = rid
            start, status = time.perf_counter(), [500]

            async def send_with_id(message):
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                    message.setdefault("headers", [])
                    message["headers"] = list(message["headers"]) + [(b"x-request-id",
                                                                      rid.encode())]
                await send(message)
            try:
                await self.inner(scope, receive, send_with_id)
            finally:
                shape = shape_of(scope["path"])
                requests.labels(shape, str(status[0])).inc()
                seconds.labels(shape).observe(time.perf_counter() - start)
                log.info("request_id=%s %s %s %s", rid, scope["method"], scope["path"], status[0])

    app.add_middleware(Observe)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

"""Prometheus /metrics and a request id (X-Request-ID) on every response and log line."""
from __future__ import annotations

import contextvars
import json
import logging
import re
import time
import uuid

from fastapi import FastAPI, Response
from types import SimpleNamespace

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram,
                               generate_latest)

log = logging.getLogger("sdgate.access")
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")


def request_id() -> str:
    """The id of the request being handled ("" outside one): for logs and error bodies."""
    return _request_id.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id (SDGATE_LOG_FORMAT)."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name,
               "message": record.getMessage(),
               "request_id": getattr(record, "request_id", None) or request_id() or None}
        for name in ("method", "path", "status", "shape", "duration_ms"):
            if hasattr(record, name):
                out[name] = getattr(record, name)
        if record.exc_info:
            out["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(out)


def configure_logging(fmt: str = "text", level: int = logging.INFO) -> dict | None:
    """Root logging as text or JSON lines; returns uvicorn's log_config (None: use ours)."""
    handler = logging.StreamHandler()
    if fmt == "json":
        import time as _time
        formatter = JsonFormatter()
        formatter.converter = _time.gmtime
        handler.setFormatter(formatter)
    else:
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    if fmt == "json":  # uvicorn's loggers propagate to the JSON root instead of their own format
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            logging.getLogger(name).handlers = []
            logging.getLogger(name).propagate = True
        return None
    import uvicorn.config
    return uvicorn.config.LOGGING_CONFIG


def shape_of(path: str) -> str:
    """The API shape a path belongs to (a label with few values, never the raw path)."""
    for prefix, shape in (("/sdapi/", "a1111"), ("/v1/sdapi/", "a1111"), ("/controlnet/", "a1111"),
                          ("/reactor/", "reactor"), ("/v1/reactor/", "reactor"),
                          ("/api/v", "modelslab"),
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
    # generations, from shared.accounts.metering (records or not, these are always counted)
    app.state.metrics = SimpleNamespace(
        generations=Counter("sdgate_generations", "generations by API shape and result "
                            "(ok, failed, refused, interrupted)", ["shape", "result"],
                            registry=registry),
        images=Counter("sdgate_images", "images delivered", ["shape", "model"],
                       registry=registry),
        gpu_seconds=Counter("sdgate_gpu_seconds", "worker seconds spent generating", ["model"],
                            registry=registry),
        generation_seconds=Histogram("sdgate_generation_seconds", "worker seconds per "
                                     "successful generation", ["model"], registry=registry,
                                     buckets=(.1, .25, .5, 1, 2, 4, 8, 15, 30, 60, 120, 300)),
        errors=Counter("sdgate_errors", "failed or refused generations by error code", ["code"],
                       registry=registry))
    queue = Gauge("sdgate_queue_depth", "generations queued or running in this server "
                  "(requests waiting on the engine plus background jobs)", registry=registry)
    queue.set_function(lambda: _queue_depth(app))

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
            token = _request_id.set(rid)
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
                took = time.perf_counter() - start
                log.info("request_id=%s %s %s %s", rid, scope["method"], scope["path"], status[0],
                         extra={"request_id": rid, "method": scope["method"], "path": scope["path"],
                                "status": status[0], "shape": shape,
                                "duration_ms": round(took * 1000, 1)})
                _request_id.reset(token)

    app.add_middleware(Observe)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def _queue_depth(app) -> float:
    admission = getattr(app.state, "admission", None)
    jobs = getattr(app.state, "jobs", None)
    return (admission.active if admission else 0) + (jobs.queue() if jobs else 0)

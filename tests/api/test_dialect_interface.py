"""One dialect interface: every generation route of every API shape runs the one generic endpoint,
which resolves the model once, off the event loop, before any dialect-specific work."""

from __future__ import annotations

import importlib
import threading

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from shared.dialects.dialect import Dialect
from tests.http_helpers import b64png

MODULES = [importlib.import_module(f"shared.dialects.{m}") for m in (
    "draw", "form", "openai_images.router", "modelslab", "a1111.router")]
GENERATION_PATHS = {"/v1/draw", "/txt2img", "/img2img", "/v1/images/generations",
                    "/v1/images/edits", "/v1/images/variations", "/api/v3/text2img",
                    "/api/v4/dreambooth/img2img", "/api/v5/controlnet", "/api/v6/images/inpaint"}


def test_every_generation_route_is_the_generic_endpoint():
    served = set()
    for module in MODULES:
        dialect = module.DIALECT
        assert isinstance(dialect, Dialect)
        routes = {r.path: r for r in module.router.routes if isinstance(r, APIRoute)}
        for route in dialect.routes:
            endpoint = routes[route.path].endpoint
            assert endpoint.__qualname__ == "endpoint.<locals>.run", route.path
            assert endpoint.__module__ == "shared.dialects.dialect"
            served.add(route.path)
    # A1111's /txt2img and /img2img share the form API's paths under its /sdapi/v1 prefix
    assert GENERATION_PATHS <= served


class CountingRegistry:
    """The real registry, counting resolve() calls and noting the thread each ran on."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def resolve(self, name):
        self.calls.append((name, threading.current_thread() is threading.main_thread()))
        return self.inner.resolve(name)

    def __getattr__(self, name):
        return getattr(self.inner, name)


BODIES = [
    ("/v1/draw", {"json": {"prompt": "a cube", "size": "1:1"}}),
    ("/txt2img", {"data": {"prompt": "a cube", "width": "64", "height": "64",
                           "num_inference_steps": "2"}}),
    ("/v1/images/generations", {"json": {"prompt": "a cube", "size": "256x256",
                                         "quality": "low"}}),
    ("/sdapi/v1/txt2img", {"json": {"prompt": "a cube", "width": 64, "height": 64,
                                    "steps": 2}}),
    ("/sdapi/v1/img2img", {"json": {"prompt": "a cube", "init_images": [b64png()],
                                    "width": 64, "height": 64, "steps": 4}}),
    ("/api/v3/text2img", {"json": {"prompt": "a cube", "width": 64, "height": 64,
                                   "samples": 1, "num_inference_steps": 2}}),
]


@pytest.mark.parametrize("path,kw", BODIES, ids=[p for p, _ in BODIES])
def test_the_model_is_resolved_once_in_a_worker_thread(make_app, path, kw):
    app = make_app(sync_wait_seconds=30)
    counting = CountingRegistry(app.state.backend.registry)
    app.state.backend = _with_registry(app.state.backend, counting)
    with TestClient(app) as c:
        r = c.post(path, **kw)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body.get("status", "success") == "success", body
    assert len(counting.calls) == 1, counting.calls
    assert counting.calls[0][1] is False  # never on the event loop's thread


def test_an_unknown_model_is_refused_by_the_generic_path_in_each_shape(make_app):
    with TestClient(make_app()) as c:
        assert c.post("/v1/draw", json={"prompt": "x", "model": "nope"}).status_code == 404
        assert c.post("/txt2img", data={"prompt": "x", "model": "nope"}).status_code == 404
        r = c.post("/v1/images/generations", json={"prompt": "x", "model": "nope"})
        assert r.status_code == 404 and r.json()["error"]["param"] == "model"
        r = c.post("/sdapi/v1/txt2img", json={"prompt": "x", "override_settings": {
            "sd_model_checkpoint": "nope"}})
        assert r.status_code == 404
        r = c.post("/api/v4/dreambooth", json={"prompt": "x", "model_id": "nope"})
        assert r.json()["status"] == "error"
        r = c.post("/sdapi/v1/txt2img", json={"prompt": "x", "override_settings": {
            "sd_model_checkpoint": 7}})
        assert r.status_code in (400, 422), r.text  # not a crash on a non-string name


def _with_registry(backend, registry):
    """A view of `backend` whose registry is `registry` (everything else delegated)."""

    class View:
        def __getattr__(self, name):
            return getattr(backend, name)

    view = View()
    view.registry = registry
    view.storage = backend.storage
    return view


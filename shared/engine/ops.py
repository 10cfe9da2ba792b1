"""Named engine operations besides generation (upscale, interrogate, face swap, detect, ...).

Each operation takes one torch-free pydantic request and returns one pydantic result, so it can
cross to the GPU class on Modal exactly like a GenerationRequest does. A feature registers its
implementation with `@op("name")` in its own engine module and lists that module in MODULES, which
is imported only when the operation is first called (no onnxruntime or spandrel at start-up).

    @op("upscale")
    def upscale(engine, req: UpscaleRequest) -> UpscaleResult: ...

Callers go through `Backend.op(name, req)`: LocalBackend runs it in a worker thread here;
RemoteBackend sends it to the GPU class's `op` method.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from shared.errors import NotFound

# operation name -> the engine module whose import registers it
MODULES: dict[str, str] = {
    "controlnet_detect": "shared.engine.controlnet",
    "upscale": "shared.engine.upscalers",
    "face_swap": "shared.engine.faces.swap",
    "face_restore": "shared.engine.faces.restore",
    "translate": "shared.engine.translator",
    "enhance_prompt": "shared.engine.prompt_enhancer",
    "adetailer": "shared.engine.adetailer",
    "interrogate": "shared.engine.interrogator",
}

_OPS: dict[str, Callable] = {}


def op(name: str):
    """Decorator: register `fn(engine, request) -> result` as the operation `name`."""
    def wrap(fn):
        _OPS[name] = fn
        return fn
    return wrap


def resolve(name: str) -> Callable:
    """The implementation of an operation, importing its module on first use."""
    if name not in _OPS and name in MODULES:
        importlib.import_module(MODULES[name])
    try:
        return _OPS[name]
    except KeyError:
        raise NotFound(f"unknown engine operation {name!r}") from None


def run(engine, name: str, req):
    """Run one operation on an engine."""
    return resolve(name)(engine, req)

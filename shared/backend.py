"""A backend runs a GenerationRequest and stores its images: engine + storage, in or out of process.

The web app only talks to a Backend. Locally it is `LocalBackend`; on Modal the web container
uses a backend that calls the GPU class, which runs `LocalBackend.run` next to the GPU.
"""

from __future__ import annotations

import time
from typing import Protocol

import anyio

from shared.generation import GenerationRequest, GenerationResult
from shared.storage import Storage, image_key, new_job_id

EXT = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}


class Backend(Protocol):
    """What the web layer needs from whatever generates images."""

    registry: object  # shared.engine.registry.ModelRegistry: model names, sizes (no GPU needed)
    storage: Storage  # where results are written (planned URLs, local /files)

    async def generate(self, req: GenerationRequest, *, job_id: str | None = None,
                       keep_bytes: bool = False) -> GenerationResult:
        """Generate and store; images carry URLs, and their bytes when keep_bytes."""

    def native_size(self, model: str | None) -> int:
        """The native image side of a model, in pixels."""

    async def op(self, name: str, req):
        """Run a named engine operation (shared/engine/ops.py) next to the engine."""

    def warm(self, model: str | None = None) -> None:
        """Load a model ahead of the first request (a no-op where the engine is remote)."""

    def memory(self) -> dict:
        """The engine's GPU memory in A1111's /memory shape, or {"error": why not}."""


def planned_urls(storage: Storage, job_id: str, n: int, mime: str = "image/png") -> list[str]:
    """The URLs a job's images will have once stored (ModelsLab's future_links)."""
    return [storage.url_for(image_key(job_id, i, EXT[mime])) for i in range(n)]


def store_result(storage: Storage, result: GenerationResult, job_id: str,
                 keep_bytes: bool = False) -> GenerationResult:
    """Upload every image; a URL is set only once its object is written."""
    t0 = time.perf_counter()
    for i, img in enumerate(result.images):
        img.url = storage.put(image_key(job_id, i, EXT[img.mime_type]), img.data, img.mime_type)
        if not keep_bytes:
            img.data = None
    result.job_id = job_id
    result.timings["upload"] = time.perf_counter() - t0
    return result


class LocalBackend:
    """Engine and storage in this process; generation runs in a worker thread.

    Concurrent compatible requests are batched (shared/engine/batching.py) unless max_batch is 1;
    both knobs default to the settings (SDGATE_MAX_BATCH, SDGATE_BATCH_WAIT_MS).
    """

    def __init__(self, engine, storage: Storage, max_batch: int = 1, batch_wait_ms: float = 0.0,
                 threads: int = 4):
        from shared.engine import batching

        self.engine = batching.wrap(engine, max_batch, batch_wait_ms)
        self.storage = storage
        self.threads = threads  # generation's own worker threads: others stay free for routes
        self._limiter = None

    @classmethod
    def from_settings(cls, engine, storage: Storage, settings) -> "LocalBackend":
        """Batching and generation threads as the settings say (read once by the caller)."""
        return cls(engine, storage, settings.max_batch, settings.batch_wait_ms,
                   settings.generation_threads)

    def run(self, req: GenerationRequest, job_id: str | None = None,
            keep_bytes: bool = False) -> GenerationResult:
        """Generate and store, synchronously."""
        result = self.engine.generate(req)
        return store_result(self.storage, result, job_id or new_job_id(), keep_bytes)

    async def generate(self, req: GenerationRequest, *, job_id: str | None = None,
                       keep_bytes: bool = False) -> GenerationResult:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.threads)
        return await anyio.to_thread.run_sync(self.run, req, job_id, keep_bytes,
                                              limiter=self._limiter)

    def native_size(self, model: str | None) -> int:
        return self.engine.native_size(model)

    def run_op(self, name: str, req):
        """A named engine operation (upscale, interrogate, ...), synchronously."""
        from shared.engine import ops

        return ops.run(self.engine, name, req)

    async def op(self, name: str, req):
        return await anyio.to_thread.run_sync(self.run_op, name, req)

    @property
    def registry(self):
        """The model registry (model lists), as RemoteBackend has one too."""
        return self.engine.registry

    def warm(self, model: str | None = None) -> None:
        """Load a model ahead of the first request."""
        self.engine.warm(model)

    def memory(self) -> dict:
        """GPU memory of this process (A1111's /memory)."""
        from shared.engine.stats import cuda_memory

        return cuda_memory()

    def memory_report(self) -> dict:
        """This machine's RAM and GPU memory, for a web tier elsewhere: {"ram", "cuda", "host"}."""
        import os
        import socket

        page = os.sysconf("SC_PAGE_SIZE")
        total, free = os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
        return {"ram": {"free": free, "used": total - free, "total": total},
                "cuda": self.memory(), "host": socket.gethostname()}

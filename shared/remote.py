"""A Backend whose generation runs in another process: on Modal, the GPU class behind the web app.

The web container holds no engine. It reads the same weights volume for model names and sizes
(no GPU wakes up for that) and awaits `call(req, job_id, keep_bytes)`, which generates and uploads
next to the GPU and sends back URLs and metadata (image bytes only when asked for).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from shared.config import Settings
from shared.engine.registry import ModelRegistry
from shared.errors import GenerationFailed, SdgateError
from shared.generation import GenerationRequest, GenerationResult
from shared.storage import Storage, make_storage, new_job_id

log = logging.getLogger(__name__)

RemoteCall = Callable[[GenerationRequest, str, bool], Awaitable[GenerationResult]]
RemoteOp = Callable[[str, object], Awaitable[object]]  # (operation name, request) -> result


class RemoteBackend:
    """Implements the Backend protocol by awaiting a remote call (Modal: `.remote.aio`)."""

    def __init__(self, call: RemoteCall, registry: ModelRegistry, storage: Storage | None = None,
                 op_call: RemoteOp | None = None, memory_call=None):
        self.call = call
        self.op_call = op_call
        self.memory_call = memory_call  # async () -> the GPU side's {"ram", "cuda", "host"}
        self.registry = registry
        self.storage = storage  # the same bucket the GPU side writes to (planned URLs, /files)

    async def generate(self, req: GenerationRequest, *, job_id: str | None = None,
                       keep_bytes: bool = False) -> GenerationResult:
        # The id is chosen here, so a retried input overwrites the same object keys.
        job_id = job_id or new_job_id()
        try:
            return await self.call(req, job_id, keep_bytes)
        except SdgateError:
            raise  # the GPU side's own error (pickled across), rendered by the dialect
        except Exception as e:
            log.exception("remote generation %s failed", job_id)
            raise GenerationFailed(f"remote generation failed: {type(e).__name__}: {e}") from e

    def native_size(self, model: str | None) -> int:
        return self.registry.native_size(self.registry.resolve(model))

    def warm(self, model: str | None = None) -> None:
        """The GPU class warms its own default model when its container starts."""

    def memory(self) -> dict:
        """The GPU side's memory report (called from a sync route's worker thread), or why not."""
        import anyio

        if self.memory_call is None:
            return {"error": "unavailable: the GPU runs in another container"}
        try:
            return anyio.from_thread.run(self.memory_call)
        except Exception as e:
            return {"error": f"the GPU side did not report its memory: {type(e).__name__}"}

    async def op(self, name: str, req):
        """A named engine operation, run by the GPU class (shared/engine/ops.py)."""
        if self.op_call is None:
            raise GenerationFailed(f"engine operation {name!r} has no remote endpoint")
        try:
            return await self.op_call(name, req)
        except SdgateError:
            raise
        except Exception as e:
            log.exception("remote operation %s failed", name)
            raise GenerationFailed(f"remote {name} failed: {type(e).__name__}: {e}") from e


def remote_backend(settings: Settings, call: RemoteCall, op_call: RemoteOp | None = None,
                   memory_call=None) -> RemoteBackend:
    """A RemoteBackend on the settings' models folder and storage."""
    return RemoteBackend(call, ModelRegistry(settings.models_dir, settings.default_model),
                         make_storage(settings), op_call, memory_call)

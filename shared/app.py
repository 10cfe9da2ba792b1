"""The FastAPI app factory: settings, backend, file serving, and every API shape in one block."""

from __future__ import annotations

import logging
import mimetypes

from fastapi import FastAPI
from fastapi.responses import FileResponse, JSONResponse

from shared import __version__
from shared.admission import Admission
from shared.config import Settings
from shared.dialects import a1111, draw, form, modelslab, openai_images, reactor
from shared.dialects.base import openapi_with_bodies
from shared.dialects.state import DialectState
from shared.errors import NotFound
from shared.jobrunner import JobRunner
from shared.jobs import make_job_store
from shared.retention import Sweeper
from shared.progress import TASKS
from shared.state import State, make_state
from shared.storage import LOCAL_ROUTE, LocalStorage, make_storage

log = logging.getLogger(__name__)


def local_backend(settings: Settings):
    """Engine + storage in this process, from settings."""
    from shared.backend import LocalBackend
    from shared.engine import Engine
    from shared.engine.accel import AccelOptions
    from shared.engine.registry import ModelRegistry

    registry = ModelRegistry(settings.models_dir, settings.default_model)
    engine = Engine(registry, settings.device, settings.max_loaded_models,
                    settings.max_image_pixels, accel=AccelOptions.from_settings(settings),
                    memory_budget_gb=settings.memory_budget_gb,
                    cpu_offload=settings.cpu_offload)
    engine.translator_dir = settings.translator_dir
    return LocalBackend.from_settings(engine, make_storage(settings), settings)


def create_app(settings: Settings | None = None, backend=None, job_store=None,
               job_runner: JobRunner | None = None, state: State | None = None) -> FastAPI:
    """Build the app; `backend` defaults to a LocalBackend, jobs to the settings' file store."""
    settings = settings or Settings()
    backend = backend or local_backend(settings)
    app = FastAPI(title="sdgate", version=__version__,
                  description="Stable Diffusion behind the API shapes its users already call.")
    app.state.settings = settings
    app.openapi = lambda: openapi_with_bodies(app)  # request bodies of raw-body routes
    app.state.backend = backend
    # Cross-process state (progress, flags, per-key A1111 options, spam window): shared/state.py
    app.state.shared_state = state or make_state(settings)
    TASKS.bind(app.state.shared_state)
    app.state.dialect_state = DialectState(app.state.shared_state)
    app.state.admission = Admission(settings.max_queue, settings.busy_retry_seconds)
    # Background jobs (ModelsLab's processing / fetch flow): recovered on start, cancelled on stop.
    app.state.jobs = job_runner or JobRunner(job_store or make_job_store(settings), backend,
                                             settings, state=app.state.shared_state)
    from shared.accounts import metering
    app.state.jobs.on_finish = metering.job_finished(app)  # a job's usage record
    app.router.on_startup.append(app.state.jobs.start)
    app.router.on_shutdown.append(app.state.jobs.stop)
    # Finished jobs and local output files expire (SDGATE_RETENTION_DAYS): shared/retention.py.
    app.state.retention = Sweeper(settings, app.state.jobs.store, backend.storage)
    app.router.on_startup.append(app.state.retention.start)
    app.router.on_shutdown.append(app.state.retention.stop)

    # Every API shape, one block. Each router renders its own errors.
    from shared import observability
    observability.install(app)  # /metrics, X-Request-ID
    app.include_router(form.router)  # seed 002: /txt2img, /img2img
    app.include_router(draw.router)  # seed 000: /v1/draw
    app.include_router(openai_images.router)  # OpenAI: /v1/images/generations, edits, variations
    app.include_router(modelslab.router)  # seed 003: /api/v3/..., /api/v4/dreambooth/...
    for prefix in a1111.PREFIXES:  # seed 001 / A1111: /sdapi/v1 and the gateway's /v1/sdapi/v1
        app.include_router(a1111.router, prefix=prefix)
    for prefix in reactor.PREFIXES:  # ReActor extension: /reactor/* and /v1/reactor/*
        app.include_router(reactor.router, prefix=prefix)
    app.include_router(a1111.controlnet_router)  # sd-webui-controlnet: /controlnet/* at the root
    app.include_router(a1111.adetailer_router)  # ADetailer: /adetailer/v1/* at the root
    from shared.accounts import api as accounts
    app.include_router(accounts.router)  # /v1/usage, /v1/admin/keys
    from shared import console
    app.include_router(console.router)  # the operator page at /

    storage = backend.storage
    if isinstance(storage, LocalStorage):
        @app.get(LOCAL_ROUTE + "/{key:path}", include_in_schema=False)
        def files(key: str):
            try:
                path = storage.path_for(key)
            except NotFound:
                path = None
            if path is None or not path.is_file():
                return JSONResponse({"detail": "Not Found"}, status_code=404)
            media = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            return FileResponse(path, media_type=media)

    @app.get("/health", include_in_schema=False)
    async def health():  # on the event loop: answers while every worker thread generates
        return {"status": "ok", "version": __version__}

    app.include_router(modelslab.fallback)  # last: unknown /api/* paths in ModelsLab's error body
    app.include_router(openai_images.fallback)  # last: unknown /v1/images/*, /v1/models paths
    app.include_router(a1111.fallback)  # last: unknown /sdapi/v1/* paths in A1111's error body
    return app

"""The GPU class: warm pipelines restored from a memory snapshot; one method generates, uploads.

It takes the internal GenerationRequest (never a dialect), runs shared's LocalBackend next to the
GPU, uploads the images to the bucket from here and returns URLs and metadata; image bytes travel
back only when the API shape needs base64 (`keep_bytes`).
"""

import logging

import modal

from functions.app import (MODELS_DIR, app, config, gpu_image, s3_secret, shared_state,
                           weights_volume)
from shared.generation import GenerationRequest, GenerationResult

# What only the GPU container runs; none of it imports torch at module level, so the web
# container (which imports this module for the class handle) needs no torch either.
with gpu_image.imports():
    from shared.backend import LocalBackend
    from shared.config import Settings
    from shared.deploy import require_bucket
    from shared.engine import Engine
    from shared.engine.accel import AccelOptions
    from shared.engine.registry import ModelRegistry
    from shared.errors import ModelNotFound
    from shared.progress import TASKS
    from shared.worker import JobWorker
    from shared.storage import make_storage

log = logging.getLogger("sdgate.generator")


# Scale to zero by default (docs/modal.md prices each knob). The memory snapshot makes a cold
# start a restore of RAM with torch imported and the default model's weights already loaded; the
# opt-in GPU snapshot restores the weights in VRAM too.
@app.cls(
    image=gpu_image,
    gpu=config.gpu,
    volumes={MODELS_DIR: weights_volume},
    secrets=[s3_secret],
    enable_memory_snapshot=True,
    experimental_options={"enable_gpu_snapshot": True} if config.gpu_snapshot else None,
    min_containers=config.gpu_min_containers,
    buffer_containers=config.gpu_buffer_containers,
    max_containers=config.gpu_max_containers or None,
    scaledown_window=config.gpu_scaledown_window,
    timeout=config.gpu_timeout,
)
@modal.concurrent(max_inputs=config.gpu_concurrency)
class Generator:
    @modal.enter(snap=True)
    def load(self):
        """Before the snapshot: load the default model (into RAM, unless GPU snapshot)."""
        settings = Settings()
        registry = ModelRegistry(settings.models_dir, settings.default_model)
        self.engine = Engine(registry, settings.device, settings.max_loaded_models,
                             settings.max_image_pixels, accel=AccelOptions.from_settings(settings),
                             memory_budget_gb=settings.memory_budget_gb,
                             cpu_offload=settings.cpu_offload)
        self.engine.translator_dir = settings.translator_dir  # the `translate` operation's
        self.device = self.engine.device
        if not config.gpu_snapshot:
            self.engine.to("cpu")  # no GPU before a CPU memory snapshot: stage weights in RAM
        try:
            self.engine.warm(settings.default_model)
        except ModelNotFound as e:
            # Start anyway: a container that fails to start is restarted in a loop, billed, and
            # tells the caller nothing; a request gets this error in its own API's envelope.
            log.warning("no model warmed: %s", e.message)

    @modal.enter(snap=False)
    def start(self):
        """After the restore: weights onto the GPU, then storage from the settings as they are now
        (a snapshot outlives secret updates) with a fresh S3 client (no sockets in snapshots)."""
        self.engine.to(self.device)
        settings = Settings()
        if not modal.is_local():
            require_bucket(settings)
        self.backend = LocalBackend.from_settings(self.engine, make_storage(settings), settings)
        self.state = shared_state(settings)
        TASKS.bind(self.state)  # progress out, interrupt / skip flags in, at every step
        self.jobs = JobWorker(self.state, self.backend, settings)

    @modal.method()
    def generate(self, req: GenerationRequest, job_id: str,
                 keep_bytes: bool = False) -> GenerationResult:
        """Generate and upload; images carry URLs (and bytes when keep_bytes)."""
        try:
            return self.backend.run(req, job_id, keep_bytes)
        finally:
            self._report_memory()

    def _report_memory(self) -> None:
        """Leave this container's memory in the store, for /memory (no GPU woken to ask)."""
        try:
            self.state.put("stats:memory", self.backend.memory_report(), ttl=3600)
        except Exception:
            log.exception("memory report")

    @modal.method()
    def op(self, name: str, req):
        """A named engine operation (upscale, interrogate, face swap, ...): shared/engine/ops.py."""
        return self.backend.run_op(name, req)

    @modal.method()
    def run_job(self, job_id: str) -> str | None:
        """A stored job's whole life: generate, upload, finish it once, deliver its webhook
        (shared/worker.py); spawned by the web tier, so no web container has to survive it."""
        import shared.dialects.modelslab  # noqa: F401 - registers the webhook payload

        job = self.jobs.run(job_id)
        self._report_memory()
        return job.status.value if job else None

    @modal.method()
    def memory(self) -> dict:
        """This GPU container's memory (A1111's /memory cuda part), also kept in the store."""
        report = self.backend.memory_report()
        self.state.put("stats:memory", report, ttl=3600)
        return report

    @modal.method()
    def loaded(self) -> list[str]:
        """Models warm in this container (a cheap call that also wakes one up)."""
        return self.engine.cache.loaded()

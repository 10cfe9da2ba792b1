"""The web endpoint: shared's FastAPI app on a CPU container, generating through the GPU class.

Deploy the whole app with `modal deploy -m functions.web` (this module imports the others).
"""

import modal

from functions.app import (MODELS_DIR, api_secret, app, config, s3_secret, shared_state,
                           web_image, weights_volume)
from functions.generator import Generator


class SpawnLauncher:
    """Jobs on Modal: `.spawn()` the GPU class's `run_job`, which lives the job's whole life
    (generate, upload, finish once, webhook) without this container; cancel at the deadline."""

    def __init__(self, run_job, state):
        self.run_job = run_job
        self.state = state

    async def hand_off(self, job_id: str) -> str:
        call = await self.run_job.spawn.aio(job_id)
        return call.object_id

    async def cancel(self, handle: str | None, job) -> None:
        """Stop a job past its deadline where it runs (no GPU left billing for it)."""
        if handle:
            await modal.FunctionCall.from_id(handle).cancel.aio()

    async def depth(self) -> int:
        return 0  # spawned calls wait in Modal's own queue; busy GPUs count in stats:busy


async def memory_report(state) -> dict:
    """The last memory report a GPU container left in the store (asking would wake one)."""
    got = await state.aget("stats:memory")
    return got or {"error": "no GPU container has reported its memory yet"}


# Many requests per container: handlers only await the GPU class, the bucket and the Dict.
# The web container mounts the weights read-only to list models and read sizes without a GPU.
@app.function(
    image=web_image,
    volumes={MODELS_DIR: weights_volume.read_only()},
    secrets=[s3_secret, api_secret],
    min_containers=config.web_min_containers,
    scaledown_window=config.web_scaledown_window,
    timeout=config.web_timeout,
)
@modal.concurrent(max_inputs=config.web_concurrency)
@modal.asgi_app()
def web():
    from shared.app import create_app
    from shared.config import Settings
    from shared.deploy import require_bucket, require_keys
    from shared.remote import remote_backend
    from shared.worker import HandoffRunner

    settings = Settings()
    require_keys(settings)
    require_bucket(settings)
    generator = Generator()
    # A job may queue for a GPU before its own timeout starts: allow ten minutes for that.
    settings = settings.model_copy(update={"job_timeout_seconds": config.gpu_timeout + 600})
    state = shared_state(settings)
    backend = remote_backend(settings, generator.generate.remote.aio, generator.op.remote.aio,
                             lambda: memory_report(state))
    return create_app(settings, backend, state=state, job_runner=HandoffRunner(
        state, settings, SpawnLauncher(generator.run_job, state)))

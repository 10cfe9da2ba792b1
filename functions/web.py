"""The web endpoint: shared's FastAPI app on a CPU container, generating through the GPU class.

Deploy the whole app with `modal deploy -m functions.web` (this module imports the others).
"""

import modal

from functions.app import (MODELS_DIR, api_secret, app, config, jobs_dict, s3_secret,
                           shared_state, web_image, weights_volume)
from functions.generator import Generator
from shared.generation import GenerationRequest, GenerationResult


class SpawnLauncher:
    """Jobs on Modal: `.spawn()` the GPU method; its FunctionCall id finds the run anywhere."""

    def __init__(self, method):
        self.method = method

    async def start(self, req: GenerationRequest, job_id: str, keep_bytes: bool) -> str:
        call = await self.method.spawn.aio(req, job_id, keep_bytes)
        return call.object_id

    def resumable(self, handle: str) -> bool:
        return True  # a FunctionCall id is valid from any container until its result expires

    async def result(self, handle: str, timeout: float) -> GenerationResult | None:
        try:
            return await modal.FunctionCall.from_id(handle).get.aio(timeout=timeout)
        except TimeoutError:  # the built-in one: still running (Modal's own errors are failures)
            return None


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
    from shared.jobrunner import DictJobStore, JobRunner
    from shared.remote import remote_backend

    settings = Settings()
    require_keys(settings)
    require_bucket(settings)
    generator = Generator()
    # A job may queue for a GPU before its own timeout starts: allow ten minutes for that.
    settings = settings.model_copy(update={"job_timeout_seconds": config.gpu_timeout + 600})
    backend = remote_backend(settings, generator.generate.remote.aio, generator.op.remote.aio)
    state = shared_state(settings)
    return create_app(settings, backend, state=state, job_runner=JobRunner(
        DictJobStore(jobs_dict), backend, settings, launcher=SpawnLauncher(generator.generate),
        state=state))

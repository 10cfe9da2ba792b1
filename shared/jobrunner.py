"""Jobs that outlive their request: start a generation in the background, keep its state in a store.

    runner = JobRunner(store, launcher)
    job = await runner.submit(Job(id=..., dialect=..., ...), req)  # starts it, stores call_id
    job = await runner.get(job.id)            # the stored state; a finished run is recorded
    job = await runner.get(job.id, wait=20)   # ...waiting up to 20 s for it to finish

Where the work runs is the launcher's business. ThreadLauncher: threads of this process (the local
server). On Modal, functions/web.py's SpawnLauncher `.spawn()`s the GPU method and finds the run
again by its FunctionCall id, and the store is a `modal.Dict`: any web container, including one
started after a restart, can answer for any job. Outcomes are recorded when a job is read
(`get`), so nothing has to stay alive to watch a run; `on_finish` sees each recorded outcome.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Protocol

import anyio

from shared.errors import GenerationFailed, SdgateError
from shared.generation import GenerationRequest, GenerationResult
from shared.jobs import Job, JobStatus, JobStore

log = logging.getLogger(__name__)


class DictJobStore:
    """A JobStore on any dict-like object: a `modal.Dict` on Modal (shared by all containers;
    its entries expire after 7 days without reads or writes), or a plain dict."""

    def __init__(self, mapping: MutableMapping):
        self.mapping = mapping

    def get(self, job_id: str) -> Job | None:
        data = self.mapping.get(job_id)
        return Job.model_validate(data) if data else None

    def put(self, job: Job) -> None:
        self.mapping[job.id] = job.model_dump(mode="json")


class Launcher(Protocol):
    """Starts generations and finds them again by a handle that can be stored."""

    async def start(self, req: GenerationRequest, job_id: str) -> str:
        """Start generating (and uploading) `req` as `job_id`; return the run's handle."""

    async def result(self, handle: str, timeout: float) -> GenerationResult | None:
        """The result if the run finishes within `timeout` s, else None; raises the run's error."""


class ThreadLauncher:
    """Runs jobs on this process's threads through any Backend; runs die with the process."""

    def __init__(self, backend, workers: int = 2):
        self.backend = backend
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="sdgate-job")
        self._runs: dict[str, Future] = {}

    def _run(self, req: GenerationRequest, job_id: str) -> GenerationResult:
        return asyncio.run(self.backend.generate(req, job_id=job_id))

    async def start(self, req: GenerationRequest, job_id: str) -> str:
        self._runs[job_id] = self._pool.submit(self._run, req, job_id)
        return job_id

    async def result(self, handle: str, timeout: float) -> GenerationResult | None:
        run = self._runs.get(handle)
        if run is None:
            raise GenerationFailed("the job was lost: the server restarted while it ran")
        if timeout > 0 and not run.done():
            await asyncio.wait([asyncio.wrap_future(run)], timeout=timeout)
        return run.result() if run.done() else None


class JobRunner:
    """Submits jobs through a launcher and records their outcomes in a JobStore."""

    def __init__(self, store: JobStore, launcher: Launcher, timeout: float = 600.0,
                 on_finish: Callable[[Job], Awaitable[None]] | None = None):
        self.store = store
        self.launcher = launcher
        self.timeout = timeout  # a job still running this long after creation is failed
        self.on_finish = on_finish  # e.g. a webhook sender; may see a job twice across containers

    async def submit(self, job: Job, req: GenerationRequest) -> Job:
        """Start `req` as `job` (its dialect fields already filled in) and store it."""
        job = job.model_copy(update={"status": JobStatus.processing,
                                     "deadline": job.deadline or job.created + self.timeout})
        job.call_id = await self.launcher.start(req, job.id)
        await anyio.to_thread.run_sync(self.store.put, job)
        return job

    async def get(self, job_id: str, wait: float = 0.0) -> Job | None:
        """The job's state, waiting up to `wait` s for a running one to finish; None if unknown."""
        job = await anyio.to_thread.run_sync(self.store.get, job_id)
        if job is None or job.status is not JobStatus.processing:
            return job
        left = job.deadline - time.time() if job.deadline else wait
        try:
            result = (await self.launcher.result(job.call_id, max(0.0, min(wait, left)))
                      if job.call_id else None)
        except SdgateError as e:
            return await self._finish(job, error=e.message)
        except Exception as e:
            log.exception("job %s failed", job_id)
            return await self._finish(job, error=f"generation failed: {type(e).__name__}: {e}")
        if result is not None:
            return await self._finish(job, result=result)
        if job.deadline and time.time() >= job.deadline:
            return await self._finish(job, error="the job did not finish in time")
        return job

    async def _finish(self, job: Job, result: GenerationResult | None = None,
                      error: str | None = None) -> Job:
        job.status = JobStatus.success if result is not None else JobStatus.failed
        job.error = error
        if result is not None:  # URLs and metadata; image bytes never go into the store
            job.result = result.model_dump(mode="json", exclude={"images": {"__all__": {"data"}}})
        await anyio.to_thread.run_sync(self.store.put, job)
        if self.on_finish is not None:
            await self.on_finish(job)
        return job

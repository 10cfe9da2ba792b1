"""Runs jobs in this server: generation as background tasks, deadlines, restart recovery, webhooks.

State lives only in the JobStore (get/put), so a restarted server picks up where the last one
stopped: on start, jobs past their deadline are failed and the others are run again (their image
keys depend only on the job id, so a re-run overwrites the same objects). A job never stays
"processing" past its deadline: fetch, the watchdog and start-up all fail an overdue job.
Success and failure are final; whoever makes that transition sends the job's webhook.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections.abc import Callable

from shared import netguard, webhooks
from shared.errors import SdgateError
from shared.generation import GenerationRequest
from shared.jobs import Job, JobStatus, JobStore

log = logging.getLogger(__name__)

# dialect name -> the webhook payload of one finished job (registered by the dialect module)
PAYLOADS: dict[str, Callable[[Job], dict]] = {}

_BYTES_FIELDS = ("init_image", "mask")
WATCHDOG_SECONDS = 2.0


def register_payload(dialect: str):
    """Decorator: the function rendering a finished job's webhook body for a dialect."""
    def wrap(fn):
        PAYLOADS[dialect] = fn
        return fn
    return wrap


def dump_request(req: GenerationRequest) -> dict:
    """A GenerationRequest as JSON, image bytes as base64 (pydantic would write them as UTF-8)."""
    data = req.model_dump(mode="json", exclude=set(_BYTES_FIELDS))
    for name in _BYTES_FIELDS:
        raw = getattr(req, name)
        data[name] = base64.b64encode(raw).decode() if raw is not None else None
    return data


def load_request(data: dict) -> GenerationRequest:
    """The inverse of dump_request."""
    data = dict(data)
    for name in _BYTES_FIELDS:
        if data.get(name) is not None:
            data[name] = base64.b64decode(data[name])
    return GenerationRequest.model_validate(data)


def webhook_id(job: Job) -> str:
    """The Standard Webhooks message id of a job's delivery: stable across retries and restarts."""
    return f"msg_{job.id}"


class JobRunner:
    """Background generation for one app, on one JobStore and one Backend."""

    def __init__(self, store: JobStore, backend, settings):
        self.store = store
        self.backend = backend
        self.guard = netguard.Guard.from_settings(settings)
        self.policy = webhooks.Policy.from_settings(settings)
        self.timeout = settings.job_timeout_seconds
        self.tasks: set[asyncio.Task] = set()  # strong references: the loop keeps only weak ones
        self.running: dict[str, asyncio.Task] = {}  # job id -> its generation task
        self.avg_seconds = 5.0  # moving average of job durations, for `eta`
        self._lock = threading.Lock()
        self._started = False
        self._watchdog: asyncio.Task | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Recover the store's unfinished jobs and start the deadline watchdog (idempotent)."""
        if self._started:
            return
        self._started = True
        for job in self._unfinished():
            if job.overdue():
                self._fail(job.id, "Job deadline exceeded")
            elif job.id not in self.running and job.internal is not None:
                log.info("resuming job %s after a restart", job.id)
                self._launch(job.id, load_request(job.internal), job.keep_bytes)
        self._watchdog = self._spawn(self._watch())

    async def stop(self) -> None:
        """Cancel the watchdog and in-flight work; unfinished jobs resume on the next start."""
        tasks = list(self.tasks)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._started = False

    # -- jobs -----------------------------------------------------------------------------------
    def submit(self, job: Job, req: GenerationRequest) -> Job:
        """Store a new job and start generating it in the background."""
        job.deadline = job.deadline or job.created + self.timeout
        job.internal = dump_request(req)
        self.store.put(job)
        self._launch(job.id, req, job.keep_bytes)
        return job

    async def wait(self, job_id: str, timeout: float) -> Job | None:
        """The job once finished, or its current state after `timeout` seconds."""
        task = self.running.get(job_id)
        if task is not None and timeout > 0:
            await asyncio.wait({task}, timeout=timeout)
        return self.get(job_id)

    def get(self, job_id: str) -> Job | None:
        """The job's state; an overdue job is failed here rather than reported as processing."""
        job = self.store.get(job_id)
        if job is not None and job.overdue():
            return self._fail(job_id, "Job deadline exceeded") or self.store.get(job_id)
        return job

    def queue(self) -> int:
        """Jobs generating in this server now."""
        return len(self.running)

    def eta(self) -> float:
        """Seconds a new job is expected to take, queue included."""
        return round(self.avg_seconds * (self.queue() + 1), 2)

    # -- internals ------------------------------------------------------------------------------
    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def _launch(self, job_id: str, req: GenerationRequest, keep_bytes: bool) -> None:
        task = self._spawn(self._run(job_id, req, keep_bytes))
        self.running[job_id] = task
        task.add_done_callback(lambda _: self.running.pop(job_id, None))

    async def _run(self, job_id: str, req: GenerationRequest, keep_bytes: bool) -> None:
        t0 = time.monotonic()
        try:
            result = await self.backend.generate(req, job_id=job_id, keep_bytes=keep_bytes)
        except SdgateError as e:
            self._fail(job_id, e.message)
            return
        except Exception as e:  # the job fails; the server goes on
            log.exception("job %s failed", job_id)
            self._fail(job_id, f"internal error: {type(e).__name__}")
            return
        self.avg_seconds = 0.7 * self.avg_seconds + 0.3 * (time.monotonic() - t0)
        images = [base64.b64encode(i.data).decode() for i in result.images if i.data] \
            if keep_bytes else []
        dumped = result.model_dump(mode="json", exclude={"images": {"__all__": {"data"}}})
        self._finish(job_id, status=JobStatus.success, result=dumped, images_base64=images)

    def _fail(self, job_id: str, reason: str) -> Job | None:
        return self._finish(job_id, status=JobStatus.failed, error=reason)

    def _finish(self, job_id: str, **updates) -> Job | None:
        """Move a processing job to a final state, once; returns it, or None if already final."""
        with self._lock:
            job = self.store.get(job_id)
            if job is None or job.status is not JobStatus.processing:
                return None
            # The stored request (init images included) is only needed to re-run: drop it.
            job = job.model_copy(update={**updates, "finished": time.time(), "internal": None})
            self.store.put(job)
        if job.webhook and job.dialect in PAYLOADS:
            self._spawn(self._notify(job))
        return job

    async def _notify(self, job: Job) -> None:
        """Deliver the webhook, then record how it went (never blocks the job's result)."""
        ok = await webhooks.deliver(job.webhook, PAYLOADS[job.dialect](job), webhook_id(job),
                                    self.policy, self.guard)
        with self._lock:
            current = self.store.get(job.id)
            if current is not None:
                self.store.put(current.model_copy(
                    update={"webhook_status": "success" if ok else "failed"}))

    def _unfinished(self) -> list[Job]:
        listing = getattr(self.store, "processing", None)
        if listing is not None:
            return listing()
        return [j for j in map(self.store.get, list(self.running)) if j is not None]

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(WATCHDOG_SECONDS)
            try:
                for job in self._unfinished():
                    if job.overdue():
                        self._fail(job.id, "Job deadline exceeded")
            except Exception:  # a store hiccup must not end the watchdog
                log.exception("job watchdog")

"""Runs jobs: generation in the background, deadlines, restart recovery, webhooks.

Where the work runs is a Launcher's business: TaskLauncher runs it as a task of this server
(locally); on Modal, functions/web.py's SpawnLauncher `.spawn()`s the GPU method, and the run's
handle (the FunctionCall id, stored as `call_id`) finds it again from any web container.
State lives only in the JobStore (get/put), so a restarted server picks up where the last one
stopped: on start, jobs past their deadline are failed, runs the launcher can still find are
awaited again, and the others are run again (their image keys depend only on the job id, so a
re-run overwrites the same objects). A job never stays "processing" past its deadline: fetch, the
watchdog and start-up all fail an overdue job. Success and failure are final; whoever makes that
transition sends the job's webhook (across several Modal web containers it may be sent twice,
with the same webhook-id, which receivers dedupe on).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import logging
import threading
import time
from collections.abc import Callable, MutableMapping
from typing import Protocol

from shared import netguard, webhooks
from shared.errors import GenerationFailed, SdgateError
from shared.generation import GenerationRequest, GenerationResult
from shared.jobs import Job, JobStatus, JobStore

log = logging.getLogger(__name__)

# dialect name -> the webhook payload of one finished job (registered by the dialect module)
PAYLOADS: dict[str, Callable[[Job], dict]] = {}

_BYTES_FIELDS = ("init_image", "mask")
# list field -> its items' bytes fields (bytes, or lists of bytes)
_NESTED_BYTES = {"controlnets": ("image", "mask", "region_mask"),
                 "ip_adapters": ("images", "region_mask")}
WATCHDOG_SECONDS = 2.0


def register_payload(dialect: str):
    """Decorator: the function rendering a finished job's webhook body for a dialect."""
    def wrap(fn):
        PAYLOADS[dialect] = fn
        return fn
    return wrap


def dump_request(req: GenerationRequest) -> dict:
    """A GenerationRequest as JSON, image bytes as base64 (pydantic would write them as UTF-8)."""
    data = req.model_dump(mode="json", exclude=set(_BYTES_FIELDS) | set(_NESTED_BYTES))
    for name in _BYTES_FIELDS:
        data[name] = _b64(getattr(req, name))
    for name, fields in _NESTED_BYTES.items():
        data[name] = [{**item.model_dump(mode="json", exclude=set(fields)),
                       **{f: _b64(getattr(item, f)) for f in fields}}
                      for item in getattr(req, name)]
    return data


def _b64(raw):
    if isinstance(raw, list):
        return [_b64(x) for x in raw]
    return base64.b64encode(raw).decode() if raw is not None else None


def _unb64(text):
    return [_unb64(x) for x in text] if isinstance(text, list) else base64.b64decode(text)


def load_request(data: dict) -> GenerationRequest:
    """The inverse of dump_request."""
    data = dict(data)
    for name in _BYTES_FIELDS:
        if data.get(name) is not None:
            data[name] = base64.b64decode(data[name])
    for name, fields in _NESTED_BYTES.items():
        data[name] = [{**item, **{f: _unb64(item[f]) for f in fields
                                  if item.get(f) is not None}}
                      for item in data.get(name) or []]
    return GenerationRequest.model_validate(data)


def webhook_id(job: Job) -> str:
    """The Standard Webhooks message id of a job's delivery: stable across retries and restarts."""
    return f"msg_{job.id}"


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

    def purge(self, before: float) -> int:
        """Delete final jobs that finished before `before`; how many went."""
        from shared.jobs import expired

        old = [k for k, v in list(self.mapping.items()) if expired(v, before)]
        for k in old:
            self.mapping.pop(k, None)
        return len(old)

    # No `processing()` listing: scanning a whole modal.Dict from every web container every few
    # seconds costs more than it saves. Unfinished jobs are picked up when fetched instead.


class Launcher(Protocol):
    """Starts generations and finds them again by a handle that can be stored."""

    async def start(self, req: GenerationRequest, job_id: str, keep_bytes: bool) -> str:
        """Start generating (and uploading) `req` as `job_id`; return the run's handle."""

    def resumable(self, handle: str) -> bool:
        """Whether `result` can still find this run (after a restart, or from another server)."""

    async def result(self, handle: str, timeout: float) -> GenerationResult | None:
        """The result if the run finishes within `timeout` s, else None; raises the run's error."""


class TaskLauncher:
    """Runs generations as tasks of this server's event loop; they end with the process."""

    def __init__(self, backend):
        self.backend = backend
        self._runs: dict[str, asyncio.Task] = {}

    async def start(self, req: GenerationRequest, job_id: str, keep_bytes: bool) -> str:
        task = asyncio.get_running_loop().create_task(
            self.backend.generate(req, job_id=job_id, keep_bytes=keep_bytes))
        self._runs[job_id] = task
        return job_id

    def resumable(self, handle: str) -> bool:
        return handle in self._runs

    async def result(self, handle: str, timeout: float) -> GenerationResult | None:
        task = self._runs.get(handle)
        if task is None:
            raise GenerationFailed("the job was lost: the server restarted while it ran")
        done, _ = await asyncio.wait({task}, timeout=max(0.0, timeout))
        if not done:
            return None
        self._runs.pop(handle, None)
        return task.result()


class JobRunner:
    """Background generation for one app, on one JobStore and one Launcher."""

    def __init__(self, store: JobStore, backend, settings, launcher: Launcher | None = None,
                 state=None):
        from shared.state import MemoryState

        self.store = store
        self.state = state or MemoryState()  # where a generated webhook secret is kept
        self.launcher = launcher or TaskLauncher(backend)
        self.guard = netguard.Guard.from_settings(settings)
        self.policy = webhooks.Policy.from_settings(settings)
        self.timeout = settings.job_timeout_seconds
        self.tasks: set[asyncio.Task] = set()  # strong references: the loop keeps only weak ones
        self.running: dict[str, asyncio.Task] = {}  # job id -> its generation task
        self.avg_seconds = 5.0  # moving average of job durations, for `eta`
        self._lock = threading.Lock()
        # called with (job, task id) once a job is final: its usage record (shared.accounts)
        self.on_finish: Callable[[Job, str | None], None] | None = None
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
            elif job.id not in self.running:
                self._resume(job)
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
        job = self.get(job_id)
        if job is not None and job.status is JobStatus.processing and job_id not in self.running:
            self._resume(job)  # started by another server (a Modal web container) or before a restart
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

    async def aget(self, job_id: str) -> Job | None:
        """`get` for async code (the local stores are quick; no thread needed)."""
        return self.get(job_id)

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

    def _resume(self, job: Job) -> None:
        """Await a run the launcher can still find, else run the stored request again."""
        if job.call_id and self.launcher.resumable(job.call_id):
            self._track(job.id, self._run(job.id, None, job.keep_bytes, job.call_id))
        elif job.internal is not None:
            log.info("re-running job %s after a restart", job.id)
            self._launch(job.id, load_request(job.internal), job.keep_bytes)

    def _launch(self, job_id: str, req: GenerationRequest, keep_bytes: bool) -> None:
        self._track(job_id, self._run(job_id, req, keep_bytes))

    def _track(self, job_id: str, coro) -> None:
        task = self._spawn(coro)
        self.running[job_id] = task
        task.add_done_callback(lambda _: self.running.pop(job_id, None))

    async def _start(self, job_id: str, req: GenerationRequest, keep_bytes: bool) -> str:
        """Start the run and record its handle on the job."""
        handle = await self.launcher.start(req, job_id, keep_bytes)
        with self._lock:
            job = self.store.get(job_id)
            if job is not None and job.status is JobStatus.processing:
                self.store.put(job.model_copy(update={"call_id": handle}))
        return handle

    async def _run(self, job_id: str, req: GenerationRequest | None, keep_bytes: bool,
                   handle: str | None = None) -> None:
        t0 = time.monotonic()
        try:
            if handle is None:
                handle = await self._start(job_id, req, keep_bytes)
            job = self.store.get(job_id)
            left = (job.deadline - time.time()) if job and job.deadline else self.timeout
            result = await self.launcher.result(handle, left)
            if result is None:
                self._fail(job_id, "Job deadline exceeded")
                return
            if result.interrupted:  # partial images are not a success in any shape
                self._fail(job_id, "The generation was interrupted before it finished")
                return
        except SdgateError as e:
            self._fail(job_id, e.message)
            return
        except Exception as e:  # the job fails; the server goes on
            log.exception("job %s failed", job_id)
            self._fail(job_id, f"internal error: {type(e).__name__}")
            return
        self.avg_seconds = 0.7 * self.avg_seconds + 0.3 * (time.monotonic() - t0)
        self._succeed(job_id, result, keep_bytes)

    def _succeed(self, job_id: str, result: GenerationResult, keep_bytes: bool) -> Job | None:
        images = [base64.b64encode(i.data).decode() for i in result.images if i.data] \
            if keep_bytes else []
        dumped = result.model_dump(mode="json", exclude={"images": {"__all__": {"data"}}})
        return self._finish(job_id, status=JobStatus.success, result=dumped, images_base64=images)

    def record(self, job: Job, result: GenerationResult) -> Job:
        """Work done outside the runner (a synchronous operation, its images already stored)
        as a finished job: fetchable by id like any other, and its webhook sent."""
        self.store.put(job.model_copy(update={"status": JobStatus.processing}))
        return self._succeed(job.id, result, job.keep_bytes) or self.store.get(job.id)

    def _fail(self, job_id: str, reason: str) -> Job | None:
        return self._finish(job_id, status=JobStatus.failed, error=reason)

    def _finish(self, job_id: str, **updates) -> Job | None:
        """Move a processing job to a final state, once; returns it, or None if already final."""
        with self._lock:
            job = self.store.get(job_id)
            if job is None or job.status is not JobStatus.processing:
                return None
            task_id = (job.internal or {}).get("task_id")
            # The stored request (init images included) is only needed to re-run: drop it.
            job = job.model_copy(update={**updates, "finished": time.time(), "internal": None})
            self.store.put(job)
        if self.on_finish is not None:
            self.on_finish(job, task_id)
        if job.webhook and job.dialect in PAYLOADS:
            self._spawn(self._notify(job))
        return job

    async def _notify(self, job: Job) -> None:
        """Deliver the webhook, then record how it went (never blocks the job's result)."""
        if not self.policy.secret:  # always signed: the configured or the generated secret
            secret = await webhooks.asecret_for(self.state)
            self.policy = dataclasses.replace(self.policy, secret=secret)
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

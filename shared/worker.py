"""Jobs whose life after submission runs on the GPU side, and the web tier's handle on them.

The web tier (`HandoffRunner`) only stores the job and hands it off: on Modal it `.spawn()`s the
GPU class's `run_job`; in the split local topology it pushes the job id onto the state store's
"gpu" queue, which a worker process (functions/local_worker.py) drains. `JobWorker.run` then
generates, stores the result, makes the job final and delivers its webhook with retries, all
next to the GPU, so any web container can die without losing a result or a webhook.

Exactly once, by construction: the final transition of a job is an atomic claim in the store
(`job:final:<id>`); whoever wins it (the worker on success or failure, or a web container that
finds the job past its deadline) writes the final state and is the only one to send the webhook,
always under the same `webhook-id`. A job past its deadline is stopped where it runs: the worker
interrupts its own task at the deadline, and the web tier cancels the Modal FunctionCall.

The same store carries plain generation calls for the split topology (`StateRPC`): the request
pickled onto the queue, the result (or the error) pickled back under `rpc:<id>`.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import pickle
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from shared import netguard, webhooks
from shared.errors import GenerationFailed, SdgateError
from shared.generation import GenerationRequest
from shared.jobrunner import PAYLOADS, dump_request, load_request, webhook_id
from shared.jobs import Job, JobStatus
from shared.state import State

log = logging.getLogger(__name__)

QUEUE = "gpu"  # the split topology's work queue (job ids and generation calls)
# metered jobs whose usage record is not closed yet: any web container's watchdog takes them up,
# so a record closes even when the container that submitted the job is gone
UNMETERED = "jobs:unmetered"
UNMETERED_BATCH = 50  # at most this many looked at per sweep
UNMETERED_EVERY = 15  # watchdog rounds (2 s each) between sweeps: records close within ~30 s
FINAL_TTL = 8 * 24 * 3600.0  # claims outlive the jobs they guard
POLL_SECONDS = 0.1  # how often the web tier looks at a job / call result in the store
DEADLINE_REASON = "Job deadline exceeded"


def _dumps(obj) -> str:
    return base64.b64encode(pickle.dumps(obj)).decode()


def _loads(text: str):
    return pickle.loads(base64.b64decode(text))  # noqa: S301 - our own store, our own objects


class StateJobStore:
    """Jobs as `job:<id>` keys of the state store (blocking and async forms)."""

    def __init__(self, state: State):
        self.state = state

    def get(self, job_id: str) -> Job | None:
        data = self.state.get(f"job:{job_id}")
        return Job.model_validate(data) if data else None

    def put(self, job: Job) -> None:
        self.state.put(f"job:{job.id}", job.model_dump(mode="json"), ttl=FINAL_TTL)

    async def aget(self, job_id: str) -> Job | None:
        data = await self.state.aget(f"job:{job_id}")
        return Job.model_validate(data) if data else None

    async def aput(self, job: Job) -> None:
        await self.state.aput(f"job:{job.id}", job.model_dump(mode="json"), ttl=FINAL_TTL)

    def purge(self, before: float) -> int:
        """Nothing: each job key expires by itself (FINAL_TTL; Modal Dict entries also after 7
        days without use), and the shared store is not scanned from every container."""
        return 0


def final_updates(job: Job, **updates) -> dict:
    return {**updates, "finished": time.time(), "internal": None}


class JobWorker:
    """The GPU side of a job: generate, store, finish (once), deliver the webhook (once)."""

    def __init__(self, state: State, backend, settings):
        self.state = state
        self.store = StateJobStore(state)
        self.backend = backend  # a LocalBackend (run: generate + upload)
        self.guard = netguard.Guard.from_settings(settings)
        self.policy = webhooks.Policy.from_settings(settings)

    def run(self, job_id: str) -> Job | None:
        """Run one job to its end; None when it was already final (a duplicate hand-off)."""
        from shared.progress import TASKS

        job = self.store.get(job_id)
        if job is None or job.status is not JobStatus.processing or job.internal is None:
            return None
        t0 = time.monotonic()
        req = load_request(job.internal)
        # the job id is the task id: progress and flags of a job are found by its id
        req = req.model_copy(update={"task_id": job.id, "owner": job.owner})
        left = job.deadline - time.time() if job.deadline else None
        if left is not None and left <= 0:
            return self.finish(job_id, status=JobStatus.failed, error=DEADLINE_REASON)
        timer = None
        if left is not None:  # at the deadline the task stops at its next step
            timer = threading.Timer(left, TASKS.interrupt, (req.task_id, req.owner))
            timer.daemon = True
            timer.start()
        self._busy(+1)
        try:
            result = self.backend.run(req, job_id, job.keep_bytes)
        except SdgateError as e:
            return self.finish(job_id, status=JobStatus.failed, error=e.message)
        except Exception as e:  # the job fails; the worker goes on
            log.exception("job %s failed", job_id)
            return self.finish(job_id, status=JobStatus.failed,
                               error=f"internal error: {type(e).__name__}")
        finally:
            self._busy(-1)
            if timer is not None:
                timer.cancel()
        if result.interrupted:
            late = job.deadline and time.time() >= job.deadline
            return self.finish(job_id, status=JobStatus.failed, error=DEADLINE_REASON if late
                               else "The generation was interrupted before it finished")
        self._measured(time.monotonic() - t0)
        images = [base64.b64encode(i.data).decode() for i in result.images if i.data] \
            if job.keep_bytes else []
        dumped = result.model_dump(mode="json", exclude={"images": {"__all__": {"data"}}})
        return self.finish(job_id, status=JobStatus.success, result=dumped,
                           images_base64=images)

    def finish(self, job_id: str, **updates) -> Job | None:
        """Make the job final if nobody did yet, then deliver its webhook (blocking)."""
        job = finish(self.state, self.store, job_id, **updates)
        if job is not None and job.webhook and job.dialect in PAYLOADS:
            secret = webhooks.secret_for(self.state, self.policy.secret)
            policy = webhooks.Policy(secret, self.policy.attempts, self.policy.backoff,
                                     self.policy.timeout)
            ok = asyncio.run(webhooks.deliver(job.webhook, PAYLOADS[job.dialect](job),
                                              webhook_id(job), policy, self.guard))
            record_webhook(self.store, job_id, ok)
        return job

    def _busy(self, delta: int) -> None:
        try:
            self.state.incr("stats:busy", delta)
        except Exception:
            log.exception("busy counter")

    def _measured(self, seconds: float) -> None:
        old = self.state.get("stats:job_seconds")
        self.state.put("stats:job_seconds", seconds if not old else 0.7 * old + 0.3 * seconds)


def finish(state: State, store: StateJobStore, job_id: str, **updates) -> Job | None:
    """The one final transition of a job (an atomic claim); None if someone else made it."""
    if not state.add(f"job:final:{job_id}", updates.get("status", "final"), ttl=FINAL_TTL):
        return None
    job = store.get(job_id)
    if job is None:
        return None
    job = job.model_copy(update=final_updates(job, **updates))
    store.put(job)
    return job


async def afinish(state: State, store: StateJobStore, job_id: str, **updates) -> Job | None:
    if not await state.aadd(f"job:final:{job_id}", str(updates.get("status", "final")),
                            ttl=FINAL_TTL):
        return None
    job = await store.aget(job_id)
    if job is None:
        return None
    job = job.model_copy(update=final_updates(job, **updates))
    await store.aput(job)
    return job


def record_webhook(store: StateJobStore, job_id: str, ok: bool) -> None:
    current = store.get(job_id)
    if current is not None:
        store.put(current.model_copy(update={"webhook_status": "success" if ok else "failed"}))


# -- the web tier -------------------------------------------------------------------------------
class QueueLauncher:
    """Hand a job to whatever drains the store's queue (the split topology's worker process)."""

    def __init__(self, state: State):
        self.state = state

    async def hand_off(self, job_id: str) -> str | None:
        await self.state.apush(QUEUE, {"kind": "job", "job_id": job_id})
        return None

    async def cancel(self, handle: str | None, job: Job) -> None:
        """The worker stops the task at its deadline itself; flag it too, for a late one."""
        from shared.progress import TASKS

        await TASKS.ainterrupt(job.id, job.owner)

    async def depth(self) -> int:
        return await self.state.aqlen(QUEUE)


class HandoffRunner:
    """The web tier's JobRunner when jobs run off the web tier: store, hand off, read back.

    The interface the dialects use is JobRunner's (submit, wait, get/aget, queue, eta).
    """

    def __init__(self, state: State, settings, launcher):
        self.state = state
        self.store = StateJobStore(state)
        self.launcher = launcher
        self.settings = settings
        self.timeout = settings.job_timeout_seconds
        self.guard = netguard.Guard.from_settings(settings)
        self.policy = webhooks.Policy.from_settings(settings)
        self.avg_seconds = 5.0  # job seconds as measured on the GPU side (refreshed)
        self._depth = 0
        self._handoffs: dict[str, asyncio.Task] = {}
        self._mine: set[str] = set()  # jobs this container submitted, for the deadline watch
        self._tasks: set[asyncio.Task] = set()
        self._watchdog: asyncio.Task | None = None
        # called with (job, task id) once a job is final: its usage record (shared.accounts);
        # run once per job by whichever web container first sees it final (a claim)
        self.on_finish = None

    async def start(self) -> None:
        if self._watchdog is None:
            if self.policy.secret:  # the GPU side signs with the store's copy
                await self.state.aput(webhooks.SECRET_KEY, self.policy.secret)
            self._watchdog = self._spawn(self._watch())
            await self.refresh()

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._watchdog = None

    def submit(self, job: Job, req: GenerationRequest) -> Job:
        """Store the job and hand it off (in the background; `wait` awaits both)."""
        job.deadline = job.deadline or job.created + self.timeout
        job.internal = dump_request(req)
        self._mine.add(job.id)
        self._depth += 1
        self._track(job.id, self._hand_off(job))
        return job

    def _track(self, job_id: str, coro) -> None:
        task = self._handoffs[job_id] = self._spawn(coro)
        task.add_done_callback(lambda _: self._handoffs.pop(job_id, None))

    async def _hand_off(self, job: Job) -> None:
        task_id = (job.internal or {}).get("task_id")
        if task_id:  # the usage record's id, for on_finish once the job is final
            await self.state.aput(f"job:task:{job.id}", task_id, ttl=FINAL_TTL)
        await self.store.aput(job)
        if task_id and self.on_finish is not None:
            await self.state.apush(UNMETERED, job.id)
        handle = await self.launcher.hand_off(job.id)
        if handle is not None:
            stored = await self.store.aget(job.id)
            if stored is not None and stored.status is JobStatus.processing:
                await self.store.aput(stored.model_copy(update={"call_id": handle}))

    async def wait(self, job_id: str, timeout: float) -> Job | None:
        """The job once final, or its current state after `timeout` seconds."""
        end = time.monotonic() + timeout
        while True:
            job = await self.aget(job_id)
            if job is None or job.status is not JobStatus.processing or time.monotonic() >= end:
                return job
            await asyncio.sleep(POLL_SECONDS)

    def record(self, job: Job, result) -> Job:
        """Work done outside the runner (its images already stored) as a finished job: the
        answer now, storing it and its webhook in the background (no blocking store call)."""
        images = [base64.b64encode(i.data).decode() for i in result.images if i.data] \
            if job.keep_bytes else []
        dumped = result.model_dump(mode="json", exclude={"images": {"__all__": {"data"}}})
        final = job.model_copy(update=final_updates(job, status=JobStatus.success, result=dumped,
                                                    images_base64=images))
        self._track(job.id, self._record(final))
        return final

    async def _record(self, job: Job) -> None:
        await self.state.aadd(f"job:final:{job.id}", "success", ttl=FINAL_TTL)
        await self.store.aput(job)
        if job.webhook and job.dialect in PAYLOADS:
            await self._notify(job)

    def get(self, job_id: str) -> Job | None:
        """Blocking read (worker threads only on Modal); see aget."""
        return self.store.get(job_id)

    async def aget(self, job_id: str) -> Job | None:
        """The job's state; an overdue job is failed (and its run cancelled) here."""
        pending = self._handoffs.get(job_id)
        if pending is not None and not pending.done():
            await asyncio.shield(pending)  # our own submission: stored before it is read
        job = await self.store.aget(job_id)
        if job is not None and job.overdue():
            await self._expire(job)
            job = await self.store.aget(job_id)
        if job is not None and job.status is not JobStatus.processing:
            await self._finished(job)
        return job

    async def _finished(self, job: Job) -> None:
        """Run on_finish for a final job, once across every web container."""
        if self.on_finish is None or not await self.state.aadd(f"job:metered:{job.id}", 1,
                                                                ttl=FINAL_TTL):
            return
        import anyio

        task_id = await self.state.aget(f"job:task:{job.id}")
        try:
            await anyio.to_thread.run_sync(self.on_finish, job, task_id)
        except Exception:
            log.exception("on_finish of job %s", job.id)

    def queue(self) -> int:
        """Jobs waiting or generating, as last read from the shared store."""
        return self._depth

    def eta(self) -> float:
        return round(self.avg_seconds * (self._depth + 1), 2)

    async def refresh(self) -> None:
        """Queue depth (waiting + generating) and measured job time from the shared store."""
        waiting = await self.launcher.depth()
        busy, seconds = await self.state.aget_many(["stats:busy", "stats:job_seconds"])
        self._depth = max(0, waiting) + max(0, busy or 0)
        if seconds:
            self.avg_seconds = float(seconds)

    async def _expire(self, job: Job) -> None:
        done = await afinish(self.state, self.store, job.id, status=JobStatus.failed,
                             error=DEADLINE_REASON)
        try:
            await self.launcher.cancel(job.call_id, job)
        except Exception:
            log.exception("cancelling job %s", job.id)
        if done is not None and done.webhook and done.dialect in PAYLOADS:
            self._spawn(self._notify(done))

    async def _notify(self, job: Job) -> None:
        secret = await webhooks.asecret_for(self.state, self.policy.secret)
        policy = webhooks.Policy(secret, self.policy.attempts, self.policy.backoff,
                                 self.policy.timeout)
        ok = await webhooks.deliver(job.webhook, PAYLOADS[job.dialect](job), webhook_id(job),
                                    policy, self.guard)
        current = await self.store.aget(job.id)
        if current is not None:
            await self.store.aput(current.model_copy(
                update={"webhook_status": "success" if ok else "failed"}))

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _watch(self) -> None:
        rounds = 0
        while True:
            await asyncio.sleep(2.0)
            try:
                await self.refresh()
                for job_id in list(self._mine):
                    job = await self.aget(job_id)  # overdue: failed and cancelled there
                    if job is None or job.status is not JobStatus.processing:
                        self._mine.discard(job_id)
                if rounds % UNMETERED_EVERY == 0:  # the first round, then every ~30 s
                    await self._meter_unmetered()
            except Exception:  # a store hiccup must not end the watchdog
                log.exception("job watchdog")
            rounds += 1

    async def _meter_unmetered(self) -> None:
        """Close the usage records of final jobs from the shared list (whoever submitted them);
        jobs still running go back on it. A job read final is metered once (aget's claim)."""
        if self.on_finish is None:
            return
        for _ in range(min(UNMETERED_BATCH, await self.state.aqlen(UNMETERED))):
            job_id = await self.state.apop(UNMETERED)
            if job_id is None:
                return
            if job_id in self._mine:  # read every round above; back on the list for later
                await self.state.apush(UNMETERED, job_id)
                continue
            job = await self.aget(job_id)
            if job is not None and job.status is JobStatus.processing:
                await self.state.apush(UNMETERED, job_id)


class StateRPC:
    """`call` / `op_call` for a RemoteBackend whose GPU side drains the store's queue."""

    def __init__(self, state: State):
        self.state = state

    async def _call(self, method: str, *args):
        cid = uuid.uuid4().hex
        await self.state.apush(QUEUE, {"kind": "call", "id": cid, "method": method,
                                       "args": _dumps(args)})
        key = f"rpc:{cid}"
        while True:
            out = await self.state.aget(key)
            if out is not None:
                await self.state.adelete(key)
                value = _loads(out["payload"])
                if not out["ok"]:
                    raise value
                return value
            await asyncio.sleep(POLL_SECONDS)

    async def call(self, req, job_id, keep_bytes):
        return await self._call("generate", req, job_id, keep_bytes)

    async def op_call(self, name, req):
        return await self._call("op", name, req)

    async def memory(self) -> dict:
        return await self._call("memory")


# -- the worker process ---------------------------------------------------------------------------
def serve(state: State, methods: dict, run_job, threads: int = 4,
          stop: threading.Event | None = None) -> None:
    """Drain the queue: jobs via `run_job(job_id)`, calls via `methods[name](*args)`."""
    stop = stop or threading.Event()
    slots = threading.Semaphore(threads)
    with ThreadPoolExecutor(threads) as pool:
        while not stop.is_set():
            if not slots.acquire(timeout=0.5):
                continue
            item = state.pop(QUEUE, timeout=0.5)
            if item is None:
                slots.release()
                continue
            future = pool.submit(_handle, state, methods, run_job, item)
            future.add_done_callback(lambda _: slots.release())


def _handle(state: State, methods: dict, run_job, item: dict) -> None:
    try:
        if item["kind"] == "job":
            run_job(item["job_id"])
            return
        args = _loads(item["args"])
        try:
            value, ok = methods[item["method"]](*args), True
        except Exception as e:  # crosses back as itself (SdgateError subclasses pickle)
            value, ok = e, False
        try:
            payload = _dumps(value)
        except Exception as e:
            payload, ok = _dumps(GenerationFailed(f"unpicklable result: {e}")), False
        state.put(f"rpc:{item['id']}", {"ok": ok, "payload": payload}, ttl=3600)
    except Exception:
        log.exception("worker item %s", item.get("kind"))

"""Progress, interrupt and skip per task: the engine writes steps here, the web layer reads them.

A task is known by the id the request carried (A1111's `force_task_id`) or one the engine made
up, per owner (API key id). Upstream A1111 only has one global progress; here every task has its
own, and "the current task" is the most recently started one still running.

The registry (`TASKS`) is bound to the cross-container state store (shared/state.py): the side
that generates publishes each task's record (steps, calls, times, previews) there and, at every
step (at most every SYNC_SECONDS), reads the interrupt / skip flags the web tier wrote there. So
`/progress`, `/interrupt` and `/skip` work when the web app and the GPU run in different
processes or containers. A flag is a fresh token under a task's key (or the owner's "every task"
key): a task compares it with the token it saw when it opened (interrupt) or when its current
pipeline call began (skip), so stale flags of an earlier run with the same id never stop it and
no two machines' clocks are compared.
"""

from __future__ import annotations

import base64
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import anyio

from shared.state import MemoryState, State

KEEP_FINISHED = 256  # finished tasks kept for late progress polls (in this process)
SYNC_SECONDS = 0.1  # a running task publishes its record and reads its flags at most this often
TTL = 3600.0  # seconds a task's record and flags stay in the state store
ALL = "*"  # the task id of an owner's "every task" flags
RECORD_FIELDS = ("id", "owner", "job", "job_count", "job_no", "sampling_step", "sampling_steps",
                 "created", "started", "finished", "interrupted", "skipped", "in_call",
                 "timestamp", "partial_images", "step_seconds")


def _key(kind: str, owner: str, task_id: str) -> str:
    return f"task:{kind}:{owner}:{task_id}"


@dataclass
class Task:
    """One generation's progress, in A1111's terms (jobs = pipeline calls, steps per call)."""

    id: str
    owner: str = ""  # the API key id whose request this is: only it sees or stops the task
    job: str = ""
    job_count: int = 1
    job_no: int = 0  # pipeline calls finished
    sampling_step: int = 0
    sampling_steps: int = 0
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    interrupted: bool = False
    skipped: bool = False
    in_call: bool = False  # a pipeline call is running (its steps count toward the fraction)
    timestamp: str = field(default_factory=lambda: time.strftime("%Y%m%d%H%M%S"))
    # streaming previews (OpenAI partial_images): the engine sets preview_fn (latents -> bytes)
    partial_images: int = 0
    preview_fn: Callable | None = None
    previews: list[bytes] = field(default_factory=list)
    step_seconds: float = 0.0  # measured mean seconds per sampling step
    # bound by the registry that opened it (None for snapshots read back from the store)
    registry: TaskRegistry | None = field(default=None, repr=False, compare=False)
    _seen: dict = field(default_factory=dict, repr=False, compare=False)  # flag tokens at start
    _synced: float = field(default=0.0, repr=False, compare=False)
    _last_step: float | None = field(default=None, repr=False, compare=False)
    _steps_timed: int = field(default=0, repr=False, compare=False)

    # -- the state store ------------------------------------------------------------------------
    def record(self) -> dict:
        """The published fields, previews as base64."""
        out = {name: getattr(self, name) for name in RECORD_FIELDS}
        out["previews"] = [base64.b64encode(p).decode() for p in self.previews]
        return out

    @classmethod
    def from_record(cls, data: dict) -> Task:
        """A read-only snapshot of a task another process (or this one) published."""
        task = cls(**{k: data[k] for k in RECORD_FIELDS if k in data})
        task.previews = [base64.b64decode(p) for p in data.get("previews", [])]
        return task

    def sync(self, force: bool = False) -> None:
        """Publish the record and pick up interrupt / skip flags (throttled unless forced)."""
        reg = self.registry
        if reg is None:
            return
        now = time.monotonic()
        if not force and now - self._synced < SYNC_SECONDS:
            return
        self._synced = now
        try:
            reg.state.put(_key("rec", self.owner, self.id), self.record(), ttl=TTL)
            if self.finished is None:
                flags = reg.state.get_many(reg.flag_keys(self.owner, self.id))
                self.apply_flags(flags)
        except Exception:  # progress is best effort: a store hiccup never fails a generation
            import logging

            logging.getLogger(__name__).exception("task %s: state store", self.id)

    def apply_flags(self, flags: list) -> None:
        """[interrupt, interrupt-all, skip, skip-all] tokens: any that changed since seen."""
        names = ("interrupt", "interrupt_all", "skip", "skip_all")
        changed = {n for n, tok in zip(names, flags)
                   if tok is not None and tok != self._seen.get(n)}
        if changed & {"interrupt", "interrupt_all"}:
            self.interrupted = True
        if changed & {"skip", "skip_all"}:
            self.skipped = True

    def _baseline(self, names: tuple[str, ...]) -> None:
        """Remember the current flag tokens, so only later flags count."""
        if self.registry is None:
            return
        try:
            flags = self.registry.state.get_many(self.registry.flag_keys(self.owner, self.id))
        except Exception:
            return
        for n, tok in zip(("interrupt", "interrupt_all", "skip", "skip_all"), flags):
            if n in names:
                self._seen[n] = tok

    def _time_step(self) -> None:
        now = time.monotonic()
        if self._last_step is not None:
            dt, n = now - self._last_step, self._steps_timed
            self.step_seconds = (self.step_seconds * n + dt) / (n + 1)
            self._steps_timed = n + 1
        self._last_step = now

    # -- written by the engine --------------------------------------------------------------
    def begin(self, job: str, job_count: int) -> None:
        self.job, self.job_count, self.started = job, max(1, job_count), time.time()
        if self.registry is not None:
            self.registry.started(self)
        self.sync(force=True)

    def begin_call(self, steps: int) -> None:
        """A pipeline call of `steps` steps starts; a pending skip applied to the previous one."""
        self.sampling_step, self.sampling_steps, self.skipped = 0, steps, False
        self.in_call = True
        self._last_step = time.monotonic()
        self._baseline(("skip", "skip_all"))
        self.sync(force=True)

    def end_call(self) -> None:
        self.job_no = min(self.job_no + 1, self.job_count)
        self.in_call = False
        self.sync(force=True)

    def finish(self) -> None:
        self.finished = time.time()
        self.sync(force=True)
        if self.registry is not None and self._steps_timed:
            self.registry.measured(self.step_seconds)

    def on_step_end(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        """diffusers' callback_on_step_end: count the step; stop the loop on interrupt or skip."""
        self.sampling_step = min(step + 1, self.sampling_steps or step + 1)
        self._time_step()
        self.preview(step, callback_kwargs)
        self.sync(force=len(self.previews) > 0 and step + 1 >= self.sampling_steps)
        if self.interrupted or self.skipped:
            pipe._interrupt = True  # diffusers pipelines skip their remaining steps
        return callback_kwargs

    def preview(self, step: int, callback_kwargs: dict) -> None:
        """At evenly spaced steps, keep a preview of the latents (partial_images of them)."""
        n, k = self.sampling_steps, self.partial_images
        if not (k and self.preview_fn and n and "latents" in callback_kwargs):
            return
        due = {max(1, round(n * (i + 1) / (k + 1))) for i in range(k)}
        if step + 1 in due and len(self.previews) < k:
            self.previews.append(self.preview_fn(callback_kwargs["latents"]))

    # -- read by the web layer --------------------------------------------------------------
    def fraction(self) -> float:
        """Done fraction in [0, 1], counting finished calls and steps of the current one."""
        if self.finished is not None:
            return 1.0
        if self.started is None:
            return 0.0
        done = self.job_no / self.job_count
        if self.in_call and self.sampling_steps:
            done += self.sampling_step / self.sampling_steps / self.job_count
        return min(done, 1.0)

    def eta(self) -> float:
        """Seconds left, extrapolated from the time so far."""
        frac = self.fraction()
        if self.started is None or self.finished is not None or frac <= 0:
            return 0.0
        spent = time.time() - self.started
        return max(0.0, spent / frac - spent)


class TaskGroup:
    """The tasks of several requests that share one pipeline call (dynamic batching).

    Each task counts the steps; the call stops early only when every task asks for it, so one
    client's interrupt never cuts its companions' images short.
    """

    def __init__(self, tasks: list[Task]):
        self.tasks = tasks

    @property
    def interrupted(self) -> bool:
        return all(t.interrupted for t in self.tasks)

    def begin(self, job: str, job_count: int) -> None:
        for t in self.tasks:
            t.begin(job, job_count)

    def begin_call(self, steps: int) -> None:
        for t in self.tasks:
            t.begin_call(steps)

    def end_call(self) -> None:
        for t in self.tasks:
            t.end_call()

    def finish(self) -> None:
        for t in self.tasks:
            t.finish()

    def on_step_end(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        for t in self.tasks:
            t.sampling_step = min(step + 1, t.sampling_steps or step + 1)
            t._time_step()
            t.preview(step, callback_kwargs)
            t.sync()
        if all(t.interrupted or t.skipped for t in self.tasks):
            pipe._interrupt = True
        return callback_kwargs


class TaskRegistry:
    """Tasks by (owner, id): live ones opened in this process, and the state store's records.

    Every read and flag takes the caller's owner (API key id): one key never sees or stops
    another key's tasks, even when it guesses or reuses the other's task id. Reads prefer this
    process's live task and fall back to the store (a task running in another container); the
    `a`-prefixed forms run the blocking ones in a worker thread, for async code.
    """

    def __init__(self, keep: int = KEEP_FINISHED, state: State | None = None):
        self._tasks: OrderedDict[tuple[str, str], Task] = OrderedDict()
        self._lock = threading.Lock()
        self.keep = keep
        self.state: State = state or MemoryState()

    def bind(self, state: State) -> None:
        """Publish to and read from this store from now on (the app's or the GPU worker's)."""
        self.state = state

    @staticmethod
    def flag_keys(owner: str, task_id: str) -> list[str]:
        return [_key("interrupt", owner, task_id), _key("interrupt", owner, ALL),
                _key("skip", owner, task_id), _key("skip", owner, ALL)]

    # -- the generating side ----------------------------------------------------------------
    def open(self, task_id: str | None, owner: str = "") -> Task:
        """The task for an id (created if new; a fresh id when None)."""
        key = (owner, task_id or uuid.uuid4().hex)
        with self._lock:
            task = self._tasks.get(key)
            if task is None or task.finished is not None:
                task = self._tasks[key] = Task(key[1], owner=owner, registry=self)
                fresh = True
            else:
                fresh = False
            self._tasks.move_to_end(key)
            self._forget_old()
        if fresh:
            task._baseline(("interrupt", "interrupt_all", "skip", "skip_all"))
            task.sync(force=True)
            self._put(_key("last", owner, ""), task.id)
        return task

    def started(self, task: Task) -> None:
        """A task began generating: it is now the owner's current one."""
        self._put(_key("current", task.owner, ""), task.id)

    def measured(self, step_seconds: float) -> None:
        """Fold a finished task's mean step time into the shared measurement."""
        try:
            old = self.state.get("stats:step_seconds")
            self.state.put("stats:step_seconds", step_seconds if not old else
                           0.7 * old + 0.3 * step_seconds)
        except Exception:
            pass

    def step_seconds(self) -> float | None:
        """The measured seconds per sampling step (None before any task finished)."""
        return self.state.get("stats:step_seconds")

    async def astep_seconds(self) -> float | None:
        return await self.state.aget("stats:step_seconds")

    def _put(self, key: str, value) -> None:
        try:
            self.state.put(key, value, ttl=TTL)
        except Exception:
            pass

    # -- the web side ----------------------------------------------------------------------------
    def get(self, task_id: str, owner: str = "") -> Task | None:
        with self._lock:
            live = self._tasks.get((owner, task_id))
        if live is not None:
            return live
        data = self.state.get(_key("rec", owner, task_id))
        return Task.from_record(data) if data else None

    def running(self, owner: str = "") -> list[Task]:
        """This process's running tasks of the owner."""
        with self._lock:
            return [t for (o, _), t in self._tasks.items() if o == owner and t.finished is None]

    def current(self, owner: str = "") -> Task | None:
        """The owner's most recently started task that is still running."""
        pointed = self.state.get(_key("current", owner, ""))
        task = self.get(pointed, owner) if pointed else None
        if task is not None and task.finished is None and task.started is not None:
            return task
        started = [t for t in self.running(owner) if t.started is not None]
        return max(started, key=lambda t: t.started) if started else None

    def last(self, owner: str = "") -> Task | None:
        """The owner's most recently opened task, finished or not (idle /progress)."""
        pointed = self.state.get(_key("last", owner, ""))
        task = self.get(pointed, owner) if pointed else None
        if task is not None:
            return task
        with self._lock:
            mine = [t for (o, _), t in self._tasks.items() if o == owner]
        return mine[-1] if mine else None

    def interrupt(self, task_id: str | None = None, owner: str = "") -> int:
        """Stop one of the owner's tasks, or all of them (A1111's interrupt); how many."""
        return self._flag(task_id, owner, "interrupt")

    def skip(self, task_id: str | None = None, owner: str = "") -> int:
        """End the current pipeline call of one of the owner's tasks (or all) early."""
        return self._flag(task_id, owner, "skip")

    async def aget(self, task_id: str, owner: str = "") -> Task | None:
        return await anyio.to_thread.run_sync(self.get, task_id, owner)

    async def acurrent(self, owner: str = "") -> Task | None:
        return await anyio.to_thread.run_sync(self.current, owner)

    async def ainterrupt(self, task_id: str | None = None, owner: str = "") -> int:
        return await anyio.to_thread.run_sync(self.interrupt, task_id, owner)

    async def askip(self, task_id: str | None = None, owner: str = "") -> int:
        return await anyio.to_thread.run_sync(self.skip, task_id, owner)

    def _flag(self, task_id: str | None, owner: str, flag: str) -> int:
        attr = "interrupted" if flag == "interrupt" else "skipped"
        if task_id:
            task = self.get(task_id, owner)
            if task is None or task.finished is not None:
                return 0
            self.state.put(_key(flag, owner, task_id), uuid.uuid4().hex, ttl=TTL)
            if task.registry is self:  # live here: no need to wait for its next sync
                setattr(task, attr, True)
            return 1
        self.state.put(_key(flag, owner, ALL), uuid.uuid4().hex, ttl=TTL)
        hit = self.running(owner)
        for t in hit:
            setattr(t, attr, True)
        if hit:
            return len(hit)
        return 1 if self.current(owner) is not None else 0

    def _forget_old(self) -> None:
        finished = [k for k, t in self._tasks.items() if t.finished is not None]
        for k in finished[: max(0, len(finished) - self.keep)]:
            del self._tasks[k]


TASKS = TaskRegistry()

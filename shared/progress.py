"""Progress, interrupt and skip per task: the engine writes steps here, the web layer reads them.

One registry per process (`TASKS`). A task is known by the id the request carried (A1111's
`force_task_id`) or one the engine made up. Upstream A1111 only has one global progress; here
every task has its own, and "the current task" is the most recently started one still running.
Across processes (Modal GPU containers) this registry sees only its own process's tasks.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

KEEP_FINISHED = 256  # finished tasks kept for late progress polls


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

    # -- written by the engine --------------------------------------------------------------
    def begin(self, job: str, job_count: int) -> None:
        self.job, self.job_count, self.started = job, max(1, job_count), time.time()

    def begin_call(self, steps: int) -> None:
        """A pipeline call of `steps` steps starts; a pending skip applied to the previous one."""
        self.sampling_step, self.sampling_steps, self.skipped = 0, steps, False
        self.in_call = True

    def end_call(self) -> None:
        self.job_no = min(self.job_no + 1, self.job_count)
        self.in_call = False

    def finish(self) -> None:
        self.finished = time.time()

    def on_step_end(self, pipe, step: int, timestep, callback_kwargs: dict) -> dict:
        """diffusers' callback_on_step_end: count the step; stop the loop on interrupt or skip."""
        self.sampling_step = min(step + 1, self.sampling_steps or step + 1)
        self.preview(step, callback_kwargs)
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
            t.preview(step, callback_kwargs)
        if all(t.interrupted or t.skipped for t in self.tasks):
            pipe._interrupt = True
        return callback_kwargs


class TaskRegistry:
    """Thread-safe tasks by (owner, id), bounded: the oldest finished tasks are forgotten.

    Every read and flag takes the caller's owner (API key id): one key never sees or stops
    another key's tasks, even when it guesses or reuses the other's task id.
    """

    def __init__(self, keep: int = KEEP_FINISHED):
        self._tasks: OrderedDict[tuple[str, str], Task] = OrderedDict()
        self._lock = threading.Lock()
        self.keep = keep

    def open(self, task_id: str | None, owner: str = "") -> Task:
        """The task for an id (created if new; a fresh id when None)."""
        key = (owner, task_id or uuid.uuid4().hex)
        with self._lock:
            task = self._tasks.get(key)
            if task is None or task.finished is not None:
                task = self._tasks[key] = Task(key[1], owner=owner)
            self._tasks.move_to_end(key)
            self._forget_old()
            return task

    def get(self, task_id: str, owner: str = "") -> Task | None:
        with self._lock:
            return self._tasks.get((owner, task_id))

    def running(self, owner: str = "") -> list[Task]:
        with self._lock:
            return [t for (o, _), t in self._tasks.items() if o == owner and t.finished is None]

    def current(self, owner: str = "") -> Task | None:
        """The owner's most recently started task that is still running."""
        started = [t for t in self.running(owner) if t.started is not None]
        return max(started, key=lambda t: t.started) if started else None

    def last(self, owner: str = "") -> Task | None:
        """The owner's most recently opened task, finished or not (idle /progress)."""
        with self._lock:
            mine = [t for (o, _), t in self._tasks.items() if o == owner]
        return mine[-1] if mine else None

    def interrupt(self, task_id: str | None = None, owner: str = "") -> int:
        """Stop one of the owner's tasks, or all of them (A1111's interrupt); how many."""
        return self._flag(task_id, owner, "interrupted")

    def skip(self, task_id: str | None = None, owner: str = "") -> int:
        """End the current pipeline call of one of the owner's tasks (or all) early."""
        return self._flag(task_id, owner, "skipped")

    def _flag(self, task_id: str | None, owner: str, flag: str) -> int:
        hit = [t for t in ([self.get(task_id, owner)] if task_id else self.running(owner))
               if t is not None and t.finished is None]
        for t in hit:
            setattr(t, flag, True)
        return len(hit)

    def _forget_old(self) -> None:
        finished = [k for k, t in self._tasks.items() if t.finished is not None]
        for k in finished[: max(0, len(finished) - self.keep)]:
            del self._tasks[k]


TASKS = TaskRegistry()

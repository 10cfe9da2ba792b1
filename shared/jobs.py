"""Jobs: every long or asynchronous generation gets an id and a stored state.

The store is pluggable: locally a file database, on Modal a `modal.Dict`. Stores hold plain
JSON-able dicts (Job.model_dump(mode="json")), so any key-value store can implement JobStore.
"""

from __future__ import annotations

import enum
import threading
import time
from typing import Protocol

from pydantic import BaseModel, Field


class JobStatus(str, enum.Enum):
    processing = "processing"
    success = "success"
    failed = "failed"


class Job(BaseModel):
    """One job's state; `result` is a GenerationResult dumped to JSON (no image bytes)."""

    id: str
    status: JobStatus = JobStatus.processing
    created: float = Field(default_factory=time.time)
    deadline: float = 0.0  # unix time after which a job still processing is failed
    eta: float = 0.0  # seconds expected from creation
    dialect: str = ""
    request: dict = Field(default_factory=dict)  # the dialect's own request, for rendering
    future_links: list[str] = Field(default_factory=list)
    result: dict | None = None
    error: str | None = None
    webhook: str | None = None
    track_id: str | None = None
    webhook_status: str | None = None
    call_id: str | None = None  # the running work's handle (Modal FunctionCall id); jobrunner.py


class JobStore(Protocol):
    """Where job states live."""

    def get(self, job_id: str) -> Job | None: ...

    def put(self, job: Job) -> None: ...


class MemoryJobStore:
    """A dict in this process (tests; a single local process without persistence)."""

    def __init__(self):
        self._jobs: dict[str, dict] = {}
        self._lock = threading.Lock()

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            data = self._jobs.get(job_id)
        return Job.model_validate(data) if data else None

    def put(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.id] = job.model_dump(mode="json")

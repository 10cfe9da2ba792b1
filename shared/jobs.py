"""Jobs: every long or asynchronous generation gets an id and a stored state.

The store is pluggable: locally a file database, on Modal a `modal.Dict`. Stores hold plain
JSON-able dicts (Job.model_dump(mode="json")), so any key-value store can implement JobStore.
"""

from __future__ import annotations

import enum
import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
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
    # -- added for the runner (shared/jobrunner.py) --
    internal: dict | None = None  # the GenerationRequest as JSON (images base64), to re-run
    keep_bytes: bool = False  # the dialect wants the images' bytes (base64 output)
    images_base64: list[str] = Field(default_factory=list)  # set when keep_bytes
    finished: float | None = None  # unix time of success / failure
    owner: str = ""  # the API key id that made it: only that key can fetch it

    def overdue(self, now: float | None = None) -> bool:
        """Still processing after its deadline."""
        return (self.status is JobStatus.processing and self.deadline > 0
                and (now or time.time()) > self.deadline)


class JobStore(Protocol):
    """Where job states live."""

    def get(self, job_id: str) -> Job | None: ...

    def put(self, job: Job) -> None: ...

    def purge(self, before: float) -> int:
        """Delete final jobs that finished before `before` (unix time); how many went."""


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

    def purge(self, before: float) -> int:
        """Delete jobs that finished before `before` (unix time); how many went."""
        with self._lock:
            old = [k for k, d in self._jobs.items() if expired(d, before)]
            for k in old:
                del self._jobs[k]
        return len(old)

    def processing(self) -> list[Job]:
        """Jobs still processing (start-up recovery and the deadline watchdog)."""
        with self._lock:
            rows = [d for d in self._jobs.values() if d["status"] == JobStatus.processing.value]
        return [Job.model_validate(d) for d in rows]


class SqliteJobStore:
    """A SQLite file: job state survives a server restart. One connection per call (threads)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, status TEXT NOT NULL,"
                       " data TEXT NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status)")

    @contextmanager
    def _connect(self):
        db = sqlite3.connect(self.path, timeout=30)
        try:
            with db:  # commits, or rolls back on error
                yield db
        finally:
            db.close()

    def get(self, job_id: str) -> Job | None:
        with self._connect() as db:
            row = db.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return Job.model_validate_json(row[0]) if row else None

    def put(self, job: Job) -> None:
        data = json.dumps(job.model_dump(mode="json"))
        with self._connect() as db:
            db.execute("INSERT OR REPLACE INTO jobs (id, status, data) VALUES (?, ?, ?)",
                       (job.id, job.status.value, data))

    def purge(self, before: float) -> int:
        """Delete jobs that finished before `before` (unix time); how many went."""
        with self._connect() as db:
            cur = db.execute("DELETE FROM jobs WHERE status != ? AND "
                             "COALESCE(json_extract(data, '$.finished'), "
                             "json_extract(data, '$.created')) < ?",
                             (JobStatus.processing.value, before))
        return cur.rowcount

    def processing(self) -> list[Job]:
        """Jobs still processing (start-up recovery and the deadline watchdog)."""
        with self._connect() as db:
            rows = db.execute("SELECT data FROM jobs WHERE status = ?",
                              (JobStatus.processing.value,)).fetchall()
        return [Job.model_validate_json(r[0]) for r in rows]


def expired(data: dict, before: float) -> bool:
    """A stored job (as JSON) that is final and finished before `before`."""
    if data.get("status") == JobStatus.processing.value:
        return False
    return (data.get("finished") or data.get("created") or 0) < before


def make_job_store(settings) -> JobStore:
    """The local job store the settings ask for: a SQLite file, or memory for ":memory:"."""
    if str(settings.jobs_db) in ("", ":memory:"):
        return MemoryJobStore()
    return SqliteJobStore(settings.jobs_db)

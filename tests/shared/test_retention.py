"""Retention: finished jobs and local output files older than SDGATE_RETENTION_DAYS go; running
jobs and recent results stay."""

from __future__ import annotations

import os
import time

import pytest

from shared.config import Settings
from shared.jobs import Job, JobStatus, MemoryJobStore, SqliteJobStore
from shared.retention import sweep
from shared.storage import LocalStorage

DAY = 86400


@pytest.fixture(params=["memory", "sqlite"])
def store(request, tmp_path):
    return MemoryJobStore() if request.param == "memory" else SqliteJobStore(tmp_path / "j.db")


def test_old_finished_jobs_and_files_go_the_rest_stays(store, tmp_path):
    now = time.time()
    store.put(Job(id="old-done", status=JobStatus.success, created=now - 10 * DAY,
                  finished=now - 9 * DAY))
    store.put(Job(id="old-failed", status=JobStatus.failed, created=now - 10 * DAY,
                  finished=now - 8 * DAY))
    store.put(Job(id="old-running", created=now - 10 * DAY))  # the watchdog's, not ours
    store.put(Job(id="new-done", status=JobStatus.success, created=now - DAY,
                  finished=now - DAY))
    storage = LocalStorage(tmp_path / "out", "http://x")
    storage.put("2026/old/0.png", b"old", "image/png")
    storage.put("2026/new/0.png", b"new", "image/png")
    old = storage.path_for("2026/old/0.png")
    os.utime(old, (now - 9 * DAY, now - 9 * DAY))

    settings = Settings(_env_file=None, retention_days=7)
    assert sweep(settings, store, storage, now) == {"jobs": 2, "files": 1}
    assert store.get("old-done") is None and store.get("old-failed") is None
    assert store.get("old-running") is not None and store.get("new-done") is not None
    assert not old.exists() and not old.parent.exists()  # the emptied folder went too
    assert storage.path_for("2026/new/0.png").read_bytes() == b"new"
    assert sweep(settings, store, storage, now) == {"jobs": 0, "files": 0}


def test_retention_zero_keeps_everything(tmp_path):
    store = MemoryJobStore()
    store.put(Job(id="ancient", status=JobStatus.success, created=1.0, finished=2.0))
    assert sweep(Settings(_env_file=None, retention_days=0), store, None) == {}
    assert store.get("ancient") is not None


def test_the_app_sweeps_on_start(make_settings, make_app, tmp_path):
    from fastapi.testclient import TestClient

    app = make_app(retention_days=1)
    app.state.jobs.store.put(Job(id="stale", status=JobStatus.success, created=1.0,
                                 finished=2.0))
    with TestClient(app):
        for _ in range(500):  # the first sweep runs at start, in a worker thread
            if app.state.jobs.store.get("stale") is None:
                break
            time.sleep(0.01)
    assert app.state.jobs.store.get("stale") is None

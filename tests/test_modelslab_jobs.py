"""Jobs: the SQLite store, restart recovery, and deadlines (no job stays processing forever)."""

from __future__ import annotations

import asyncio
import time

from fastapi.testclient import TestClient

from shared.jobrunner import dump_request, load_request
from shared.jobs import Job, JobStatus, SqliteJobStore
from tests.http_helpers import SMALL, fetch_png, png, poll, receiver


class Stuck:
    """A backend whose generation never ends (a crashed or hung worker)."""

    def __init__(self, real):
        self.storage = real.storage
        self.registry = real.registry

    async def generate(self, req, *, job_id=None, keep_bytes=False):
        await asyncio.Event().wait()

    def native_size(self, model):
        return 512


def stuck_app(make_settings, engine, **kw):
    """An app whose jobs never finish by themselves, with local storage from the settings."""
    from shared.app import create_app
    from shared.backend import LocalBackend
    from shared.storage import make_storage

    settings = make_settings(**kw)
    return create_app(settings, Stuck(LocalBackend(engine, make_storage(settings))))


def test_sqlite_store_round_trip(tmp_path):
    store = SqliteJobStore(tmp_path / "deep" / "jobs.sqlite3")
    job = Job(id="1", dialect="modelslab", future_links=["u"], request={"a": [1]})
    store.put(job)
    assert store.get("1") == job and store.get("2") is None
    assert [j.id for j in store.processing()] == ["1"]
    store.put(job.model_copy(update={"status": JobStatus.success}))
    assert store.processing() == [] and SqliteJobStore(store.path).get("1").status == "success"


def test_internal_request_survives_json():
    from shared.generation import GenerationRequest

    req = GenerationRequest(mode="inpaint", prompt="p", init_image=png(), mask=b"\x89PNG\xff",
                            seed=3, variant=None)
    assert load_request(dump_request(req)) == req


def test_restart_between_submit_and_fetch_loses_no_job(make_settings, engine, make_app):
    with TestClient(stuck_app(make_settings, engine, sync_wait_seconds=0)) as first:
        out = first.post("/api/v3/text2img", json={"prompt": "survive", "samples": "2",
                                                   **SMALL}).json()
        assert out["status"] == "processing"
    # The server is gone with the job unfinished; a new one on the same files takes over.
    with TestClient(make_app(sync_wait_seconds=0)) as second:
        done = poll(second, out["fetch_result"].replace("http://testserver", ""))
        assert done["status"] == "success" and done["output"] == out["future_links"]
        assert done["meta"]["seed"] == out["meta"]["seed"]
        assert all(fetch_png(second, u).size == (64, 64) for u in done["output"])


def test_fetch_fails_a_job_past_its_deadline(make_settings, engine):
    with TestClient(stuck_app(make_settings, engine, sync_wait_seconds=0,
                              job_timeout_seconds=0.2)) as c:
        out = c.post("/api/v3/text2img", json={"prompt": "hang", **SMALL}).json()
        assert out["status"] == "processing"
        time.sleep(0.3)  # past the deadline
        done = c.post(out["fetch_result"], json={}).json()
        assert done["status"] == "failed" and done["error"] == "Job deadline exceeded"


def test_start_fails_overdue_jobs_and_tells_their_webhook(make_app, make_settings):
    with receiver() as rec:
        port = rec.url.rsplit(":", 1)[1]
        store = SqliteJobStore(make_settings().jobs_db)
        store.put(Job(id="1000000000000001", dialect="modelslab", webhook=rec.url,
                      created=time.time() - 100, deadline=time.time() - 1, track_id="t"))
        with TestClient(make_app(allowed_private_hosts=f"127.0.0.1:{port}")) as c:
            assert store.get("1000000000000001").status is JobStatus.failed  # at start-up
            out = c.post("/api/v3/fetch/1000000000000001", json={}).json()
            assert out["status"] == "failed" and out["id"] == 1000000000000001
            rec.wait_for(1)
        assert len(rec.hits) == 1 and b'"track_id":"t"' in rec.hits[0].body


def test_watchdog_fails_overdue_jobs_without_a_fetch(make_settings, engine):
    from shared.jobrunner import WATCHDOG_SECONDS

    with TestClient(stuck_app(make_settings, engine, sync_wait_seconds=0,
                              job_timeout_seconds=0.1)) as c:
        out = c.post("/api/v3/text2img", json={"prompt": "hang", **SMALL}).json()
        store = c.app.state.jobs.store
        for _ in range(100):
            if store.get(str(out["id"])).status is not JobStatus.processing:
                break
            time.sleep(WATCHDOG_SECONDS / 4)
        assert store.get(str(out["id"])).status is JobStatus.failed


def test_finished_jobs_keep_no_copy_of_the_request_images(client):
    from tests.http_helpers import b64png

    out = client.post("/api/v3/img2img", json={"prompt": "a", "init_image": b64png(),
                                               **SMALL}).json()
    job = client.app.state.jobs.store.get(str(out["id"]))
    assert job.status is JobStatus.success and job.internal is None

"""Jobs off the web tier (shared/worker.py): one final transition and one webhook series per job
whoever races for it, duplicate hand-offs ignored, queue depth and eta from the shared store."""

from __future__ import annotations

import asyncio
import time

from standardwebhooks import Webhook

import shared.dialects.modelslab  # noqa: F401 - registers the ModelsLab webhook payload
from shared.config import Settings
from shared.generation import GeneratedImage, GenerationRequest, GenerationResult
from shared.jobs import Job, JobStatus
from shared.state import SqliteState
from shared.worker import HandoffRunner, JobWorker, QueueLauncher, StateJobStore, afinish
from shared import webhooks
from tests.http_helpers import receiver


class FakeBackend:
    """Stands in for LocalBackend.run: counts runs, returns one stored image."""

    def __init__(self):
        self.runs = []

    def run(self, req, job_id, keep_bytes=False):
        self.runs.append((req.task_id, req.owner, job_id))
        return GenerationResult(images=[GeneratedImage(seed=1, width=8, height=8,
                                                       url=f"http://files/{job_id}/0.png")],
                                model="tiny-sd", seed=1, job_id=job_id)


def settings(rec, **kw):
    port = rec.url.rsplit(":", 1)[1]
    return Settings(_env_file=None, allowed_private_hosts=f"127.0.0.1:{port}",
                    webhook_backoff_seconds=0.01, **kw)


def stored_job(store, job_id="4242", webhook=None, deadline=None):
    from shared.jobrunner import dump_request

    job = Job(id=job_id, dialect="modelslab", owner="key_a", webhook=webhook,
              deadline=deadline or time.time() + 600,
              request={"version": "v3", "meta": {}, "fetch_result": "x"},
              internal=dump_request(GenerationRequest(prompt="p", width=64, height=64)))
    store.put(job)
    return job


def test_the_worker_finishes_once_and_sends_one_signed_webhook(tmp_path):
    state = SqliteState(tmp_path / "s.sqlite3")
    store, backend = StateJobStore(state), FakeBackend()
    with receiver() as rec:
        worker = JobWorker(state, backend, settings(rec))
        stored_job(store, webhook=rec.url)
        done = worker.run("4242")
        assert done.status is JobStatus.success and done.result["images"][0]["url"]
        assert worker.run("4242") is None  # a duplicate hand-off: nothing runs or is sent again
        assert backend.runs == [("4242", "key_a", "4242")]  # the job id is its task id
        assert len(rec.hits) == 1 and rec.hits[0].headers["webhook-id"] == "msg_4242"
        secret = webhooks.secret_for(state)  # generated on first use, kept in the store
        assert Webhook(secret).verify(rec.hits[0].body, rec.hits[0].headers)["status"] == "success"
    assert store.get("4242").webhook_status == "success"


def test_a_web_tier_that_expired_the_job_first_keeps_the_worker_from_finishing(tmp_path):
    state = SqliteState(tmp_path / "s.sqlite3")
    store = StateJobStore(state)
    with receiver() as rec:
        worker = JobWorker(state, FakeBackend(), settings(rec))
        stored_job(store, webhook=rec.url)
        failed = asyncio.run(afinish(state, store, "4242", status=JobStatus.failed,
                                     error="Job deadline exceeded"))
        assert failed.status is JobStatus.failed
        assert worker.finish("4242", status=JobStatus.success) is None  # lost the claim
        assert rec.hits == []  # the claim's winner (here: the test) is the only sender
    assert store.get("4242").status is JobStatus.failed


def test_an_overdue_job_is_not_run(tmp_path):
    state = SqliteState(tmp_path / "s.sqlite3")
    store, backend = StateJobStore(state), FakeBackend()
    with receiver() as rec:
        stored_job(store, deadline=time.time() - 1)
        done = JobWorker(state, backend, settings(rec)).run("4242")
    assert done.status is JobStatus.failed and "deadline" in done.error and backend.runs == []


def test_queue_depth_and_eta_come_from_the_shared_store(tmp_path):
    state = SqliteState(tmp_path / "s.sqlite3")
    with receiver() as rec:
        runner = HandoffRunner(state, settings(rec), QueueLauncher(state))
    state.put("stats:job_seconds", 3.0)  # measured by the GPU side
    state.incr("stats:busy", 2)  # two jobs generating on some worker
    state.push("gpu", {"kind": "job", "job_id": "x"})  # one waiting

    async def main():
        await runner.refresh()
        return runner.queue(), runner.eta()

    assert asyncio.run(main()) == (3, 12.0)

"""Jobs: submit, record the outcome on read, survive a new runner on the same store."""

import threading
import time

import anyio
import pytest

from shared.backend import LocalBackend
from shared.generation import GenerationRequest
from shared.jobrunner import DictJobStore, JobRunner, ThreadLauncher
from shared.jobs import Job, JobStatus
from shared.storage import LocalStorage

TINY = dict(prompt="x", width=64, height=64, steps=2)


@pytest.fixture
def backend(engine, tmp_path):
    return LocalBackend(engine, LocalStorage(tmp_path, "http://files.test"))


def run(coro_fn, *args):
    return anyio.run(coro_fn, *args)


def test_dict_store_holds_plain_json():
    mapping = {}
    store = DictJobStore(mapping)
    store.put(Job(id="j1", dialect="modelslab", future_links=["u"]))
    assert mapping["j1"]["status"] == "processing"  # a modal.Dict would hold the same dict
    assert store.get("j1").future_links == ["u"] and store.get("nope") is None


def test_job_finishes_and_the_outcome_is_stored(backend):
    mapping = {}
    finished = []

    async def on_finish(job):
        finished.append(job.id)

    runner = JobRunner(DictJobStore(mapping), ThreadLauncher(backend), on_finish=on_finish)

    async def go():
        job = await runner.submit(Job(id="j1", dialect="test"), GenerationRequest(**TINY))
        assert job.call_id and job.deadline > job.created
        return await runner.get("j1", wait=120)

    job = run(go)
    assert job.status is JobStatus.success, job.error
    urls = [i["url"] for i in job.result["images"]]
    assert urls[0].startswith("http://files.test/files/") and "/j1/0.png" in urls[0]
    assert mapping["j1"]["result"]["images"][0].get("data") is None  # no bytes in the store
    assert finished == ["j1"]
    # Another runner on the same store (a new web container) answers from the stored state.
    again = run(JobRunner(DictJobStore(mapping), ThreadLauncher(backend)).get, "j1")
    assert again.status is JobStatus.success and again.result == job.result


def test_a_failed_generation_fails_the_job(backend):
    runner = JobRunner(DictJobStore({}), ThreadLauncher(backend))

    async def go():
        await runner.submit(Job(id="j2"), GenerationRequest(model="nope", **TINY))
        return await runner.get("j2", wait=120)

    job = run(go)
    assert job.status is JobStatus.failed and "nope" in job.error


class Gate:
    """A backend that finishes only when the test says so."""

    def __init__(self, inner):
        self.inner, self.open = inner, threading.Event()

    async def generate(self, req, *, job_id=None, keep_bytes=False):
        await anyio.to_thread.run_sync(self.open.wait)
        return await self.inner.generate(req, job_id=job_id, keep_bytes=keep_bytes)


def test_running_job_stays_processing_then_times_out(backend):
    gate = Gate(backend)
    runner = JobRunner(DictJobStore({}), ThreadLauncher(gate))

    async def go():
        await runner.submit(Job(id="j3"), GenerationRequest(**TINY))
        running = await runner.get("j3", wait=0.2)
        await runner.submit(Job(id="j4", deadline=time.time() - 1), GenerationRequest(**TINY))
        late = await runner.get("j4")
        return running, late

    try:
        running, late = run(go)
    finally:
        gate.open.set()
    assert running.status is JobStatus.processing
    assert late.status is JobStatus.failed and "in time" in late.error


def test_a_run_unknown_to_this_process_is_reported_lost(backend):
    mapping = {}
    gate = Gate(backend)
    run(JobRunner(DictJobStore(mapping), ThreadLauncher(gate)).submit, Job(id="j5"),
        GenerationRequest(**TINY))
    gate.open.set()
    # A local server restarted: its threads are gone (on Modal the FunctionCall id still works).
    job = run(JobRunner(DictJobStore(mapping), ThreadLauncher(backend)).get, "j5")
    assert job.status is JobStatus.failed and "lost" in job.error


def test_unknown_job_is_none(backend):
    assert run(JobRunner(DictJobStore({}), ThreadLauncher(backend)).get, "missing") is None

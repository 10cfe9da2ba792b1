"""Jobs through launchers: run, record the outcome, survive a new runner on the same store."""

import asyncio
import threading
import time

import anyio
import pytest

from shared.backend import LocalBackend
from shared.config import Settings
from shared.generation import GenerationRequest
from shared.jobrunner import DictJobStore, JobRunner, TaskLauncher, dump_request
from shared.jobs import Job, JobStatus
from shared.storage import LocalStorage

TINY = dict(prompt="x", width=64, height=64, steps=2)


@pytest.fixture
def backend(engine, tmp_path):
    return LocalBackend(engine, LocalStorage(tmp_path, "http://files.test"))


def runner_on(mapping, backend, launcher=None) -> JobRunner:
    return JobRunner(DictJobStore(mapping), backend, Settings(_env_file=None), launcher)


def test_dict_store_holds_plain_json():
    mapping = {}
    store = DictJobStore(mapping)
    store.put(Job(id="j1", dialect="modelslab", future_links=["u"]))
    assert mapping["j1"]["status"] == "processing"  # a modal.Dict would hold the same dict
    assert store.get("j1").future_links == ["u"] and store.get("nope") is None


def test_job_finishes_and_the_outcome_is_stored(backend):
    mapping = {}

    async def go():
        runner = runner_on(mapping, backend)
        job = runner.submit(Job(id="j1", dialect="test"), GenerationRequest(**TINY))
        assert job.deadline > job.created
        done = await runner.wait("j1", 120)
        await runner.stop()
        return done

    job = anyio.run(go)
    assert job.status is JobStatus.success, job.error
    assert job.call_id == "j1"  # the TaskLauncher's handle
    urls = [i["url"] for i in job.result["images"]]
    assert urls[0].startswith("http://files.test/files/") and "/j1/0.png" in urls[0]
    assert mapping["j1"]["result"]["images"][0].get("data") is None  # no bytes in the store
    # Another runner on the same store (a new web container) answers from the stored state.
    again = runner_on(mapping, backend).get("j1")
    assert again.status is JobStatus.success and again.result == job.result


def test_a_failed_generation_fails_the_job(backend):
    async def go():
        runner = runner_on({}, backend)
        runner.submit(Job(id="j2"), GenerationRequest(model="nope", **TINY))
        return await runner.wait("j2", 120)

    job = anyio.run(go)
    assert job.status is JobStatus.failed and "nope" in job.error


class Gate:
    """A backend that finishes only when the test says so; counts its runs."""

    def __init__(self, inner):
        self.inner, self.open, self.runs = inner, threading.Event(), 0

    async def generate(self, req, *, job_id=None, keep_bytes=False):
        self.runs += 1
        await anyio.to_thread.run_sync(self.open.wait)
        return await self.inner.generate(req, job_id=job_id, keep_bytes=keep_bytes)


def test_running_job_stays_processing_and_an_overdue_one_fails(backend):
    gate = Gate(backend)

    async def go():
        runner = runner_on({}, gate)
        runner.submit(Job(id="j3"), GenerationRequest(**TINY))
        running = await runner.wait("j3", 0.2)
        runner.submit(Job(id="j4", deadline=time.time() - 1), GenerationRequest(**TINY))
        late = runner.get("j4")
        gate.open.set()
        await runner.stop()
        return running, late

    try:
        running, late = anyio.run(go)
    finally:
        gate.open.set()
    assert running.status is JobStatus.processing
    assert late.status is JobStatus.failed and "deadline" in late.error


def test_a_run_lost_with_its_process_is_run_again(backend):
    # What a local server that died mid-run leaves in its store: processing, with a handle that
    # no launcher of the new process knows, and the request to run again.
    mapping = {}
    req = GenerationRequest(seed=3, **TINY)
    DictJobStore(mapping).put(Job(id="j5", call_id="j5", internal=dump_request(req)))

    async def restarted():
        runner = runner_on(mapping, backend)
        return await runner.wait("j5", 120)

    job = anyio.run(restarted)
    assert job.status is JobStatus.success and job.result["seed"] == 3


class SharedLauncher(TaskLauncher):
    """Like Modal's SpawnLauncher: runs outlive the runner that started them."""

    runs: dict = {}

    def __init__(self, backend):
        super().__init__(backend)
        self._runs = SharedLauncher.runs


def test_a_run_started_elsewhere_is_awaited_not_rerun(backend):
    mapping = {}
    gate = Gate(backend)

    async def go():
        first = runner_on(mapping, gate, SharedLauncher(gate))
        first.submit(Job(id="j6"), GenerationRequest(**TINY))
        await asyncio.sleep(0.1)
        other = runner_on(mapping, gate, SharedLauncher(gate))  # another web container
        gate.open.set()
        job = await other.wait("j6", 120)
        await first.stop()
        return job

    job = anyio.run(go)
    assert job.status is JobStatus.success and gate.runs == 1


def test_unknown_job_is_none(backend):
    assert runner_on({}, backend).get("missing") is None

"""The deployed shape on one machine, unable to cheat: the web tier (`python -m shared.cli serve
--worker external`) and a worker process running the GPU class's code (`python -m
functions.local_worker`, Generator methods via `.local()`) share no memory, only the SQLite state
file (plus the models folder and the result files, as Modal's volume and bucket).

Progress, interrupt, skip, per-key options, jobs and webhooks are driven over HTTP against the
web process; one test kill -9s the web process in the middle of a job.
"""

from __future__ import annotations

import base64
import io
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from standardwebhooks import Webhook

from tests.conftest import free_port
from tests.http_helpers import receiver

ROOT = Path(__file__).resolve().parents[2]
KA, KB = "sk-split-a", "sk-split-b"
A = {"Authorization": f"Bearer {KA}"}
B = {"Authorization": f"Bearer {KB}"}
LONG = 150  # A1111's most steps: at 128 px, four calls of them take a CPU many seconds


class Topology:
    def __init__(self, tmp: Path, models_dir: Path, **env):
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("SDGATE_")}
        self.env.update({
            "SDGATE_STATE_DB": str(tmp / "state.sqlite3"), "SDGATE_MODELS_DIR": str(models_dir),
            "SDGATE_OUTPUT_DIR": str(tmp / "outputs"), "SDGATE_JOBS_DB": str(tmp / "jobs.db"),
            "SDGATE_PUBLIC_URL": self.url, "SDGATE_API_KEYS": f"{KA},{KB}",
            "SDGATE_DEVICE": "cpu", "SDGATE_SYNC_WAIT_SECONDS": "0",
            "SDGATE_WEBHOOK_BACKOFF_SECONDS": "0.05", "SDGATE_SPAM_WINDOW_SECONDS": "0",
            "SDGATE_MAX_BATCH": "1", **env})
        self.web: subprocess.Popen | None = None
        self.worker: subprocess.Popen | None = None

    def _log(self, name):
        return open(self.tmp / f"{name}.log", "ab")

    def start_worker(self):
        self.worker = subprocess.Popen([sys.executable, "-m", "functions.local_worker"], cwd=ROOT,
                                       env=self.env, stdout=self._log("worker"),
                                       stderr=subprocess.STDOUT)

    def start_web(self):
        self.web = subprocess.Popen(
            [sys.executable, "-m", "shared.cli", "serve", "--worker", "external", "--port",
             str(self.port), "--log-level", "warning"], cwd=ROOT, env=self.env,
            stdout=self._log("web"), stderr=subprocess.STDOUT)
        for _ in range(1200):
            assert self.web.poll() is None, (self.tmp / "web.log").read_text()
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("web tier did not start")

    def wait_worker_ready(self):
        for _ in range(3000):
            assert self.worker.poll() is None, (self.tmp / "worker.log").read_text()
            if b"sdgate worker: ready" in (self.tmp / "worker.log").read_bytes():
                return
            time.sleep(0.1)
        raise AssertionError("worker did not start")

    def stop(self):
        for proc in (self.web, self.worker):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def post(self, path, json, headers=A, timeout=300):
        return httpx.post(self.url + path, json=json, headers=headers, timeout=timeout)

    def get(self, path, headers=A):
        return httpx.get(self.url + path, headers=headers, timeout=30)


@contextmanager
def topology(tmp_path, models_dir, **env):
    topo = Topology(tmp_path, models_dir, **env)
    topo.start_worker()
    try:
        topo.start_web()
        topo.wait_worker_ready()
        yield topo
    finally:
        topo.stop()


@pytest.fixture(scope="module")
def split(tmp_path_factory, models_dir):
    with receiver() as rec:
        port = rec.url.rsplit(":", 1)[1]
        with topology(tmp_path_factory.mktemp("split"), models_dir,
                      SDGATE_ALLOWED_PRIVATE_HOSTS=f"127.0.0.1:{port}") as topo:
            topo.receiver = rec
            yield topo


def progress_until(topo, task_id, pred, tries=3000):
    for _ in range(tries):
        p = topo.get(f"/sdapi/v1/progress?id_task={task_id}").json()
        if pred(p):
            return p
        time.sleep(0.05)
    raise AssertionError(f"progress never matched: {p}")


def in_thread(fn):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", fn()))
    t.start()
    return t, out


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=float)


def test_generates_in_the_worker_and_options_are_per_key(split):
    assert split.post("/sdapi/v1/options", {"CLIP_stop_at_last_layers": 2}).status_code == 200
    r = split.post("/sdapi/v1/txt2img", {"prompt": "a red cube", "width": 64, "height": 64,
                                         "steps": 3, "seed": 5})
    assert r.status_code == 200, r.text
    img = pixels(r.json()["images"][0])
    assert img.shape == (64, 64, 3) and np.isfinite(img).all() and img.std() > 0
    assert '"clip_skip": 2' in r.json()["info"]
    assert split.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 2
    assert split.get("/sdapi/v1/options", B).json()["CLIP_stop_at_last_layers"] == 1
    # the web tier keeps nothing: a new web process reads the same options from the file
    split.web.terminate()
    split.web.wait(timeout=30)
    split.start_web()
    assert split.get("/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 2
    assert split.get("/sdapi/v1/options", B).json()["CLIP_stop_at_last_layers"] == 1
    mem = split.get("/sdapi/v1/memory").json()  # asked of the worker process, through the store
    assert mem["ram"]["total"] > 0 and "cuda" in mem


def test_progress_moves_and_interrupt_stops_the_job(split):
    body = {"prompt": "long", "width": 128, "height": 128, "steps": LONG, "n_iter": 4,
            "force_task_id": "int-1"}
    t, out = in_thread(lambda: split.post("/sdapi/v1/txt2img", body))
    first = progress_until(split, "int-1", lambda p: p["state"]["sampling_step"] > 0)
    later = progress_until(split, "int-1", lambda p: p["state"]["sampling_step"] >
                           first["state"]["sampling_step"])
    assert 0 < first["progress"] < later["progress"] < 1
    assert later["state"]["sampling_steps"] == LONG and later["state"]["job_count"] == 4
    split.post("/sdapi/v1/interrupt", {}, headers=B)  # another key's interrupt: nothing stops
    still = progress_until(split, "int-1", lambda p: p["state"]["sampling_step"] >
                           later["state"]["sampling_step"])
    assert still["progress"] < 1
    split.post("/sdapi/v1/interrupt", {})
    t.join(timeout=300)
    r = out["r"]
    assert r.status_code == 200, r.text
    done = split.get("/sdapi/v1/progress?id_task=int-1").json()
    assert done["state"]["interrupted"] is True
    assert done["state"]["job_no"] < 4  # stopped early, in the other process
    assert pixels(r.json()["images"][0]).shape == (128, 128, 3)


def test_skip_ends_the_current_call_early_and_the_next_one_runs(split):
    body = {"prompt": "skip me", "width": 128, "height": 128, "steps": LONG, "n_iter": 2,
            "force_task_id": "skip-1"}
    t, out = in_thread(lambda: split.post("/sdapi/v1/txt2img", body))
    progress_until(split, "skip-1", lambda p: p["state"]["sampling_step"] > 0)
    split.post("/sdapi/v1/skip?id_task=skip-1", {})
    progress_until(split, "skip-1", lambda p: p["state"]["job_no"] == 1)  # the next call runs
    t.join(timeout=300)
    r = out["r"]
    assert r.status_code == 200, r.text
    assert len(r.json()["images"]) == 2  # not an interruption: both calls delivered
    done = split.get("/sdapi/v1/progress?id_task=skip-1").json()
    assert done["state"]["interrupted"] is False and done["state"]["job_no"] == 2


def test_kill_9_of_the_web_tier_mid_job_still_delivers_the_webhook_once(split):
    rec = split.receiver
    before = len(rec.hits)
    out = split.post("/api/v3/text2img", {"key": KA, "prompt": "survive", "width": 128,
                                          "height": 128, "num_inference_steps": 50,
                                          "samples": 2,
                                          "webhook": rec.url + "/hook", "track_id": "k9"}).json()
    assert out["status"] == "processing", out
    job = str(out["id"])
    running = progress_until(split, job, lambda p: p["state"]["sampling_step"] > 0)
    os.kill(split.web.pid, signal.SIGKILL)  # mid-job: the worker process generates it
    assert running["progress"] < 1
    split.web.wait(timeout=30)
    hits = rec.wait_for(before + 1, timeout=300)[before:]
    assert len(hits) >= 1
    split.start_web()
    fetched = None
    for _ in range(600):
        fetched = split.post(f"/api/v3/fetch/{job}", {"key": KA}).json()
        if fetched.get("webhook_status"):
            break
        time.sleep(0.1)
    assert fetched["status"] == "success" and fetched["webhook_status"] == "success", fetched
    got = httpx.get(fetched["output"][0], timeout=30)
    assert Image.open(io.BytesIO(got.content)).size == (128, 128)
    assert len(fetched["output"]) == 2
    mine = [h for h in rec.hits if h.headers.get("webhook-id") == f"msg_{job}"]
    assert len(mine) == 1  # exactly one delivery, by webhook-id
    secret = subprocess.run([sys.executable, "-m", "shared.cli", "webhook-secret"], cwd=ROOT,
                            env=split.env, capture_output=True, text=True,
                            timeout=120).stdout.strip()
    payload = Webhook(secret).verify(mine[0].body, mine[0].headers)
    assert payload["status"] == "success" and str(payload["id"]) == job
    assert payload["track_id"] == "k9"


def test_a_job_past_its_deadline_stops_consuming_the_worker(tmp_path, models_dir):
    with topology(tmp_path, models_dir, SDGATE_JOB_TIMEOUT_SECONDS="3") as topo:
        # work far past the 3 s deadline even on a fast idle machine (about 8x what a loaded
        # 2-core machine does in 3 s), so the deadline, not the end of the run, decides
        out = topo.post("/api/v3/text2img", {"key": KA, "prompt": "too long", "width": 512,
                                             "height": 512, "samples": 4,
                                             "num_inference_steps": 50}).json()
        assert out["status"] == "processing", out
        job = str(out["id"])
        progress_until(topo, job, lambda p: p["state"]["sampling_step"] > 0)
        for _ in range(1200):
            fetched = topo.post(f"/api/v3/fetch/{job}", {"key": KA}).json()
            if fetched["status"] != "processing":
                break
            time.sleep(0.1)
        assert fetched["status"] == "failed" and "deadline" in str(fetched).lower(), fetched
        # the worker's own task stopped far short of its steps...
        done = progress_until(topo, job, lambda p: p["progress"] == 1)  # finished
        assert done["state"]["interrupted"] is True
        assert done["state"]["sampling_step"] < 50
        # ...and it is free: the next generation is served
        r = topo.post("/sdapi/v1/txt2img", {"prompt": "next", "width": 64, "height": 64,
                                            "steps": 2})
        assert r.status_code == 200 and pixels(r.json()["images"][0]).std() > 0


def _usage_rows(db: Path) -> list[tuple]:
    import sqlite3

    if not db.exists():
        return []
    with sqlite3.connect(db) as c:
        return c.execute("select status, images, gpu_seconds, job_id from usage").fetchall()


def test_a_webhook_only_job_is_metered_after_its_web_container_is_gone(tmp_path, models_dir):
    """The container that took the job dies before it ends and nobody fetches it: a later web
    container closes its usage record from the shared list of unmetered jobs."""
    db = tmp_path / "usage.db"
    with receiver() as rec:
        port = rec.url.rsplit(":", 1)[1]
        with topology(tmp_path, models_dir, SDGATE_DATABASE_URL=f"sqlite:///{db}",
                      SDGATE_ALLOWED_PRIVATE_HOSTS=f"127.0.0.1:{port}") as topo:
            out = topo.post("/api/v3/text2img", {
                "key": KA, "prompt": "metered", "width": 128, "height": 128, "samples": 2,
                "num_inference_steps": 30, "webhook": rec.url + "/hook"}).json()
            assert out["status"] == "processing", out
            job = str(out["id"])
            progress_until(topo, job, lambda p: p["state"]["sampling_step"] > 0)
            os.kill(topo.web.pid, signal.SIGKILL)
            topo.web.wait(timeout=30)
            rec.wait_for(1, timeout=300)  # the worker finished the job and sent its webhook
            assert [r[0] for r in _usage_rows(db)] == ["running"]  # nobody closed it yet
            topo.start_web()  # a new web container, which never saw this job
            for _ in range(600):
                rows = _usage_rows(db)
                if rows and rows[0][0] != "running":
                    break
                time.sleep(0.1)
    (status, images, seconds, job_id), = rows
    assert (status, images, job_id) == ("ok", 2, job) and seconds > 0

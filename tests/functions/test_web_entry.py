"""The deployed web entrypoint builds shared's app; it refuses to start open or bucketless."""

import pytest
from fastapi.testclient import TestClient

from functions.web import SpawnLauncher, web
from shared.remote import RemoteBackend
from shared.worker import HandoffRunner, StateJobStore


@pytest.fixture
def web_env(monkeypatch, models_dir, s3_bucket, quiet_modal):
    endpoint, bucket = s3_bucket
    for key in ("SDGATE_API_KEYS", "SDGATE_ALLOW_OPEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SDGATE_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("SDGATE_S3_BUCKET", bucket)
    monkeypatch.setenv("SDGATE_S3_ENDPOINT_URL", endpoint)
    return monkeypatch


def test_refuses_to_start_without_keys(web_env):
    with pytest.raises(RuntimeError, match="no API keys"):
        web.local()


def test_runs_open_only_when_told(web_env):
    web_env.setenv("SDGATE_ALLOW_OPEN", "1")
    with TestClient(web.local()) as c:
        assert c.get("/health").status_code == 200


def test_refuses_to_start_without_a_bucket(web_env):
    web_env.setenv("SDGATE_API_KEYS", "k1")
    web_env.delenv("SDGATE_S3_BUCKET")
    with pytest.raises(RuntimeError, match="S3 bucket"):
        web.local()


def test_wires_the_remote_backend_and_spawned_jobs(web_env):
    web_env.setenv("SDGATE_API_KEYS", "k1")
    api = web.local()
    assert isinstance(api.state.backend, RemoteBackend)
    assert api.state.backend.native_size(None) == 512  # from the mounted weights' configs
    assert isinstance(api.state.jobs, HandoffRunner)  # jobs live in the spawned run_job
    assert isinstance(api.state.jobs.store, StateJobStore)
    assert isinstance(api.state.jobs.launcher, SpawnLauncher)
    with TestClient(api) as c:  # auth is on: the keys came from the secret's variables
        assert c.post("/v1/draw", json={"prompt": "x"}).status_code == 401

"""Shared fixtures: the tiny model (built once), apps on it, a live server, and a real S3 server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# boto3 must never reach a real AWS account from the tests.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["HF_HUB_OFFLINE"] = "1"
# One intra-op thread: on a shared 2-core machine, torch's spinning OpenMP threads made a tiny
# 20-step run take 54 s instead of 0.7 s whenever other processes held the cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.pop("AWS_PROFILE", None)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory) -> Path:
    """A models folder holding the tiny random-weight pipeline as `tiny-sd`."""
    from shared.engine.tiny import TINY_NAME, write_tiny_model

    root = tmp_path_factory.mktemp("models")
    write_tiny_model(root / TINY_NAME)
    return root


@pytest.fixture(scope="session")
def controlnet_models(models_dir) -> Path:
    """The tiny ControlNet under <models_dir>/ControlNet: `tiny-cn/` and `tiny-cn-file.safetensors`."""
    from shared.engine.tiny import write_tiny_controlnet

    if not (models_dir / "ControlNet" / "tiny-cn").is_dir():
        write_tiny_controlnet(models_dir)
    return models_dir / "ControlNet"


@pytest.fixture(scope="session")
def ip_adapter_models(models_dir) -> Path:
    """The tiny IP-Adapter under <models_dir>/IP-Adapter: `tiny-ip-adapter.safetensors` beside
    `image_encoder/`, h94/IP-Adapter's layout."""
    from shared.engine.tiny import write_tiny_ip_adapter

    if not (models_dir / "IP-Adapter" / "tiny-ip-adapter.safetensors").is_file():
        write_tiny_ip_adapter(models_dir)
    return models_dir / "IP-Adapter"


@pytest.fixture(scope="session")
def translator_models(models_dir, tmp_path_factory) -> Path:
    """A models folder with the tiny pipeline (linked) and a tiny MarianMT `translator/zh-en`."""
    from shared.engine.tiny import TINY_NAME
    from shared.engine.tiny_translator import marian

    root = tmp_path_factory.mktemp("trmodels")
    (root / TINY_NAME).symlink_to(models_dir / TINY_NAME, target_is_directory=True)
    marian(root / "translator" / "zh-en")
    return root


@pytest.fixture(scope="session")
def engine(models_dir):
    """One warm engine for the whole session (loading is what we avoid paying per test)."""
    from shared.engine import Engine
    from shared.engine.registry import ModelRegistry

    eng = Engine(ModelRegistry(models_dir))
    eng.warm()
    return eng


@pytest.fixture
def make_settings(models_dir, tmp_path):
    """Settings for a test: tiny model, outputs under tmp_path, overrides as keywords."""
    from shared.config import Settings

    def make(**kw):
        base = dict(models_dir=models_dir, output_dir=tmp_path / "outputs",
                    public_url="http://testserver", jobs_db=tmp_path / "jobs.sqlite3",
                    state_db=tmp_path / "state.sqlite3")
        base.update(kw)
        return Settings(_env_file=None, **base)

    return make


# Every API test runs on both backends (issue 3): "local" is the engine in this process; "remote"
# is the Modal web wiring (shared.remote.RemoteBackend) over the GPU class run in-process.
@pytest.fixture(params=["local", "remote"])
def make_app(request, engine, make_settings, monkeypatch):
    """An app on the shared engine; storage per the settings (local files unless a bucket)."""
    from shared.app import create_app
    from shared.backend import LocalBackend
    from shared.storage import make_storage

    def make(**kw):
        settings = make_settings(**kw)
        if request.param == "remote":
            return create_app(settings, gpu_class_backend(settings, monkeypatch))
        return create_app(settings, LocalBackend(engine, make_storage(settings)))

    return make


def with_tiny(root: Path, models_dir: Path) -> Path:
    """`root` holding the session's tiny-sd (linked): a models folder for tests adding files."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "tiny-sd").symlink_to(models_dir / "tiny-sd", target_is_directory=True)
    return root


def point_engine(engine, monkeypatch, folder: Path) -> None:
    """The session engine reads models from `folder` for this test (its pipeline cache is keyed
    by name, so tiny-sd stays warm); the remote backend reads SDGATE_MODELS_DIR instead."""
    from shared.engine.registry import ModelRegistry

    monkeypatch.setattr(engine, "registry", ModelRegistry(folder))


@pytest.fixture
def client_on(make_app, engine, monkeypatch):
    """client_on(folder, **settings): a TestClient of a make_app app on that models folder."""
    import contextlib

    from fastapi.testclient import TestClient

    with contextlib.ExitStack() as stack:
        def make(folder: Path, **kw):
            point_engine(engine, monkeypatch, folder)
            return stack.enter_context(TestClient(make_app(models_dir=folder, **kw)))

        yield make


def quiet_modal_local():
    """Modal warns on each .local() call of a function with a volume; tests give a models dir."""
    import warnings

    warnings.filterwarnings("ignore", message=r".* is executing locally and will not have access",
                            category=UserWarning)


@pytest.fixture
def quiet_modal():
    """For tests that call Modal functions with .local()."""
    quiet_modal_local()


def gpu_class_backend(settings, monkeypatch):
    """RemoteBackend over functions.generator.Generator run with .local(): the class reads the
    settings from SDGATE_* variables as on Modal, and arguments, results and errors are pickled
    on the way as Modal does."""
    import pickle

    import anyio

    from functions.generator import Generator
    from shared.remote import remote_backend

    quiet_modal_local()
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            monkeypatch.delenv(f"SDGATE_{name.upper()}", raising=False)
        else:
            monkeypatch.setenv(f"SDGATE_{name.upper()}", str(value))
    generator = Generator()
    generator.loaded.local()  # run the enter hooks now, while this app's settings are set

    def call(req, job_id, keep_bytes):
        args = pickle.loads(pickle.dumps((req, job_id, keep_bytes)))
        try:
            result = generator.generate.local(*args)
        except Exception as e:
            raise pickle.loads(pickle.dumps(e)) from None
        return pickle.loads(pickle.dumps(result))

    async def remote(req, job_id, keep_bytes):
        return await anyio.to_thread.run_sync(call, req, job_id, keep_bytes)

    def call_op(name, req):
        args = pickle.loads(pickle.dumps((name, req)))
        try:
            result = generator.op.local(*args)
        except Exception as e:
            raise pickle.loads(pickle.dumps(e)) from None
        return pickle.loads(pickle.dumps(result))

    async def remote_op(name, req):
        return await anyio.to_thread.run_sync(call_op, name, req)

    return remote_backend(settings, remote, remote_op)


@pytest.fixture
def client(make_app):
    """A TestClient on an open app with local storage."""
    from fastapi.testclient import TestClient

    with TestClient(make_app()) as c:
        yield c


# One thread-server helper for the tests and the benchmark (shared/bench/server.py).
from shared.bench.server import free_port, in_thread  # noqa: E402


def running(app, port: int | None = None):
    """Serve an app with uvicorn on 127.0.0.1 in a thread; a context yielding its base URL."""
    return in_thread(app, port or free_port())


@pytest.fixture
def live_server(make_app):
    """Start a real HTTP server on a free port: live_server(**settings) -> base URL."""
    stack = []

    def start(**kw):
        port = free_port()
        kw.setdefault("public_url", f"http://127.0.0.1:{port}")
        cm = running(make_app(**kw), port)
        url = cm.__enter__()
        stack.append(cm)
        return url

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server over real HTTP on 127.0.0.1 (a real S3 protocol endpoint)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh bucket on the test S3 server; yields (endpoint_url, bucket name)."""
    import uuid

    import boto3

    name = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=name)
    return s3_server, name

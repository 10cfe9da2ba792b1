"""The app on the Modal backing of the state store (modal.Dict / modal.Queue stand-ins that fail
any blocking call made from async code): options, progress, interrupt and the spam filter."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from shared.app import create_app
from shared.backend import LocalBackend
from shared.dialects.base import key_id
from shared.progress import TASKS
from shared.state import ModalState
from shared.storage import make_storage
from tests.modal_fakes import FakeDict, FakeQueue

KA, KB = "sk-modal-a", "sk-modal-b"
TINY = {"width": 64, "height": 64, "steps": 2}


@pytest.fixture
def modal_app(engine, make_settings):
    mapping, queue = FakeDict(), FakeQueue()
    settings = make_settings(api_keys=f"{KA},{KB}", sync_wait_seconds=60)
    app = create_app(settings, LocalBackend(engine, make_storage(settings)),
                     state=ModalState(mapping, queue))
    with TestClient(app) as client:
        yield client, mapping


def auth(key):
    return {"Authorization": f"Bearer {key}"}


def test_options_progress_interrupt_and_spam_through_modal_primitives(modal_app):
    client, mapping = modal_app
    r = client.post("/sdapi/v1/options", json={"CLIP_stop_at_last_layers": 3}, headers=auth(KA))
    assert r.status_code == 200, r.text
    assert mapping.aio_calls > 0
    assert client.get("/sdapi/v1/options", headers=auth(KA)).json()["CLIP_stop_at_last_layers"] == 3
    assert client.get("/sdapi/v1/options", headers=auth(KB)).json()["CLIP_stop_at_last_layers"] == 1
    out = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **TINY}, headers=auth(KA))
    assert out.status_code == 200, out.text
    assert json.loads(out.json()["info"])["clip_skip"] == 3
    # the engine published the finished task in the Dict; the web side reads it back from there
    last = client.get("/sdapi/v1/progress", headers=auth(KA)).json()
    assert last["progress"] == 0 and last["state"]["job_timestamp"]
    stored = [k for k in mapping._data if k.startswith(f"task:rec:{key_id(KA)}:")]
    assert stored and mapping._data[stored[0]]["v"]["finished"] is not None
    # an interrupt lands as a token under the caller's key in the Dict
    task = TASKS.open("modal-task", key_id(KA))
    task.begin("txt2img", 1)
    try:
        client.post("/sdapi/v1/interrupt?id_task=modal-task", headers=auth(KB))
        assert f"task:interrupt:{key_id(KB)}:modal-task" not in mapping._data
        client.post("/sdapi/v1/interrupt?id_task=modal-task", headers=auth(KA))
        assert f"task:interrupt:{key_id(KA)}:modal-task" in mapping._data and task.interrupted
    finally:
        task.finish()
    body = {"key": KA, "prompt": "same body twice", "width": 64, "height": 64,
            "num_inference_steps": 2}
    first = client.post("/api/v3/text2img", json=body).json()
    assert first["status"] in ("success", "processing"), first
    second = client.post("/api/v3/text2img", json=body).json()
    assert second["status"] == "error" and "spam" in second.get("tips", "") + str(second)
    assert any(k.startswith("spam:") for k in mapping._data)

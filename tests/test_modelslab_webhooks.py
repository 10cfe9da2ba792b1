"""Webhooks: signed (Standard Webhooks), retried with the same id, never blocking the result."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading

import pytest
from fastapi.testclient import TestClient
from standardwebhooks import Webhook

from shared import webhooks
from tests.http_helpers import SMALL, poll, receiver

SECRET = "whsec_" + base64.b64encode(b"sdgate-test-secret-0123456789").decode()


def hook_settings(rec, **kw) -> dict:
    port = rec.url.rsplit(":", 1)[1]
    return dict(webhook_secret=SECRET, allowed_private_hosts=f"127.0.0.1:{port}",
                webhook_backoff_seconds=0.01, webhook_timeout_seconds=2, **kw)


def wait_webhook_status(client, job_id) -> dict:
    for _ in range(600):
        out = client.post(f"/api/v3/fetch/{job_id}", json={}).json()
        if out.get("webhook_status"):
            return out
        threading.Event().wait(0.1)
    raise AssertionError("webhook never finished")


def test_signature_matches_an_independent_hmac():
    body = '{"status":"success"}'
    header = webhooks.sign(SECRET, "msg_1", 1700000000, body)
    key = base64.b64decode(SECRET.removeprefix("whsec_"))
    mac = hmac.new(key, b"msg_1.1700000000." + body.encode(), hashlib.sha256).digest()
    assert header == "v1," + base64.b64encode(mac).decode()


def test_one_signed_delivery_per_job(make_app):
    with receiver() as rec:
        with TestClient(make_app(**hook_settings(rec))) as c:
            out = c.post("/api/v3/text2img", json={
                "prompt": "a cat", "webhook": rec.url + "/hook", "track_id": "order-7",
                **SMALL}).json()
            assert out["status"] == "success"
            done = wait_webhook_status(c, out["id"])
        assert done["webhook_status"] == "success"
        assert len(rec.hits) == 1
        hit = rec.hits[0]
        payload = Webhook(SECRET).verify(hit.body, hit.headers)  # the package's own check
        assert payload["status"] == "success" and payload["id"] == out["id"]
        assert payload["track_id"] == "order-7" and payload["output"] == out["output"]
        assert hit.headers["webhook-id"] == f"msg_{out['id']}"
        with pytest.raises(Exception):
            Webhook("whsec_" + base64.b64encode(b"another secret").decode()).verify(
                hit.body, hit.headers)


def test_failing_receiver_gets_the_same_webhook_id_three_times(make_app):
    with receiver(statuses=[500, 503]) as rec:
        with TestClient(make_app(**hook_settings(rec))) as c:
            out = c.post("/api/v3/text2img", json={"prompt": "a cat", "webhook": rec.url,
                                                   **SMALL}).json()
            done = wait_webhook_status(c, out["id"])
        assert done["webhook_status"] == "success"
        assert len(rec.hits) == 3
        assert {h.headers["webhook-id"] for h in rec.hits} == {f"msg_{out['id']}"}
        for hit in rec.hits:
            assert Webhook(SECRET).verify(hit.body, hit.headers)["id"] == out["id"]


def test_receiver_that_never_answers_blocks_nothing(make_app):
    hold = threading.Event()
    with receiver(hold=hold) as rec:
        with TestClient(make_app(**hook_settings(rec, webhook_attempts=1))) as c:
            out = c.post("/api/v3/text2img", json={"prompt": "a cat", "webhook": rec.url,
                                                   **SMALL}).json()
            assert out["status"] == "success"
            rec.wait_for(1)  # the delivery is under way and held by the receiver ...
            assert not hold.is_set()
            # ... while the result is fetchable and other requests are served.
            again = c.post(f"/api/v3/fetch/{out['id']}", json={}).json()
            assert again["status"] == "success" and again["webhook_status"] == ""
            other = c.post("/api/v3/text2img", json={"prompt": "a dog", **SMALL}).json()
            assert other["status"] == "success"
            done = wait_webhook_status(c, out["id"])  # it times out, and says so
            assert done["webhook_status"] == "failed"
            hold.set()


def test_failed_job_sends_the_failed_payload(make_settings, engine):
    from shared.app import create_app
    from shared.backend import LocalBackend
    from shared.errors import GenerationFailed
    from shared.storage import make_storage

    class Boom(LocalBackend):
        async def generate(self, req, *, job_id=None, keep_bytes=False):
            raise GenerationFailed("CUDA out of memory")

    with receiver() as rec:
        settings = make_settings(**hook_settings(rec))
        with TestClient(create_app(settings, Boom(engine, make_storage(settings)))) as c:
            out = c.post("/api/v3/text2img", json={"prompt": "x", "webhook": rec.url,
                                                   "track_id": 9, "seed": 1}).json()
            assert out["status"] == "failed"
            rec.wait_for(1)
        payload = Webhook(SECRET).verify(rec.hits[0].body, rec.hits[0].headers)
        assert payload["status"] == "failed" and payload["message"] == "Failed, Try Again"
        assert payload["track_id"] == "9" and payload["id"] == out["id"]


def test_processing_job_delivers_when_it_finishes(make_app):
    with receiver() as rec:
        with TestClient(make_app(**hook_settings(rec, sync_wait_seconds=0))) as c:
            out = c.post("/api/v3/text2img", json={"prompt": "later", "webhook": rec.url,
                                                   **SMALL}).json()
            assert out["status"] == "processing"
            done = poll(c, out["fetch_result"])
            rec.wait_for(1)
        payload = json.loads(rec.hits[0].body)
        assert payload["output"] == out["future_links"] == done["output"]


def test_unconfigured_secret_is_generated_persisted_and_printed_by_the_cli(make_app, tmp_path):
    """No SDGATE_WEBHOOK_SECRET: the delivery is still signed, with a secret the state store
    keeps and `sdgate webhook-secret` prints (the receiver verifies with that)."""
    import subprocess
    import sys
    from pathlib import Path

    with receiver() as rec:
        kw = hook_settings(rec)
        kw.pop("webhook_secret")
        with TestClient(make_app(**kw)) as c:
            out = c.post("/api/v3/text2img", json={"prompt": "unsigned?", "webhook": rec.url,
                                                   **SMALL}).json()
            assert wait_webhook_status(c, out["id"])["webhook_status"] == "success"
            state_db = c.app.state.settings.state_db
    env = {k: v for k, v in __import__("os").environ.items() if k != "SDGATE_WEBHOOK_SECRET"}
    cli = subprocess.run([sys.executable, "-m", "shared.cli", "webhook-secret", "--state-db",
                          str(state_db)], cwd=Path(__file__).resolve().parents[1], env=env,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    secret = cli.stdout.strip()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    hit = rec.hits[0]
    assert Webhook(secret).verify(hit.body, hit.headers)["id"] == out["id"]

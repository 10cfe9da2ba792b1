"""Metering over HTTP: one usage record per generation in every API shape, ok and failed, on
SQLite and a real PostgreSQL; quotas and concurrency (429 + Retry-After in each envelope);
scopes; ModelsLab's generationTime is the record's GPU-seconds; /metrics counts generations."""
import datetime as dt

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from shared.accounts import ratelimit, store, usage
from shared.errors import StorageFailed
from shared.storage import LocalStorage
from tests.http_helpers import SMALL, fetch_png

A1111 = ("/sdapi/v1/txt2img", {"prompt": "a cat", "steps": 2, "width": 64, "height": 64})
OPENAI = ("/v1/images/generations", {"prompt": "a cat", "model": "gpt-image-1", "size": "64x64",
                                     "quality": "low", "response_format": "url"})
DRAW = ("/v1/draw", {"prompt": "a cat", "size": "1:1"})
FORM = ("/txt2img", {"prompt": "a cat", "num_inference_steps": "2", "width": "64",
                     "height": "64"})
MODELSLAB = ("/api/v3/text2img", {"prompt": "a cat", **SMALL})
SHAPES = {"a1111": A1111, "openai": OPENAI, "draw": DRAW, "form": FORM, "modelslab": MODELSLAB}


def call(c, secret, route, body=None, rid="rid"):
    path, payload = route
    payload = {**payload, **(body or {})}
    h = {"Authorization": f"Bearer {secret}", "X-Request-ID": rid}
    if path.startswith("/api/"):
        payload = {**payload, "key": secret}
    return c.post(path, json=payload, headers=h)


def image_urls(shape, out):
    return {"a1111": lambda: [], "openai": lambda: [d["url"] for d in out["data"]],
            "draw": lambda: out["urls"], "form": lambda: [i["image_url"] for i in out["images"]],
            "modelslab": lambda: out["output"]}[shape]()


def test_every_shape_writes_one_record_ok_and_failed(make_app, any_db, monkeypatch):
    secret, rec = store.create(any_db, "metered")
    with TestClient(make_app(database_url=any_db)) as c:
        for shape, route in SHAPES.items():
            r = call(c, secret, route, None, rid=f"ok-{shape}")
            assert r.status_code == 200, (shape, r.text)
            out = r.json()
            assert out.get("status", "success") == "success", (shape, out)
            for url in image_urls(shape, out):
                assert fetch_png(c, url).size[0] > 0
        with monkeypatch.context() as m:  # the upload fails: a generation that failed
            def broken(self, key, data, content_type):
                raise StorageFailed("bucket down")
            m.setattr(LocalStorage, "put", broken)
            for shape, route in SHAPES.items():
                # another prompt: ModelsLab's spam filter refuses a repeated body outright
                r = call(c, secret, route, {"prompt": "a dog"}, rid=f"bad-{shape}")
                assert r.status_code >= 400 or r.json().get("status") in ("error", "failed"), \
                    (shape, r.text)
        metrics = c.get("/metrics").text
    rows = usage.query(any_db, key_id=rec.id)
    by = {(r.shape, r.status): r for r in rows}
    assert len(rows) == 10, [(r.shape, r.status) for r in rows]
    for shape in SHAPES:
        ok, bad = by[(shape, "ok")], by[(shape, "failed")]
        assert ok.request_id == f"ok-{shape}" and bad.request_id == f"bad-{shape}"
        assert ok.images >= 1 and ok.pixels == ok.images * ok.width * ok.height
        assert ok.pixel_steps == ok.images * ok.width * ok.height * ok.steps
        assert ok.gpu_seconds > 0 and ok.duration_seconds > 0 and ok.finished_at is not None
        assert ok.model == "tiny-sd" and ok.route == SHAPES[shape][0]
        assert bad.error_code in ("storage_error", "job_failed") and bad.finished_at is not None
    assert by[("modelslab", "ok")].job_id  # the background job the record belongs to
    t = usage.totals(rows)
    assert t["generations"] == 10 and t["by_status"] == {"ok": 5, "failed": 5}
    assert t["images"] == sum(by[(s, "ok")].images for s in SHAPES)
    fams = {f.name: f for f in text_string_to_metric_families(metrics)}
    gens = {(s.labels["shape"], s.labels["result"]): s.value
            for s in fams["sdgate_generations"].samples if s.name.endswith("_total")}
    assert all(gens[(shape, "ok")] == 1 and gens[(shape, "failed")] == 1 for shape in SHAPES)
    images = sum(s.value for s in fams["sdgate_images"].samples if s.name.endswith("_total"))
    assert images == t["images"]
    assert any(s.name == "sdgate_generation_seconds_count" and s.value >= 5
               for s in fams["sdgate_generation_seconds"].samples)
    assert "sdgate_queue_depth" in fams


def test_generation_time_is_the_records_gpu_seconds(make_app, any_db):
    secret, rec = store.create(any_db, "ml")
    with TestClient(make_app(database_url=any_db)) as c:
        out = call(c, secret, MODELSLAB).json()
    row, = usage.query(any_db, key_id=rec.id)
    assert out["status"] == "success" and out["generationTime"] == row.gpu_seconds > 0
    assert out["generationTime"] < 60  # not the image count added to seconds


def test_image_quota_429_in_each_envelope_and_refusals_recorded(make_app, any_db):
    secret, rec = store.create(any_db, "quota")
    store.set_limit(any_db, rec.id, quota_images=2, quota_period="day")
    with TestClient(make_app(database_url=any_db)) as c:
        assert call(c, secret, A1111).status_code == 200
        assert call(c, secret, OPENAI).status_code == 200
        a = call(c, secret, A1111)
        o = call(c, secret, OPENAI)
        m = call(c, secret, MODELSLAB)
    tomorrow = dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0) \
        + dt.timedelta(days=1)
    assert a.status_code == 429 and "used 2 of its 2 images this day" in a.json()["detail"]
    left = (tomorrow - dt.datetime.now(dt.timezone.utc)).total_seconds()
    assert abs(int(a.headers["Retry-After"]) - left) < 120
    assert o.status_code == 429 and o.json()["error"]["code"] == "insufficient_quota"
    assert "Retry-After" in o.headers
    assert m.json()["status"] == "error" and "Quota exceeded" in m.json()["message"]
    rows = usage.query(any_db, key_id=rec.id)
    refused = [r for r in rows if r.status == "refused"]
    assert len(refused) == 3 and {r.error_code for r in refused} == {"insufficient_quota"}
    assert {r.shape for r in refused} == {"a1111", "openai", "modelslab"}
    assert usage.totals(rows)["images"] == 2


def test_gpu_second_quota(make_app, any_db):
    secret, rec = store.create(any_db, "gpu")
    store.set_limit(any_db, rec.id, quota_gpu_seconds=0.000001)
    with TestClient(make_app(database_url=any_db)) as c:
        assert call(c, secret, FORM).status_code == 200  # spends more than the quota
        r = call(c, secret, FORM)
    assert r.status_code == 429 and "GPU-seconds this month" in r.json()["message"]


def test_concurrency_limit_counts_running_records_of_every_container(make_app, any_db):
    secret, rec = store.create(any_db, "one-at-a-time")
    store.set_limit(any_db, rec.id, max_concurrent=1)
    # another web container's generation for this key, in the shared database
    fields = dict(task_id="elsewhere", key_id=rec.id, shape="openai", route="/v1/images/x",
                  model="", images=1, width=64, height=64, steps=2, pixels=4096,
                  pixel_steps=8192, request_id="")
    usage.begin(any_db, fields, stale_seconds=600)
    with TestClient(make_app(database_url=any_db)) as c:
        busy = call(c, secret, A1111)
        assert busy.status_code == 429 and "1 generation(s) at once" in busy.json()["detail"]
        assert int(busy.headers["Retry-After"]) >= 1
        usage.finish(any_db, "elsewhere", status="ok")
        assert call(c, secret, A1111).status_code == 200


def test_scopes_limit_the_shapes_a_key_may_call(make_app, tmp_path):
    url = f"sqlite:///{tmp_path}/k.db"
    ratelimit._seen.clear()
    secret, _ = store.create(url, "openai-only", ["openai"])
    with TestClient(make_app(database_url=url)) as c:
        assert call(c, secret, OPENAI).status_code == 200
        r = call(c, secret, A1111)
        assert r.status_code == 403 and "may not use the a1111 API" in r.json()["detail"]
        r = c.get("/v1/sdapi/v1/options", headers={"Authorization": f"Bearer {secret}"})
        assert r.status_code == 403
        f = call(c, secret, FORM)
        assert f.status_code == 403 and f.json()["status"] == "error"


@pytest.mark.parametrize("text", ["openai,nope", "A1111"])
def test_unknown_scopes_are_refused(text):
    from shared.accounts.access import parse_scopes
    with pytest.raises(ValueError, match="unknown scope"):
        parse_scopes(text)

"""Per-key requests per minute from the key database: 429 + Retry-After in each shape's envelope."""
from fastapi.testclient import TestClient

from shared.accounts import ratelimit, store


def test_rpm_limit_gives_429_with_retry_after(make_app, tmp_path):
    url = f"sqlite:///{tmp_path}/k.db"
    secret, rec = store.create(url, "metered")
    store.set_limit(url, rec.id, 2)
    ratelimit._seen.clear()
    h = {"Authorization": f"Bearer {secret}"}
    with TestClient(make_app(database_url=url)) as c:
        assert c.get("/sdapi/v1/options", headers=h).status_code == 200
        assert c.get("/v1/models", headers=h).status_code == 200
        r = c.get("/sdapi/v1/options", headers=h)
        assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
        assert "2 requests per minute" in r.text
        o = c.get("/v1/models", headers=h)
        assert o.status_code == 429 and "Retry-After" in o.headers
        assert "2 requests per minute" in o.json()["error"]["message"]
        # another key is not affected; an unknown key is still 401
        other, _ = store.create(url, "free")
        assert c.get("/v1/models", headers={"Authorization": f"Bearer {other}"}).status_code == 200
        assert c.get("/v1/models", headers={"Authorization": "Bearer x"}).status_code == 401


def test_window_slides():
    ratelimit._seen.clear()
    ratelimit.hit("k", 1, now=100.0)
    try:
        ratelimit.hit("k", 1, now=130.0)
        raise AssertionError("should be limited")
    except ratelimit.RateLimited as e:
        assert abs(e.retry_after - 30.0) < 1e-6
    ratelimit.hit("k", 1, now=160.5)  # the first request left the window


def test_the_window_is_shared_by_every_server_on_the_database(make_app, any_db):
    """Two apps (two containers) on one database: the second sees the first one's requests."""
    secret, rec = store.create(any_db, "shared")
    store.set_limit(any_db, rec.id, 3)
    h = {"Authorization": f"Bearer {secret}"}
    with TestClient(make_app(database_url=any_db)) as a, \
            TestClient(make_app(database_url=any_db)) as b:
        assert [a.get("/sdapi/v1/options", headers=h).status_code for _ in range(2)] == [200, 200]
        assert b.get("/v1/models", headers=h).status_code == 200
        r = b.get("/v1/models", headers=h)
        assert r.status_code == 429 and 1 <= int(r.headers["Retry-After"]) <= 60
        assert a.get("/sdapi/v1/options", headers=h).status_code == 429
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session
    with Session(store.engine_for(any_db)) as s:  # refusals are not counted as requests
        assert s.scalar(select(func.count()).select_from(store.RateHit)) == 3

"""GET /v1/usage (own records; admin: all), the admin key API, `sdgate usage export --csv`,
and JSON logs carrying the request id."""
import csv
import io
import json
import logging

from fastapi.testclient import TestClient

from shared.accounts import store, usage
from shared.cli import main
from shared.observability import JsonFormatter

A1111 = {"prompt": "a cat", "steps": 2, "width": 64, "height": 64}


def bearer(secret):
    return {"Authorization": f"Bearer {secret}"}


def test_usage_route_admin_api_and_csv_export(make_app, any_db, capsys, tmp_path):
    with TestClient(make_app(database_url=any_db, admin_keys="root-admin")) as c:
        # the admin API: create a customer key with limits; its secret is shown once
        made = c.post("/v1/admin/keys", json={"name": "acme", "scopes": ["a1111"],
                                              "quota_images": 5, "quota_period": "day"},
                      headers=bearer("root-admin"))
        assert made.status_code == 200, made.text
        acme = made.json()
        assert acme["key"].startswith("sdg_") and acme["quota_images"] == 5
        assert acme["scopes"] == ["a1111"] and acme["quota_period"] == "day"
        listed = c.get("/v1/admin/keys", headers=bearer("root-admin")).json()["data"]
        assert [k["id"] for k in listed] == [acme["id"]] and "key" not in listed[0]
        other, _ = store.create(any_db, "other")
        for secret, n in ((acme["key"], 2), (other, 1)):
            for i in range(n):
                r = c.post("/sdapi/v1/txt2img", json={**A1111, "seed": i}, headers=bearer(secret))
                assert r.status_code == 200 and len(r.json()["images"]) == 1
        mine = c.get("/v1/usage", headers=bearer(acme["key"])).json()
        assert mine["totals"]["generations"] == 2 and mine["totals"]["images"] == 2
        assert {r["key_id"] for r in mine["data"]} == {acme["id"]}
        assert mine["daily"][0]["images"] == 2 and mine["totals"]["gpu_seconds"] > 0
        # another key's records are not the caller's business; an admin sees them all
        denied = c.get("/v1/usage", params={"key_id": store.key_id(other)},
                       headers=bearer(acme["key"]))
        assert denied.status_code == 403 and denied.json()["error"]["code"] == "permission_denied"
        assert denied.json()["error"]["request_id"] == denied.headers["X-Request-ID"]
        everyone = c.get("/v1/usage", headers=bearer("root-admin")).json()
        assert everyone["totals"]["generations"] == 3
        empty = c.get("/v1/usage", params={"since": "2999-01-01"}, headers=bearer(acme["key"]))
        assert empty.json()["totals"]["generations"] == 0
        assert c.get("/v1/usage", params={"since": "yesterday"},
                     headers=bearer(acme["key"])).status_code == 422
        # customers may not use the admin API; limits change and keys are revoked through it
        assert c.get("/v1/admin/keys", headers=bearer(acme["key"])).status_code == 403
        patched = c.patch(f"/v1/admin/keys/{acme['id']}", json={"rpm": 10, "quota_images": None},
                          headers=bearer("root-admin")).json()
        assert patched["rpm"] == 10 and patched["quota_images"] is None
        assert c.patch(f"/v1/admin/keys/{acme['id']}", json={"rpm": "lots"},
                       headers=bearer("root-admin")).status_code == 422
        assert c.delete(f"/v1/admin/keys/{acme['id']}",
                        headers=bearer("root-admin")).json()["status"] == "revoked"
        assert c.get("/v1/usage", headers=bearer(acme["key"])).status_code == 401
    # billing: the CLI exports every record as CSV
    main(["usage", "export", "--csv", "--database-url", any_db])
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 3 and {r["status"] for r in rows} == {"ok"}
    assert {r["key_id"] for r in rows} == {acme["id"], store.key_id(other)}
    assert all(float(r["gpu_seconds"]) > 0 and int(r["images"]) == 1 for r in rows)
    main(["usage", "--database-url", any_db])
    summary = capsys.readouterr().out
    assert "acme" in summary and acme["id"] in summary
    out = tmp_path / "usage.jsonl"
    main(["usage", "export", "--json", "--key", acme["id"], "--out", str(out),
          "--database-url", any_db])
    assert [json.loads(line)["key_id"] for line in out.read_text().splitlines()] == [acme["id"]] * 2


def test_usage_needs_a_database(make_app):
    with TestClient(make_app()) as c:
        r = c.get("/v1/usage")
    assert r.status_code == 404 and "SDGATE_DATABASE_URL" in r.json()["error"]["message"]


def test_cli_limits_and_scopes(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/k.db"
    main(["keys", "create", "--name", "c", "--scopes", "openai,admin", "--database-url", url])
    kid = capsys.readouterr().out.split("\t")[0]
    main(["keys", "limit", kid, "--max-concurrent", "2", "--quota-images", "100", "--period",
          "day", "--database-url", url])
    main(["keys", "limit", kid, "--rpm", "30", "--database-url", url])
    rec = store.get(url, kid)
    assert (rec.rpm, rec.max_concurrent, rec.quota_images, rec.quota_period) == (30, 2, 100, "day")
    main(["keys", "limit", kid, "--quota-images", "none", "--database-url", url])
    assert store.get(url, kid).quota_images is None
    main(["keys", "list", "--database-url", url])
    assert "max_concurrent=2" in capsys.readouterr().out
    try:
        main(["keys", "create", "--name", "typo", "--scopes", "opneai", "--database-url", url])
        raise AssertionError("a typo in a scope must be refused")
    except SystemExit as e:
        assert "unknown scope" in str(e)


def test_json_log_lines_carry_the_request_id(make_app, caplog):
    caplog.set_level(logging.INFO, logger="sdgate.access")
    with TestClient(make_app()) as c:
        c.get("/health", headers={"X-Request-ID": "req-42"})
    record = [r for r in caplog.records if r.name == "sdgate.access"][-1]
    entry = json.loads(JsonFormatter().format(record))
    assert entry["request_id"] == "req-42" and entry["path"] == "/health"
    assert entry["status"] == 200 and entry["level"] == "info" and entry["shape"] == "other"

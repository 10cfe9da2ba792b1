"""Key database: hashed storage, lifecycle through the CLI, and check_key resolving stored keys."""
import sqlite3

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from shared.accounts import store
from shared.cli import main
from shared.config import Settings
from shared.dialects.base import check_key


def test_lifecycle_and_hashed_storage(tmp_path, capsys):
    url = f"sqlite:///{tmp_path}/k.db"
    main(["keys", "create", "--name", "alice", "--scopes", "openai,form", "--database-url", url])
    kid, secret = capsys.readouterr().out.strip().split("\t")
    assert secret.startswith("sdg_") and len(secret) > 40
    rows = sqlite3.connect(f"{tmp_path}/k.db").execute("select * from api_keys").fetchall()
    assert len(rows) == 1 and not any(secret in str(v) for v in rows[0])
    assert store.hash_key(secret) in rows[0]
    assert store.resolve(url, secret).id == kid and store.resolve(url, "sdg_wrong") is None
    main(["keys", "list", "--database-url", url])
    assert capsys.readouterr().out.split("\t")[:3] == [kid, "alice", "active"]
    main(["keys", "revoke", kid, "--database-url", url])
    assert store.resolve(url, secret) is None


def test_check_key_uses_the_database(module_db):
    url = module_db
    secret, rec = store.create(url, "bob")
    app = FastAPI()
    app.state.settings = Settings(api_keys="boot", database_url=url)

    @app.get("/x")
    def x(request: Request, key: str | None = None):
        try:
            check_key(request, key)
        except Exception as e:  # noqa: BLE001 - the test reads the refusal's class
            return {"err": type(e).__name__}
        return {"id": request.state.key_id}

    c = TestClient(app)
    assert c.get("/x", params={"key": secret}).json() == {"id": rec.id}
    assert c.get("/x", params={"key": "boot"}).json()["id"].startswith("key_")  # bootstrap
    assert c.get("/x", params={"key": "nope"}).json() == {"err": "Unauthorized"}
    assert c.get("/x").json() == {"err": "Unauthorized"}
    store.revoke(url, rec.id)
    assert c.get("/x", params={"key": secret}).json() == {"err": "Unauthorized"}


def test_lifecycle_on_both_databases(module_db, capsys):
    main(["keys", "create", "--name", "carol", "--database-url", module_db])
    kid, secret = capsys.readouterr().out.strip().split("\t")
    assert store.resolve(module_db, secret).name == "carol"
    assert all(r.key_hash != secret for r in store.list_keys(module_db))
    assert store.revoke(module_db, kid) and store.resolve(module_db, secret) is None

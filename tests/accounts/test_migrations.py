"""Alembic migrations: `sdgate db upgrade` on SQLite and a real PostgreSQL, and a database made
before migrations existed (create_all, no alembic_version) is adopted, its keys kept."""
import sqlite3

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from shared.accounts import store
from shared.cli import main


def test_db_upgrade_creates_the_schema(module_db, capsys):
    main(["db", "current", "--database-url", module_db])
    assert capsys.readouterr().out.strip() == "None"
    main(["db", "upgrade", "--revision", "0001", "--database-url", module_db])
    assert capsys.readouterr().out.strip() == "0001"
    main(["db", "upgrade", "--database-url", module_db])
    head = capsys.readouterr().out.strip()
    assert head == store.alembic_head()
    cols = {c["name"] for c in inspect(store.make_engine(module_db)).get_columns("api_keys")}
    assert {"id", "key_hash", "name", "status", "scopes", "rpm"} <= cols
    with store.make_engine(module_db).connect() as conn:  # the models and migrations agree
        assert compare_metadata(MigrationContext.configure(conn), store.Base.metadata) == []
    secret, rec = store.create(module_db, "after-migrate")
    assert store.resolve(module_db, secret).id == rec.id


def test_pre_alembic_database_is_stamped_and_kept(tmp_path):
    path = tmp_path / "old.db"
    con = sqlite3.connect(path)  # the first release's schema, as create_all made it
    con.execute("CREATE TABLE api_keys (id VARCHAR(40) PRIMARY KEY, key_hash VARCHAR(64) NOT NULL,"
                " name VARCHAR(200) NOT NULL, status VARCHAR(16) NOT NULL, scopes VARCHAR(400)"
                " NOT NULL, created_at DATETIME NOT NULL, rpm INTEGER)")
    con.execute("CREATE UNIQUE INDEX ix_api_keys_key_hash ON api_keys (key_hash)")
    con.execute("INSERT INTO api_keys VALUES ('key_old', ?, 'old', 'active', '', "
                "'2026-01-01 00:00:00', NULL)", (store.hash_key("sdg_old"),))
    con.commit()
    con.close()
    url = f"sqlite:///{path}"
    main(["db", "upgrade", "--database-url", url])
    assert store.revision_of(url) == store.alembic_head()
    assert store.resolve(url, "sdg_old").name == "old"


def test_first_use_from_many_threads_migrates_once(tmp_path):
    """The first requests of a fresh server arrive together: Alembic's process-global context
    must not run twice at once (it raised KeyError in the operator page's first run)."""
    from concurrent.futures import ThreadPoolExecutor

    url = f"sqlite:///{tmp_path}/race.db"
    with ThreadPoolExecutor(8) as pool:
        engines = list(pool.map(lambda _: store.engine_for(url), range(8)))
    assert len({id(e) for e in engines}) == 1
    assert store.revision_of(url) == store.alembic_head()

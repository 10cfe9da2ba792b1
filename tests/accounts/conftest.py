"""The accounts tests' databases: a SQLite file and one real PostgreSQL cluster per session."""
import pytest

from . import pg


@pytest.fixture(scope="session")
def pg_url():
    server = pg.start()
    if server is None:
        pytest.skip("PostgreSQL binaries missing (apt-get install postgresql)")
    url, stop = server
    yield url
    stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request, tmp_path):
    """A fresh database on SQLite, then on PostgreSQL (a new database in the shared cluster)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/usage.db"
    import uuid

    from sqlalchemy import create_engine, text
    base = request.getfixturevalue("pg_url")
    name = "t" + uuid.uuid4().hex[:12]
    eng = create_engine(base.replace("postgresql://", "postgresql+psycopg://"),
                        isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f"CREATE DATABASE {name}"))
    eng.dispose()
    return base.rsplit("/", 1)[0] + "/" + name

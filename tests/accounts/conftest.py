"""The accounts tests' databases: a SQLite file and one real PostgreSQL cluster per session."""
import uuid

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


def new_database(request, folder) -> str:
    """A fresh database's URL for the fixture's param: a SQLite file in `folder`, or a new
    database in the session's PostgreSQL cluster."""
    if request.param == "sqlite":
        return f"sqlite:///{folder}/usage.db"
    from sqlalchemy import create_engine, text

    base = request.getfixturevalue("pg_url")
    name = "t" + uuid.uuid4().hex[:12]
    eng = create_engine(base.replace("postgresql://", "postgresql+psycopg://"),
                        isolation_level="AUTOCOMMIT")
    with eng.connect() as c:
        c.execute(text(f"CREATE DATABASE {name}"))
    eng.dispose()
    return base.rsplit("/", 1)[0] + "/" + name


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request, tmp_path):
    """A fresh database per test, on SQLite, then on PostgreSQL."""
    return new_database(request, tmp_path)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_db(request, tmp_path_factory):
    """A fresh database per test module, on SQLite, then on PostgreSQL."""
    return new_database(request, tmp_path_factory.mktemp("db"))

"""The key store: hashed API keys with a name, status and scopes, in SQLAlchemy 2."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import pathlib
import secrets
from functools import lru_cache

from sqlalchemy import DateTime, Integer, String, create_engine, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


class Base(DeclarativeBase):
    pass


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # sha256 of the whole key: the key has 256 bits of entropy, so no salt/KDF is needed
    key_hash: Mapped[str] = mapped_column(String(64), unique=True, index=True)
    name: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16), default="active")
    scopes: Mapped[str] = mapped_column(String(400), default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    # limits; None means unlimited
    rpm: Mapped[int | None] = mapped_column(Integer, nullable=True)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id(key: str) -> str:
    """Same id scheme as shared.dialects.base.key_id, so env and stored keys look alike."""
    return "key_" + hash_key(key)[:16]


def default_url() -> str:
    return "sqlite:///.sdgate/sdgate.db"


def make_engine(url: str):
    """A SQLAlchemy engine for an SDGATE_DATABASE_URL (postgresql:// means psycopg 3)."""
    if url.startswith("sqlite:///"):
        pathlib.Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return create_engine(url)


@lru_cache(maxsize=8)
def engine_for(url: str):
    """The process's engine for `url`, its schema migrated to the latest revision on first use."""
    eng = make_engine(url)
    migrate(eng)
    return eng


def alembic_config():
    """Alembic's config for the migrations shipped inside this package (no alembic.ini)."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(pathlib.Path(__file__).with_name("migrations")))
    return cfg


def migrate(eng, revision: str = "head") -> None:
    """Bring the database schema to `revision` with Alembic. A database made by the first
    release (tables from create_all, no alembic_version) is stamped as 0001 first."""
    from alembic import command
    from sqlalchemy import inspect

    cfg = alembic_config()
    with eng.begin() as conn:
        cfg.attributes["connection"] = conn
        tables = set(inspect(conn).get_table_names())
        if "api_keys" in tables and "alembic_version" not in tables:
            command.stamp(cfg, "0001")
        command.upgrade(cfg, revision)


def alembic_head() -> str:
    """The newest revision the shipped migrations define."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def revision_of(url: str) -> str | None:
    """The schema revision a database is at (None: not migrated)."""
    from alembic.runtime.migration import MigrationContext

    with make_engine(url).connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def create(url: str, name: str, scopes: list[str] | None = None) -> tuple[str, ApiKey]:
    """A new key: returns the secret (shown once) and its stored record."""
    secret = "sdg_" + secrets.token_urlsafe(32)
    rec = ApiKey(id=key_id(secret), key_hash=hash_key(secret), name=name, status="active",
                 scopes=",".join(scopes or []), created_at=dt.datetime.now(dt.timezone.utc))
    with Session(engine_for(url), expire_on_commit=False) as s:
        s.add(rec)
        s.commit()
    return secret, rec


def list_keys(url: str) -> list[ApiKey]:
    with Session(engine_for(url), expire_on_commit=False) as s:
        return list(s.scalars(select(ApiKey).order_by(ApiKey.created_at)))


def revoke(url: str, kid: str) -> bool:
    with Session(engine_for(url)) as s:
        rec = s.get(ApiKey, kid)
        if rec is None:
            return False
        rec.status = "revoked"
        s.commit()
        return True


def resolve(url: str, presented: str) -> ApiKey | None:
    """The active record for a presented key, or None."""
    h = hash_key(presented)
    with Session(engine_for(url), expire_on_commit=False) as s:
        rec = s.scalars(select(ApiKey).where(ApiKey.key_hash == h)).first()
    if rec is None or rec.status != "active" or not hmac.compare_digest(rec.key_hash, h):
        return None
    return rec


def set_limit(url: str, kid: str, rpm: int | None) -> bool:
    with Session(engine_for(url)) as s:
        rec = s.get(ApiKey, kid)
        if rec is None:
            return False
        rec.rpm = rpm
        s.commit()
        return True

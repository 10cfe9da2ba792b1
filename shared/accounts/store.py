"""The key store: hashed API keys with a name, status and scopes, in SQLAlchemy 2."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import pathlib
import secrets
import threading

from sqlalchemy import BigInteger, DateTime, Float, Integer, String, create_engine, select
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
    max_concurrent: Mapped[int | None] = mapped_column(Integer, nullable=True)  # generations
    quota_images: Mapped[int | None] = mapped_column(Integer, nullable=True)  # per period
    quota_gpu_seconds: Mapped[float | None] = mapped_column(Float, nullable=True)  # per period
    quota_period: Mapped[str] = mapped_column(String(8), default="month",
                                              server_default="month")  # day | month (UTC)

    def scope_list(self) -> list[str]:
        return [x for x in self.scopes.split(",") if x]


class Usage(Base):
    """One generation: who, which shape and route, how much, how it ended, how long."""

    __tablename__ = "usage"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    task_id: Mapped[str] = mapped_column(String(64), unique=True)
    key_id: Mapped[str] = mapped_column(String(40), index=True)  # "" on an open server
    shape: Mapped[str] = mapped_column(String(16))
    route: Mapped[str] = mapped_column(String(200))
    model: Mapped[str] = mapped_column(String(200), default="")
    images: Mapped[int] = mapped_column(Integer)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    steps: Mapped[int] = mapped_column(Integer)
    pixels: Mapped[int] = mapped_column(BigInteger)  # images x width x height
    pixel_steps: Mapped[int] = mapped_column(BigInteger)  # the admission budget's measure
    gpu_seconds: Mapped[float] = mapped_column(Float, default=0.0)  # measured on the worker
    duration_seconds: Mapped[float] = mapped_column(Float, default=0.0)  # wall, as served
    # running | ok | failed | refused | interrupted
    status: Mapped[str] = mapped_column(String(16), index=True)
    error_code: Mapped[str] = mapped_column(String(40), default="")
    error: Mapped[str] = mapped_column(String(400), default="")
    job_id: Mapped[str] = mapped_column(String(64), default="")
    request_id: Mapped[str] = mapped_column(String(128), default="")
    started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), index=True)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True),
                                                           nullable=True)


class RateHit(Base):
    """One request of a stored key with a requests-per-minute limit (kept for 60 s)."""

    __tablename__ = "rate_hits"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[str] = mapped_column(String(40), index=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))


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


_engines: dict[str, object] = {}
_migrating = threading.RLock()  # Alembic's context is process-global: one migration at once


def engine_for(url: str):
    """The process's engine for `url`, its schema migrated to the latest revision on first use
    (once, even when the first requests arrive together on several threads)."""
    eng = _engines.get(url)
    if eng is None:
        with _migrating:
            eng = _engines.get(url)
            if eng is None:
                eng = make_engine(url)
                migrate(eng)
                _engines[url] = eng
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
    with _migrating, eng.begin() as conn:
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
    from shared.accounts.access import parse_scopes

    scopes = parse_scopes(",".join(scopes or []))
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


LIMITS = ("rpm", "max_concurrent", "quota_images", "quota_gpu_seconds", "quota_period")


def set_limit(url: str, kid: str, *rpm: int | None, **limits) -> bool:
    """Set the limits named (None: unlimited), leaving the others; `set_limit(url, kid, 60)`
    sets requests per minute as the first release did."""
    if rpm:
        limits["rpm"] = rpm[0]
    unknown = set(limits) - set(LIMITS)
    if unknown:
        raise ValueError(f"unknown limits {sorted(unknown)}; choose from {LIMITS}")
    if limits.get("quota_period", "month") not in ("day", "month"):
        raise ValueError("quota_period must be day or month")
    with Session(engine_for(url)) as s:
        rec = s.get(ApiKey, kid)
        if rec is None:
            return False
        for name, value in limits.items():
            setattr(rec, name, value if value is not None or name != "quota_period" else "month")
        s.commit()
        return True


def get(url: str, kid: str) -> ApiKey | None:
    with Session(engine_for(url), expire_on_commit=False) as s:
        return s.get(ApiKey, kid)

"""Usage records in the database: begin (with the key's concurrency and quota checks), finish,
and queries with totals for /v1/usage and `sdgate usage`."""
from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from shared.accounts.store import ApiKey, Usage, engine_for
from shared.errors import QuotaExceeded, RateLimited

COUNTED = ("ok", "running")  # the results whose images count against an image quota
_lock = threading.Lock()  # SQLite ignores FOR UPDATE: one check-and-insert at a time per process


def now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def period(kind: str, at: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The UTC calendar day or month holding `at`: (start, end)."""
    start = at.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind == "day":
        return start, start + dt.timedelta(days=1)
    start = start.replace(day=1)
    end = (start.replace(year=start.year + 1, month=1) if start.month == 12
           else start.replace(month=start.month + 1))
    return start, end


def begin(url: str, fields: dict, stale_seconds: float) -> None:
    """Insert the `running` record of a generation after checking its key's concurrency and
    quota (the key row is locked, so containers sharing a PostgreSQL count alike). A refusal
    is recorded as `refused` and raised."""
    t = now()
    try:
        with _lock, Session(engine_for(url)) as s, s.begin():
            key = s.get(ApiKey, fields["key_id"], with_for_update=True) if fields["key_id"] \
                else None
            if key is not None:
                _check(s, key, fields["images"], t, stale_seconds)
            s.add(Usage(status="running", started_at=t, **fields))
    except RateLimited as e:
        record(url, {**fields, "status": "refused", "error_code": e.code,
                     "error": e.message[:400], "started_at": t, "finished_at": t})
        raise


def _check(s: Session, key: ApiKey, images: int, t: dt.datetime, stale: float) -> None:
    mine = Usage.key_id == key.id
    if key.max_concurrent is not None:
        running = s.scalar(select(func.count()).select_from(Usage).where(
            mine, Usage.status == "running", Usage.started_at > t - dt.timedelta(seconds=stale)))
        if running >= key.max_concurrent:
            raise RateLimited(f"Concurrency limit: this key may run {key.max_concurrent} "
                              f"generation(s) at once and has {running} running",
                              retry_after=5)
    if key.quota_images is None and key.quota_gpu_seconds is None:
        return
    start, end = period(key.quota_period, t)
    wait = (end - t).total_seconds()
    this = (mine, Usage.started_at >= start)
    if key.quota_images is not None:
        used = s.scalar(select(func.coalesce(func.sum(Usage.images), 0)).where(
            *this, Usage.status.in_(COUNTED)))
        if used + images > key.quota_images:
            raise QuotaExceeded(
                f"Quota exceeded: this key has used {used} of its {key.quota_images} images "
                f"this {key.quota_period} (UTC) and asked for {images} more; it resets at "
                f"{end.isoformat()}", retry_after=wait)
    if key.quota_gpu_seconds is not None:
        used = s.scalar(select(func.coalesce(func.sum(Usage.gpu_seconds), 0.0)).where(*this))
        if used >= key.quota_gpu_seconds:
            raise QuotaExceeded(
                f"Quota exceeded: this key has used {used:.1f} of its {key.quota_gpu_seconds:g} "
                f"GPU-seconds this {key.quota_period} (UTC); it resets at {end.isoformat()}",
                retry_after=wait)


def record(url: str, fields: dict) -> None:
    """Insert a finished record (a refusal before any work)."""
    with Session(engine_for(url)) as s, s.begin():
        s.add(Usage(**fields))


def finish(url: str, task_id: str, **fields) -> bool:
    """Complete a generation's record; False when it has none (begun by an older server)."""
    with Session(engine_for(url)) as s, s.begin():
        row = s.scalars(select(Usage).where(Usage.task_id == task_id)).first()
        if row is None:
            return False
        for name, value in fields.items():
            setattr(row, name, value)
        row.finished_at = row.finished_at or now()
        return True


def query(url: str, key_id: str | None = None, since: dt.datetime | None = None,
          until: dt.datetime | None = None, limit: int | None = None) -> list[Usage]:
    """Records, newest first: one key's (None: every key's) in [since, until)."""
    q = select(Usage).order_by(Usage.started_at.desc(), Usage.id.desc())
    if key_id is not None:
        q = q.where(Usage.key_id == key_id)
    if since is not None:
        q = q.where(Usage.started_at >= since)
    if until is not None:
        q = q.where(Usage.started_at < until)
    if limit is not None:
        q = q.limit(limit)
    with Session(engine_for(url), expire_on_commit=False) as s:
        return list(s.scalars(q))


def totals(rows: list[Usage]) -> dict:
    """Sums over records: generations by result, images and pixel-steps of the ones that
    succeeded, GPU-seconds of all (a failed run used the GPU too)."""
    out = {"generations": len(rows), "images": 0, "pixels": 0, "pixel_steps": 0,
           "gpu_seconds": 0.0, "by_status": {}}
    for r in rows:
        out["by_status"][r.status] = out["by_status"].get(r.status, 0) + 1
        out["gpu_seconds"] += r.gpu_seconds or 0.0
        if r.status == "ok":
            out["images"] += r.images
            out["pixels"] += r.pixels
            out["pixel_steps"] += r.pixel_steps
    out["gpu_seconds"] = round(out["gpu_seconds"], 4)
    return out


COLUMNS = ("id", "started_at", "finished_at", "key_id", "shape", "route", "model", "status",
           "error_code", "images", "width", "height", "steps", "pixels", "pixel_steps",
           "gpu_seconds", "duration_seconds", "job_id", "task_id", "request_id", "error")


def as_dict(r: Usage) -> dict:
    out = {c: getattr(r, c) for c in COLUMNS}
    for c in ("started_at", "finished_at"):
        out[c] = _utc(out[c]).isoformat() if out[c] else None
    return out


def _utc(t: dt.datetime) -> dt.datetime:
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)  # SQLite gives naive UTC back

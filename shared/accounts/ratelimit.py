"""Per-key requests-per-minute: a sliding 60 s window, in the key database (shared by every
container using it) for stored keys, or in this process (`hit`)."""
from __future__ import annotations

import collections
import threading
import time

from shared.errors import RateLimited

WINDOW = 60.0
_lock = threading.Lock()
_seen: dict[str, collections.deque] = collections.defaultdict(collections.deque)


def hit(kid: str, rpm: int | None, now: float | None = None) -> None:
    """Count one request for key `kid`, or raise RateLimited with the seconds until a slot frees."""
    if rpm is None:
        return
    now = time.monotonic() if now is None else now
    with _lock:
        q = _seen[kid]
        while q and q[0] <= now - WINDOW:
            q.popleft()
        if len(q) >= rpm:
            raise RateLimited(f"Rate limit exceeded: {rpm} requests per minute for this key",
                              retry_after=q[0] + WINDOW - now)
        q.append(now)


def hit_shared(url: str, kid: str, rpm: int | None) -> None:
    """Count one request of stored key `kid` in the database: the window every container
    sharing it sees (the key's row is locked while counting, FOR UPDATE on PostgreSQL)."""
    if rpm is None:
        return
    import datetime as dt

    from sqlalchemy import delete, func, select
    from sqlalchemy.orm import Session

    from shared.accounts.store import ApiKey, RateHit, engine_for

    now = dt.datetime.now(dt.timezone.utc)
    start = now - dt.timedelta(seconds=WINDOW)
    with _lock, Session(engine_for(url)) as s, s.begin():
        s.get(ApiKey, kid, with_for_update=True)
        s.execute(delete(RateHit).where(RateHit.key_id == kid, RateHit.at <= start))
        count, oldest = s.execute(select(func.count(), func.min(RateHit.at)).where(
            RateHit.key_id == kid)).one()
        if count >= rpm:
            oldest = oldest if oldest.tzinfo else oldest.replace(tzinfo=dt.timezone.utc)
            raise RateLimited(f"Rate limit exceeded: {rpm} requests per minute for this key",
                              retry_after=(oldest - start).total_seconds())
        s.add(RateHit(key_id=kid, at=now))

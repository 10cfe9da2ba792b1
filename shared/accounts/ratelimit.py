"""Per-key requests-per-minute: a sliding 60 s window in this process."""
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

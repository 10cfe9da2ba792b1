"""The seed's spam filter: the same request (same key, same body) again within the window is refused."""

from __future__ import annotations

import hashlib
import json
import threading
import time

from shared.errors import RateLimited


class SpamFilter:
    """Fingerprints of recent accepted requests, kept for `window` seconds: in the shared state
    store when given one (`acheck`: every web container agrees), else in this process (`check`)."""

    def __init__(self, window: float, state=None):
        self.window = window
        self.state = state
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    @staticmethod
    def fingerprint(body: dict) -> str:
        # The key is part of the body, so "same key + same body" is one hash of the whole body.
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(canonical.encode()).hexdigest()

    def check(self, body: dict, now: float | None = None) -> None:
        """Record the request, or raise RateLimited if it was seen within the window."""
        if self.window <= 0:
            return
        now = now if now is not None else time.monotonic()
        fp = self.fingerprint(body)
        with self._lock:
            self._seen = {k: t for k, t in self._seen.items() if now - t < self.window}
            if fp in self._seen:
                raise RateLimited("Rate limit exceeded")
            self._seen[fp] = now

    async def acheck(self, body: dict) -> None:
        """`check` against the shared store: the first container to claim the fingerprint wins."""
        if self.state is None:
            return self.check(body)
        if self.window > 0 and not await self.state.aadd(
                "spam:" + self.fingerprint(body), 1, ttl=self.window):
            raise RateLimited("Rate limit exceeded")

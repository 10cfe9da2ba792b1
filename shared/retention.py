"""Retention: finished jobs and local output files expire after SDGATE_RETENTION_DAYS.

An hourly sweep (started with the app) deletes what is older; S3 objects expire by the bucket's
own lifecycle rule (`make bucket EXPIRE_DAYS=...`), which the sweep leaves to the bucket.
"""

from __future__ import annotations

import asyncio
import logging
import time

import anyio

log = logging.getLogger(__name__)


def sweep(settings, store, storage, now: float | None = None) -> dict:
    """Delete what is past retention now; the counts deleted ({} when retention is off)."""
    if settings.retention_days <= 0:
        return {}
    before = (now or time.time()) - settings.retention_days * 86400
    # the state store's jobs and S3 objects expire by themselves: their purge deletes nothing
    return {"jobs": store.purge(before), "files": storage.purge(before)}


class Sweeper:
    """The app's background sweep: once at start, then every retention_sweep_seconds."""

    def __init__(self, settings, store, storage):
        self.settings, self.store, self.storage = settings, store, storage
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        if self.task is None and self.settings.retention_days > 0:
            self.task = asyncio.ensure_future(self._loop())

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _loop(self) -> None:
        while True:
            try:
                counts = await anyio.to_thread.run_sync(sweep, self.settings, self.store,
                                                        self.storage)
                if any(counts.values()):
                    log.info("retention: deleted %s", counts)
            except Exception:  # a storage hiccup must not end the sweeps
                log.exception("retention sweep")
            await asyncio.sleep(self.settings.retention_sweep_seconds)

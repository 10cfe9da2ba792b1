"""In-process stand-ins for modal.Dict and modal.Queue with the same call shapes (sync and .aio).

A blocking call made while an event loop runs on the calling thread raises, as it would stall a
Modal web container's loop: tests run the app on these to prove async code only uses `.aio`.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections import deque

MISSING = object()


class BlockingCallInAsyncCode(AssertionError):
    pass


def _no_loop(name: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise BlockingCallInAsyncCode(f"blocking {name} called from async code (use .aio)")


class _Method:
    """`obj.method(...)` blocks; `await obj.method.aio(...)` does not."""

    def __init__(self, owner, name, fn):
        self.owner, self.name, self.fn = owner, name, fn

    def __call__(self, *args, **kwargs):
        _no_loop(f"{type(self.owner).__name__}.{self.name}")
        self.owner.blocking_calls += 1
        return self.fn(*args, **kwargs)

    async def aio(self, *args, **kwargs):
        self.owner.aio_calls += 1
        return await asyncio.to_thread(self.fn, *args, **kwargs)


class FakeDict:
    def __init__(self):
        self._data: dict = {}
        self._lock = threading.Lock()
        self.blocking_calls = self.aio_calls = 0
        for name in ("get", "put", "pop", "contains", "len"):
            setattr(self, name, _Method(self, name, getattr(self, "_" + name)))

    def _get(self, key, default=None):
        with self._lock:
            return copy.deepcopy(self._data.get(key, default))

    def _put(self, key, value, *, skip_if_exists=False):
        with self._lock:
            if skip_if_exists and key in self._data:
                return False
            self._data[key] = copy.deepcopy(value)
            return True

    def _pop(self, key, default=MISSING):
        with self._lock:
            if default is MISSING:
                return self._data.pop(key)
            return self._data.pop(key, default)

    def _contains(self, key):
        with self._lock:
            return key in self._data

    def _len(self):
        with self._lock:
            return len(self._data)


class FakeQueue:
    def __init__(self):
        self._parts: dict[str, deque] = {}
        self._lock = threading.Lock()
        self.blocking_calls = self.aio_calls = 0
        for name in ("put", "get", "len"):
            setattr(self, name, _Method(self, name, getattr(self, "_" + name)))

    def _put(self, v, block=True, timeout=None, *, partition=None, partition_ttl=86400):
        with self._lock:
            self._parts.setdefault(partition or "", deque()).append(copy.deepcopy(v))

    def _get(self, block=True, timeout=None, *, partition=None):
        deadline = time.monotonic() + (timeout or 0)
        while True:
            with self._lock:
                q = self._parts.get(partition or "")
                if q:
                    return q.popleft()
            if not block or time.monotonic() >= deadline:
                return None
            time.sleep(0.01)

    def _len(self, *, partition=None, total=False):
        with self._lock:
            return len(self._parts.get(partition or "", ()))

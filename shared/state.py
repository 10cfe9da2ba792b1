"""One cross-container state store: keys with JSON values (optional TTL) and FIFO queues.

Everything the web tier and the GPU tier must agree on lives here (task progress and interrupt /
skip flags, per-key A1111 options, the spam filter, jobs, webhook claims, queue depth, measured
step times). Three backings implement the same `State`:

- `MemoryState`: this process only (unit tests, one process without persistence);
- `SqliteState`: a SQLite file, safe across OS processes (the local default, SDGATE_STATE_DB);
- `ModalState`: a `modal.Dict` and `modal.Queue`s, shared by every Modal container. Its async
  methods only ever use the primitives' `.aio` calls; its blocking methods refuse to run on a
  thread with a running event loop, so async code cannot stall the loop by mistake.

Every method has a blocking form (engine threads, the GPU class) and an `a`-prefixed async form
(route handlers, the job runner). Values must be JSON-able; they are copies, never shared objects.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import threading
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio

POLL_SECONDS = 0.05  # how often a blocking pop looks again (SQLite, memory)


def _expires(ttl: float | None) -> float | None:
    return None if ttl is None else time.time() + ttl


def _live(expires: float | None, now: float | None = None) -> bool:
    return expires is None or expires > (now or time.time())


class State:
    """The interface, with async forms running the blocking ones in a worker thread."""

    # -- blocking -------------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        """The value of a live key, else `default`."""
        raise NotImplementedError

    def get_many(self, keys: list[str]) -> list[Any]:
        """Values of several keys (None where missing), in one round trip where possible."""
        return [self.get(k) for k in keys]

    def put(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Set a key; it expires after `ttl` seconds when given."""
        raise NotImplementedError

    def add(self, key: str, value: Any, ttl: float | None = None) -> bool:
        """Set a key only if it has no live value: an atomic claim; True when this call won."""
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def incr(self, key: str, delta: int = 1) -> int:
        """Add to an integer key (missing: 0) and return the new value; atomic on memory and
        SQLite, a read-modify-write on Modal (a Dict has no atomic add: an approximate count)."""
        raise NotImplementedError

    def push(self, queue: str, item: Any) -> None:
        """Append to a FIFO queue."""
        raise NotImplementedError

    def pop(self, queue: str, timeout: float = 0.0) -> Any:
        """Take the oldest item, waiting up to `timeout` seconds; None when there is none."""
        raise NotImplementedError

    def qlen(self, queue: str) -> int:
        """Items waiting in a queue."""
        raise NotImplementedError

    # -- async ----------------------------------------------------------------------------------
    async def aget(self, key: str, default: Any = None) -> Any:
        return await anyio.to_thread.run_sync(self.get, key, default)

    async def aget_many(self, keys: list[str]) -> list[Any]:
        return await anyio.to_thread.run_sync(self.get_many, keys)

    async def aput(self, key: str, value: Any, ttl: float | None = None) -> None:
        await anyio.to_thread.run_sync(self.put, key, value, ttl)

    async def aadd(self, key: str, value: Any, ttl: float | None = None) -> bool:
        return await anyio.to_thread.run_sync(self.add, key, value, ttl)

    async def adelete(self, key: str) -> None:
        await anyio.to_thread.run_sync(self.delete, key)

    async def apush(self, queue: str, item: Any) -> None:
        await anyio.to_thread.run_sync(self.push, queue, item)

    async def apop(self, queue: str, timeout: float = 0.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:  # short blocking pops, so a cancelled caller never leaves a thread waiting
            item = await anyio.to_thread.run_sync(self.pop, queue, 0.0)
            if item is not None or time.monotonic() >= deadline:
                return item
            await asyncio.sleep(POLL_SECONDS)

    async def aqlen(self, queue: str) -> int:
        return await anyio.to_thread.run_sync(self.qlen, queue)


class MemoryState(State):
    """Dicts and deques in this process."""

    def __init__(self):
        self._data: dict[str, tuple[str, float | None]] = {}
        self._queues: dict[str, deque] = {}
        self._lock = threading.Lock()

    def get(self, key, default=None):
        with self._lock:
            entry = self._data.get(key)
        if entry is None or not _live(entry[1]):
            return default
        return json.loads(entry[0])

    def put(self, key, value, ttl=None):
        with self._lock:
            self._data[key] = (json.dumps(value), _expires(ttl))

    def add(self, key, value, ttl=None):
        with self._lock:
            entry = self._data.get(key)
            if entry is not None and _live(entry[1]):
                return False
            self._data[key] = (json.dumps(value), _expires(ttl))
            return True

    def delete(self, key):
        with self._lock:
            self._data.pop(key, None)

    def incr(self, key, delta=1):
        with self._lock:
            entry = self._data.get(key)
            value = (json.loads(entry[0]) if entry and _live(entry[1]) else 0) + delta
            self._data[key] = (json.dumps(value), None)
            return value

    def push(self, queue, item):
        with self._lock:
            self._queues.setdefault(queue, deque()).append(json.dumps(item))

    def pop(self, queue, timeout=0.0):
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                q = self._queues.get(queue)
                if q:
                    return json.loads(q.popleft())
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_SECONDS)

    def qlen(self, queue):
        with self._lock:
            return len(self._queues.get(queue, ()))

    # In-memory calls are quick: no worker thread for them.
    async def aget(self, key, default=None):
        return self.get(key, default)

    async def aget_many(self, keys):
        return self.get_many(keys)

    async def aput(self, key, value, ttl=None):
        self.put(key, value, ttl)

    async def aadd(self, key, value, ttl=None):
        return self.add(key, value, ttl)

    async def adelete(self, key):
        self.delete(key)

    async def apush(self, queue, item):
        self.push(queue, item)

    async def aqlen(self, queue):
        return self.qlen(queue)


class SqliteState(State):
    """A SQLite file in WAL mode: several OS processes may read and write it at once.

    One connection per call (threads); claims and pops are single transactions, so two processes
    never both win a claim or both take one queue item.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL,"
                       " expires REAL)")
            db.execute("CREATE TABLE IF NOT EXISTS queue (seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                       " name TEXT NOT NULL, item TEXT NOT NULL)")
            db.execute("CREATE INDEX IF NOT EXISTS queue_name ON queue (name, seq)")

    @contextmanager
    def _connect(self):
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=30000")
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self):
        """A write transaction taken up front (BEGIN IMMEDIATE): no lost updates."""
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def get(self, key, default=None):
        value = self.get_many([key])[0]
        return default if value is None else value

    def get_many(self, keys):
        if not keys:
            return []
        marks = ",".join("?" * len(keys))
        with self._connect() as db:
            rows = db.execute(f"SELECT key, value, expires FROM kv WHERE key IN ({marks})",
                              list(keys)).fetchall()
        now = time.time()
        found = {k: json.loads(v) for k, v, exp in rows if _live(exp, now)}
        return [found.get(k) for k in keys]

    def put(self, key, value, ttl=None):
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO kv (key, value, expires) VALUES (?, ?, ?)",
                       (key, json.dumps(value), _expires(ttl)))

    def add(self, key, value, ttl=None):
        with self._write() as db:
            row = db.execute("SELECT expires FROM kv WHERE key = ?", (key,)).fetchone()
            if row is not None and _live(row[0]):
                return False
            db.execute("INSERT OR REPLACE INTO kv (key, value, expires) VALUES (?, ?, ?)",
                       (key, json.dumps(value), _expires(ttl)))
            return True

    def delete(self, key):
        with self._write() as db:
            db.execute("DELETE FROM kv WHERE key = ?", (key,))

    def incr(self, key, delta=1):
        with self._write() as db:
            row = db.execute("SELECT value, expires FROM kv WHERE key = ?", (key,)).fetchone()
            value = (json.loads(row[0]) if row and _live(row[1]) else 0) + delta
            db.execute("INSERT OR REPLACE INTO kv (key, value, expires) VALUES (?, ?, NULL)",
                       (key, json.dumps(value)))
            return value

    def push(self, queue, item):
        with self._write() as db:
            db.execute("INSERT INTO queue (name, item) VALUES (?, ?)", (queue, json.dumps(item)))

    def pop(self, queue, timeout=0.0):
        deadline = time.monotonic() + timeout
        while True:
            with self._write() as db:
                row = db.execute("SELECT seq, item FROM queue WHERE name = ? ORDER BY seq LIMIT 1",
                                 (queue,)).fetchone()
                if row is not None:
                    db.execute("DELETE FROM queue WHERE seq = ?", (row[0],))
                    return json.loads(row[1])
            if time.monotonic() >= deadline:
                return None
            time.sleep(POLL_SECONDS)

    def qlen(self, queue):
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM queue WHERE name = ?", (queue,)).fetchone()[0]

    def purge(self) -> int:
        """Delete expired keys; how many."""
        with self._write() as db:
            return db.execute("DELETE FROM kv WHERE expires IS NOT NULL AND expires <= ?",
                              (time.time(),)).rowcount


class ModalState(State):
    """A `modal.Dict` for keys and one `modal.Queue` (a partition per queue name).

    Values are stored as {"v": value, "exp": unix time or None}; the Dict's own entries also
    expire after 7 days without use. The async methods await `.aio` calls only.
    """

    def __init__(self, mapping, queue):
        self.mapping = mapping  # modal.Dict
        self.queue = queue  # modal.Queue

    @staticmethod
    def _blocking_ok() -> None:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        raise RuntimeError("a blocking modal.Dict/Queue call from async code: use the a* method")

    @staticmethod
    def _unwrap(entry, default=None):
        if not isinstance(entry, dict) or not _live(entry.get("exp")):
            return default
        return entry["v"]

    @staticmethod
    def _partition(queue: str) -> str:
        return queue.replace(":", "-")[:64] or "default"

    # -- blocking (GPU threads, never the event loop) ---------------------------------------
    def get(self, key, default=None):
        self._blocking_ok()
        return self._unwrap(self.mapping.get(key), default)

    def put(self, key, value, ttl=None):
        self._blocking_ok()
        self.mapping.put(key, {"v": value, "exp": _expires(ttl)})

    def add(self, key, value, ttl=None):
        self._blocking_ok()
        entry = {"v": value, "exp": _expires(ttl)}
        if self.mapping.put(key, entry, skip_if_exists=True):
            return True
        if self._unwrap(self.mapping.get(key), None) is not None:
            return False
        self.mapping.pop(key, None)  # an expired claim: take it over (once)
        return bool(self.mapping.put(key, entry, skip_if_exists=True))

    def delete(self, key):
        self._blocking_ok()
        self.mapping.pop(key, None)

    def incr(self, key, delta=1):
        value = (self.get(key) or 0) + delta
        self.put(key, value)
        return value

    def push(self, queue, item):
        self._blocking_ok()
        self.queue.put(item, partition=self._partition(queue))

    def pop(self, queue, timeout=0.0):
        self._blocking_ok()
        return self.queue.get(block=timeout > 0, timeout=timeout or None,
                              partition=self._partition(queue))

    def qlen(self, queue):
        self._blocking_ok()
        return self.queue.len(partition=self._partition(queue))

    # -- async: .aio only ---------------------------------------------------------------------
    async def aget(self, key, default=None):
        return self._unwrap(await self.mapping.get.aio(key), default)

    async def aget_many(self, keys):
        return [self._unwrap(await self.mapping.get.aio(k)) for k in keys]

    async def aput(self, key, value, ttl=None):
        await self.mapping.put.aio(key, {"v": value, "exp": _expires(ttl)})

    async def aadd(self, key, value, ttl=None):
        entry = {"v": value, "exp": _expires(ttl)}
        if await self.mapping.put.aio(key, entry, skip_if_exists=True):
            return True
        if self._unwrap(await self.mapping.get.aio(key), None) is not None:
            return False
        await self.mapping.pop.aio(key, None)
        return bool(await self.mapping.put.aio(key, entry, skip_if_exists=True))

    async def adelete(self, key):
        await self.mapping.pop.aio(key, None)

    async def apush(self, queue, item):
        await self.queue.put.aio(item, partition=self._partition(queue))

    async def apop(self, queue, timeout=0.0):
        return await self.queue.get.aio(block=timeout > 0, timeout=timeout or None,
                                        partition=self._partition(queue))

    async def aqlen(self, queue):
        return await self.queue.len.aio(partition=self._partition(queue))


def make_state(settings) -> State:
    """The local backing the settings ask for: SQLite at SDGATE_STATE_DB, memory for ":memory:"."""
    path = str(getattr(settings, "state_db", "") or "")
    if path in ("", ":memory:"):
        return MemoryState()
    return SqliteState(path)

"""The cross-container state store: the same behaviour on memory, SQLite and Modal's primitives,
and SQLite shared by two OS processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared.state import MemoryState, ModalState, SqliteState
from tests.modal_fakes import BlockingCallInAsyncCode, FakeDict, FakeQueue

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(params=["memory", "sqlite", "modal"])
def state(request, tmp_path):
    if request.param == "memory":
        return MemoryState()
    if request.param == "sqlite":
        return SqliteState(tmp_path / "state.sqlite3")
    return ModalState(FakeDict(), FakeQueue())


def test_keys_values_ttl_and_claims(state):
    assert state.get("a") is None and state.get("a", 7) == 7
    state.put("a", {"x": [1, 2]})
    got = state.get("a")
    got["x"].append(3)  # a copy: the stored value does not change
    assert state.get("a") == {"x": [1, 2]}
    assert state.get_many(["a", "b"]) == [{"x": [1, 2]}, None]
    assert state.add("claim", "first") is True
    assert state.add("claim", "second") is False and state.get("claim") == "first"
    state.put("short", 1, ttl=0.05)
    assert state.get("short") == 1
    time.sleep(0.1)
    assert state.get("short") is None
    assert state.add("short", 2) is True  # an expired claim can be taken again
    state.delete("a")
    assert state.get("a") is None
    assert state.incr("n") == 1 and state.incr("n", 4) == 5 and state.incr("n", -5) == 0


def test_queues_are_fifo_and_pop_waits(state):
    assert state.pop("q") is None and state.qlen("q") == 0
    for i in range(3):
        state.push("q", {"n": i})
    state.push("other", "x")
    assert state.qlen("q") == 3
    assert [state.pop("q")["n"] for _ in range(3)] == [0, 1, 2]
    assert state.pop("q", timeout=0.1) is None
    assert state.pop("other") == "x"


def test_async_forms_match(state):
    async def main():
        await state.aput("k", [1], ttl=60)
        assert await state.aget("k") == [1]
        assert await state.aget_many(["k", "nope"]) == [[1], None]
        assert await state.aadd("c", 1) and not await state.aadd("c", 2)
        await state.apush("q", "a")
        assert await state.aqlen("q") == 1
        assert await state.apop("q", timeout=0.5) == "a"
        assert await state.apop("q", timeout=0.1) is None
        await state.adelete("k")
        assert await state.aget("k", "gone") == "gone"

    asyncio.run(main())


def test_modal_backing_uses_aio_in_async_code_and_refuses_blocking_calls_there():
    mapping, queue = FakeDict(), FakeQueue()
    state = ModalState(mapping, queue)

    async def main():
        await state.aput("k", 1)
        await state.apush("q", 1)
        await state.apop("q")
        with pytest.raises(RuntimeError, match="blocking"):
            state.get("k")  # the blocking form from a coroutine: refused before any call

    asyncio.run(main())
    assert mapping.blocking_calls == 0 and queue.blocking_calls == 0
    assert mapping.aio_calls >= 1 and queue.aio_calls >= 2
    state.put("k", 2)  # blocking forms are for threads without a loop (the GPU class)
    assert state.get("k") == 2 and mapping.blocking_calls == 2
    with pytest.raises(BlockingCallInAsyncCode):  # and the fakes themselves enforce it too
        asyncio.run(_call_sync(mapping))


async def _call_sync(mapping):
    mapping.get("k")


CHILD = r"""
import sys
from shared.state import SqliteState
state = SqliteState(sys.argv[1])
me = sys.argv[2]
won = [k for k in range(200) if state.add(f"claim:{k}", me)]
for _ in range(100):
    state.incr("count")
taken = []
while (item := state.pop("work", timeout=0.2)) is not None:
    taken.append(item)
state.put(f"result:{me}", {"won": won, "taken": taken})
"""


def test_two_processes_on_one_sqlite_file_never_both_win(tmp_path):
    path = tmp_path / "shared.sqlite3"
    state = SqliteState(path)
    for i in range(300):
        state.push("work", i)
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(path), name], cwd=ROOT)
             for name in ("p1", "p2")]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    r1, r2 = state.get("result:p1"), state.get("result:p2")
    # every claim has exactly one winner, and it is the one the store kept
    assert sorted(r1["won"] + r2["won"]) == list(range(200))
    assert all(state.get(f"claim:{k}") == ("p1" if k in r1["won"] else "p2") for k in range(200))
    # every queue item was taken exactly once, in order within each taker
    assert sorted(r1["taken"] + r2["taken"]) == list(range(300))
    assert r1["taken"] == sorted(r1["taken"]) and r2["taken"] == sorted(r2["taken"])
    assert state.qlen("work") == 0
    assert state.get("count") == 200  # no increment lost between the processes

"""The per-task progress registry (pure): fractions, current task, interrupt/skip, forgetting."""

from __future__ import annotations

import types

from shared.progress import TaskRegistry


def test_fraction_counts_calls_and_steps():
    reg = TaskRegistry()
    t = reg.open("a")
    assert t.fraction() == 0.0 and reg.current() is None  # queued, not started
    t.begin("txt2img", job_count=2)
    t.begin_call(10)
    pipe = types.SimpleNamespace(_interrupt=False)
    for step in range(5):
        t.on_step_end(pipe, step, None, {})
    assert t.fraction() == 0.25 and reg.current() is t
    t.end_call()
    assert t.fraction() == 0.5
    t.finish()
    assert t.fraction() == 1.0 and t.eta() == 0.0 and reg.current() is None


def test_interrupt_and_skip_stop_the_pipeline_loop():
    reg = TaskRegistry()
    a, b = reg.open("a"), reg.open("b")
    pipe = types.SimpleNamespace(_interrupt=False)
    assert reg.skip("a") == 1
    a.on_step_end(pipe, 0, None, {})
    assert pipe._interrupt and not b.skipped
    a.begin_call(5)  # the next call starts clean
    assert not a.skipped
    assert reg.interrupt() == 2  # no id: every running task, like upstream's global interrupt
    assert a.interrupted and b.interrupted
    assert reg.interrupt("missing") == 0


def test_reopening_a_finished_id_starts_afresh_and_old_tasks_are_forgotten():
    reg = TaskRegistry(keep=2)
    first = reg.open("x")
    first.finish()
    assert reg.open("x") is not first
    for i in range(5):
        reg.open(f"t{i}").finish()
    assert ("", "t0") not in reg._tasks and ("", "t4") in reg._tasks  # forgotten here...
    assert reg.get("t0").registry is None  # ...read back from the store as a snapshot


def test_two_registries_on_one_store_see_progress_and_pass_flags(tmp_path):
    """The GPU side and the web side share nothing but the store (as two processes would)."""
    from shared.state import SqliteState

    gpu = TaskRegistry(state=SqliteState(tmp_path / "s.sqlite3"))
    web = TaskRegistry(state=SqliteState(tmp_path / "s.sqlite3"))
    pipe = types.SimpleNamespace(_interrupt=False)
    web.interrupt("t", "key-a")  # nothing runs yet: no stale flag for the task to trip on
    t = gpu.open("t", "key-a")
    t.begin("txt2img", 1)
    t.begin_call(4)
    t.on_step_end(pipe, 0, None, {})
    t.sync(force=True)
    seen = web.current("key-a")
    assert seen is not t and seen.id == "t" and seen.sampling_step == 1 and seen.sampling_steps == 4
    assert web.current("key-b") is None and web.get("t", "key-b") is None
    assert web.skip(None, "key-b") == 0 and web.interrupt("t", "key-b") == 0
    t.sync(force=True)
    assert not t.skipped and not t.interrupted  # another key's flags never reach it
    assert web.skip("t", "key-a") == 1
    t._synced = 0.0
    t.on_step_end(pipe, 1, None, {})
    assert t.skipped and pipe._interrupt
    t.begin_call(4)  # the skip ended that call only
    pipe._interrupt = False
    t.on_step_end(pipe, 0, None, {})
    assert not t.skipped and not pipe._interrupt
    web.interrupt(None, "key-a")  # every task of the caller
    t._synced = 0.0
    t.on_step_end(pipe, 1, None, {})
    assert t.interrupted and pipe._interrupt
    t.finish()
    assert web.current("key-a") is None and web.last("key-a").finished is not None
    assert web.step_seconds() is not None and web.step_seconds() >= 0

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
    assert reg.get("t0") is None and reg.get("t4") is not None

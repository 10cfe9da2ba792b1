"""Dynamic batching: compatible requests arriving together share one pipeline call.

Plain txt2img requests (no hires fix, no variant pipeline, all images in one call) are
compatible when everything but their prompts, seeds, image counts, output format and task ids is
equal: same model, size, steps, sampler, guidance, clip skip, LoRAs (fields and prompt tags),
tiling, ... Other requests run at once, alone. The first
request of a group leads it: it waits at most `wait_ms` for companions (less if the group fills up
to `max_batch` images), and, while another batch of the same model is running, keeps the group
open until that batch ends. Then it runs the group with `Engine.generate_batch` and hands each
request its own result. Incompatible requests are in other groups and never wait on this one.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

from shared.engine import prompt_schedule
from shared.engine.prompts import extract_networks
from shared.errors import SdgateError
from shared.generation import GenerationRequest, GenerationResult, Mode

# Fields each request of a batch keeps for itself; every other field must be equal.
PER_REQUEST = {"prompt", "negative_prompt", "seed", "subseed", "num_images", "output_format",
               "extra_params", "batch_size", "task_id", "init_image", "mask"}


class NotBatchable(Exception):
    """Requests that cannot share a pipeline call after all; the batcher runs each alone."""


def _scheduled(req: GenerationRequest) -> bool:
    return any(len(prompt_schedule.schedule(t, req.steps)) > 1
               for t in (req.prompt, req.negative_prompt))


def batchable(req: GenerationRequest) -> bool:
    """A request whose images can share a call with other requests' images."""
    return (req.mode is Mode.txt2img and req.hires is None and req.variant is None
            and not req.controlnets and not req.ip_adapters  # images: a call of their own
            and req.refiner is None  # a second model: a call of its own
            and (req.batch_size is None or req.batch_size >= req.num_images)
            and not _scheduled(req))  # prompt editing switches embeddings: its own call


def batch_key(req: GenerationRequest, model_name: str) -> str:
    """Requests with equal keys can run in one pipeline call."""
    shared = req.model_dump(mode="json", exclude=PER_REQUEST | {"model"})
    shared["prompt_networks"] = extract_networks(req.prompt)[1]  # <lora:...> tags apply to all
    return model_name + "\n" + json.dumps(shared, sort_keys=True, default=str)


@dataclass
class _Slot:
    req: GenerationRequest
    arrived: float = field(default_factory=time.perf_counter)
    done: threading.Event = field(default_factory=threading.Event)
    result: GenerationResult | None = None
    error: BaseException | None = None


@dataclass
class _Group:
    key: str
    model: str
    slots: list = field(default_factory=list)
    images: int = 0
    full: threading.Event = field(default_factory=threading.Event)


class BatchingEngine:
    """An Engine whose `generate` batches; every other attribute is the wrapped engine's."""

    def __init__(self, engine, max_batch: int = 4, wait_ms: float = 5.0):
        self.inner = engine
        self.max_batch = max_batch
        self.wait = wait_ms / 1000
        self._lock = threading.Lock()
        self._open: dict[str, _Group] = {}  # key -> the group still taking companions
        self._busy: dict[str, threading.Lock] = {}  # model -> held while one of its batches runs
        self.pipeline_calls = 0  # (tests, benchmark)
        self.merged_requests = 0  # requests that shared a call with another one

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def generate(self, req: GenerationRequest) -> GenerationResult:
        if req.num_images >= self.max_batch or not batchable(req):
            return self._alone(req)
        try:
            name = self.inner.registry.resolve(req.model).name
        except SdgateError:
            return self._alone(req)  # raises the engine's own error
        key = batch_key(req, name)
        slot = _Slot(req)
        with self._lock:
            group = self._open.get(key)
            lead = group is None or group.images + req.num_images > self.max_batch
            if lead:
                group = self._open[key] = _Group(key, name)
            group.slots.append(slot)
            group.images += req.num_images
            if group.images >= self.max_batch:
                group.full.set()
        if lead:
            self._lead(group)
        slot.done.wait()
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _alone(self, req: GenerationRequest) -> GenerationResult:
        with self._lock:
            self.pipeline_calls += 1
        return self.inner.generate(req)

    def _lead(self, group: _Group) -> None:
        group.full.wait(self.wait)  # companions arriving within the window join
        with self._lock:
            busy = self._busy.setdefault(group.model, threading.Lock())
        with busy:  # a running batch of this model: the group keeps filling meanwhile
            with self._lock:
                if self._open.get(group.key) is group:
                    del self._open[group.key]  # closed: later arrivals start a new group
                slots = list(group.slots)
                self.pipeline_calls += 1
                self.merged_requests += len(slots) if len(slots) > 1 else 0
            self._run(slots)

    def _run(self, slots: list[_Slot]) -> None:
        started = time.perf_counter()
        try:
            results = self.inner.generate_batch([s.req for s in slots])
            for s, r in zip(slots, results):
                s.result = r
        except Exception as e:
            if len(slots) == 1:
                slots[0].error = e
            else:  # one request's fault must not fail its companions: each runs alone
                for s in slots:
                    try:
                        s.result = self._alone(s.req)
                    except Exception as own:
                        s.error = own
        finally:
            for s in slots:
                if s.result is not None:
                    s.result.timings["queue"] = started - s.arrived
                s.done.set()


def wrap(engine, max_batch: int, wait_ms: float):
    """The engine with dynamic batching, or the engine itself when max_batch is 1."""
    if max_batch <= 1 or isinstance(engine, BatchingEngine):
        return engine
    return BatchingEngine(engine, max_batch, wait_ms)

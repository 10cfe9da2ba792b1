"""Engine-only time vs end-to-end HTTP time for the same request, through each API shape.

The app runs on 127.0.0.1 with a recording backend, so the engine-only run replays exactly the
GenerationRequest that the dialect built. The difference is split into what the result timings
and separate measurements account for: upload, batching queue, input decode, base64 output, and
the rest (routing, validation, JSON, the HTTP round trip).
"""

from __future__ import annotations

import base64
import time
from dataclasses import replace

import httpx

from shared.bench.server import free_port, in_thread
from shared.bench.shapes import Params, available
from shared.bench.timing import median, timed
from shared.images import b64decode_strict, check_image


class Recorder:
    """A Backend that remembers each request the app passes on, and its result's timings."""

    def __init__(self, inner):
        self.inner = inner
        self.storage = getattr(inner, "storage", None)  # the app serves local files from it
        self.calls: list[dict] = []

    async def generate(self, req, **kwargs):
        t0 = time.perf_counter()
        result = await self.inner.generate(req, **kwargs)
        self.calls.append({"req": req, "timings": dict(result.timings),
                           "backend_s": time.perf_counter() - t0})
        return result

    def __getattr__(self, name):
        return getattr(self.inner, name)


def succeeded(resp: httpx.Response) -> bool:
    """2xx with the images: not an error inside a 200 body, not a "still processing" answer."""
    if resp.status_code != 200:
        return False
    try:
        body = resp.json()
    except ValueError:
        return False
    return not (isinstance(body, dict) and (body.get("status") in ("error", "failed",
                                                                   "processing")
                                            or "error" in body))


def post(client: httpx.Client, url: str, shape, params: Params) -> httpx.Response:
    body = shape.body(params)
    if shape.form:
        return client.post(url + shape.path, data=body, headers=shape.headers)
    return client.post(url + shape.path, json=body, headers=shape.headers)


def raw_engine(engine):
    """The engine without the batching wrapper (engine-only runs must not wait for companions)."""
    return getattr(engine, "inner", engine)


def run(app_factory, backend, params: Params, reps: int) -> dict:
    """Measure every shape the app serves; `app_factory(backend)` builds the app."""
    recorder = Recorder(backend)
    app = app_factory(recorder)
    present, missing = available(app)
    engine = raw_engine(backend.engine)
    rows = []
    decode_s = median(timed(lambda: check_image(b64decode_strict(params.init_b64), 1 << 30))[0]
                      for _ in range(max(3, reps)))
    # Every request gets its own seed: some shapes refuse a repeated body (ModelsLab's spam filter).
    seeds = (replace(params, seed=params.seed + n) for n in range(1_000_000))
    with in_thread(app, free_port()) as url, httpx.Client(timeout=900) as client:
        for shape in present:
            warm = post(client, url, shape, next(seeds))  # derives pipelines, fills caches
            if not succeeded(warm):
                rows.append({"shape": shape.name, "path": shape.path, "ok": False,
                             "error": f"HTTP {warm.status_code}: {warm.text[:300]}"})
                continue
            http, eng, calls = [], [], []
            for _ in range(reps):
                t0 = time.perf_counter()
                resp = post(client, url, shape, next(seeds))
                http.append(time.perf_counter() - t0)
                if not succeeded(resp):
                    raise RuntimeError(f"{shape.path}: HTTP {resp.status_code} {resp.text[:300]}")
                calls.append(recorder.calls[-1])
                seconds, result = timed(engine.generate, calls[-1]["req"], device=engine.device)
                eng.append((seconds, result))
            rows.append(_row(shape, http, eng, calls, decode_s))
    return {"rows": rows, "missing": [s.path for s in missing], "reps": reps,
            "input_decode_s": decode_s}


def _row(shape, http, eng, calls, decode_s) -> dict:
    req = calls[-1]["req"]
    result = eng[-1][1]
    engine_s = median(s for s, _ in eng)
    http_s = median(http)
    upload = median(c["timings"].get("upload") for c in calls) or 0.0
    queue = median(c["timings"].get("queue") for c in calls) or 0.0
    b64 = 0.0
    if shape.base64_out:
        b64 = sum(median(timed(base64.b64encode, i.data)[0] for _ in range(3))
                  for i in result.images)
    decode = decode_s if req.init_image is not None else 0.0
    overhead = http_s - engine_s
    phases = {k: median(r.timings.get(k) for _, r in eng) for k in ("load", "inference", "encode")}
    return {
        "shape": shape.name, "path": shape.path, "ok": True,
        "size": f"{req.width}x{req.height}", "steps": req.steps, "mode": req.mode.value,
        "images": len(result.images), "engine_s": engine_s, **phases, "http_s": http_s,
        "engine_min_s": min(s for s, _ in eng), "http_min_s": min(http),
        "overhead_s": overhead, "overhead_pct": 100 * overhead / engine_s,
        "upload_s": upload, "queue_s": queue, "decode_s": decode, "base64_s": b64,
        "other_s": overhead - upload - queue - decode - b64,
    }

"""`sdgate serve` as a user starts it: cold start, then concurrent clients against it.

Cold start: process spawn -> /health answers (imports, model load, server start) -> first image
-> second image; the model must load exactly once. Then C client threads send a bounded number
of requests on 127.0.0.1: images/s, p50/p95 latency and errors (which must be 0), while a probe
times `/health` (the goal: under 50 ms with the engine saturated).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import replace

import httpx

from shared.bench.http import post, succeeded
from shared.bench.server import Child
from shared.bench.shapes import Params, Shape
from shared.bench.timing import percentile

LOADED = re.compile(r"loaded model (\S+) in ([0-9.]+)s")


def cold_start(child: Child, shape: Shape, params: Params) -> dict:
    """Time a freshly spawned server up to its second image."""
    ready = child.wait_ready()
    out = {"ready_s": ready, "shape": shape.path}
    with httpx.Client(timeout=900) as client:
        for n, name in ((0, "first"), (1, "second")):
            t0 = time.perf_counter()
            resp = post(client, child.url, shape, replace(params, seed=params.seed + n))
            now = time.perf_counter()
            if not succeeded(resp):
                raise RuntimeError(f"cold start {name} request: HTTP {resp.status_code} "
                                   f"{resp.text[:300]}")
            out[f"{name}_request_s"] = now - t0
            out[f"{name}_image_s"] = now - child.started
    loads = LOADED.findall(child.log())
    out["model_loads"] = len(loads)
    out["model_load_s"] = float(loads[0][1]) if loads else None
    out["reloaded"] = len(loads) != 1  # the second request must not load again
    return out


def load_test(url: str, shape: Shape, params: Params, clients: int, requests: int,
              time_limit: float) -> dict:
    """`clients` threads share `requests` requests; new ones stop after `time_limit` seconds."""
    tickets = iter(range(requests))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    images = 0
    start = time.perf_counter()
    deadline = start + time_limit

    def client_loop():
        nonlocal images
        with httpx.Client(timeout=max(60.0, time_limit * 2)) as client:
            while True:
                with lock:
                    n = next(tickets, None)
                if n is None or time.perf_counter() > deadline:
                    return
                t0 = time.perf_counter()
                try:
                    resp = post(client, url, shape, replace(params, seed=params.seed + 100 + n))
                    ok = succeeded(resp)
                    why = f"HTTP {resp.status_code}: {resp.text[:200]}"
                except httpx.HTTPError as e:
                    ok, why = False, f"{type(e).__name__}: {e}"
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    if ok:
                        images += 1
                    else:
                        errors.append(why)

    health_ms: list[float] = []
    done = threading.Event()

    def health_probe():  # /health latency while the clients hold the engine
        with httpx.Client(timeout=30) as client:
            while not done.wait(0.05):
                t0 = time.perf_counter()
                try:
                    client.get(url + "/health")
                except httpx.HTTPError:
                    continue
                health_ms.append((time.perf_counter() - t0) * 1000)

    probe = threading.Thread(target=health_probe)
    probe.start()
    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    probe.join()
    wall = time.perf_counter() - start
    return {"clients": clients, "requests": len(latencies), "errors": len(errors),
            "error_samples": errors[:3], "wall_s": wall, "images_per_s": images / wall,
            "p50_s": percentile(latencies, 50), "p95_s": percentile(latencies, 95),
            "health_p95_ms": percentile(health_ms, 95) if health_ms else None,
            "health_max_ms": max(health_ms) if health_ms else None}

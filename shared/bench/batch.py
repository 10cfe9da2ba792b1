"""Batching: N compatible requests as one pipeline call vs one by one, and through the batcher.

Each request keeps its own prompt and seed; the batched images must equal the one-by-one images
(up to 2/255: batched matmuls round differently).
"""

from __future__ import annotations

import io
import threading

from shared.bench.timing import median, timed
from shared.generation import GenerationRequest


def pixels(data: bytes):
    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def run(engine, params, images: int = 4, reps: int = 1) -> dict:
    raw = getattr(engine, "inner", engine)
    reqs = [GenerationRequest(prompt=f"{params.prompt}, variant {i}", width=params.size,
                              height=params.size, steps=params.steps, seed=params.seed + i)
            for i in range(images)]
    if not hasattr(raw, "generate_batch"):
        return {"images": images, "rows": [], "note": "this engine cannot batch"}
    raw.generate(reqs[0])  # warm
    one_by_one = [timed(lambda: [raw.generate(r) for r in reqs], device=raw.device)
                  for _ in range(reps)]
    batched = [timed(raw.generate_batch, reqs, device=raw.device) for _ in range(reps)]
    singles = [res.images[0].data for res in one_by_one[-1][1]]
    together = [res.images[0].data for res in batched[-1][1]]
    diff = max(int(abs(pixels(a) - pixels(b)).max()) for a, b in zip(singles, together))
    t_one, t_batch = median(s for s, _ in one_by_one), median(s for s, _ in batched)
    rows = [{"how": "one by one", "images": images, "pipeline_calls": images, "seconds": t_one,
             "images_per_s": images / t_one, "max_pixel_diff": 0},
            {"how": "one pipeline call", "images": images, "pipeline_calls": 1,
             "seconds": t_batch, "images_per_s": images / t_batch, "max_pixel_diff": diff}]
    if engine is not raw:  # the batcher the server uses: concurrent callers, merged on the fly
        runs = [_through_batcher(engine, reqs) for _ in range(reps)]
        rows.append(min(runs, key=lambda r: r["seconds"]) if reps == 1 else
                    {**runs[0], **{k: median(r[k] for r in runs)
                                   for k in ("seconds", "images_per_s", "pipeline_calls")}})
    return {"images": images, "rows": rows, "speedup": t_one / t_batch}


def _through_batcher(engine, reqs) -> dict:
    results, threads = [None] * len(reqs), []
    calls_before = engine.pipeline_calls

    def call(i):
        results[i] = engine.generate(reqs[i])

    def all_at_once():
        for i in range(len(reqs)):
            threads.append(threading.Thread(target=call, args=(i,)))
            threads[-1].start()
        for t in threads:
            t.join()

    seconds, _ = timed(all_at_once)
    return {"how": f"{len(reqs)} concurrent callers via the batcher", "images": len(reqs),
            "pipeline_calls": engine.pipeline_calls - calls_before, "seconds": seconds,
            "images_per_s": len(reqs) / seconds}

"""Dynamic batching on the tiny model: same images as one by one, only compatible requests merge."""

import io
import threading

import numpy as np
import pytest
from PIL import Image

from shared.backend import LocalBackend
from shared.engine.batching import BatchingEngine, NotBatchable, batch_key, batchable
from shared.errors import Unsupported
from shared.generation import GenerationRequest
from shared.storage import LocalStorage

SMALL = dict(width=64, height=64, steps=3)


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def req(prompt="a red fox", seed=1, **kw):
    return GenerationRequest(**{**SMALL, "prompt": prompt, "seed": seed, **kw})


def close(a: bytes, b: bytes) -> bool:
    """Same picture up to 2/255 (a batched matmul rounds differently)."""
    return np.abs(pixels(a) - pixels(b)).max() <= 2


def in_threads(fn, args_list):
    out, threads = [None] * len(args_list), []
    for i, args in enumerate(args_list):
        threads.append(threading.Thread(target=lambda i=i, a=args: out.__setitem__(i, fn(*a))))
        threads[-1].start()
    return threads, out


def join(threads):
    for t in threads:
        t.join(120)
        assert not t.is_alive()


def test_batch_key_ignores_only_per_request_fields():
    a = req()
    assert batch_key(a, "m") == batch_key(req("another prompt", seed=9, num_images=2,
                                              negative_prompt="blur", output_format="jpeg"), "m")
    for other in (req(steps=4), req(width=72), req(sampler="Euler"), req(guidance=5.0),
                  req(clip_skip=2)):
        assert batch_key(a, "m") != batch_key(other, "m")
    assert batch_key(a, "m") != batch_key(a, "other-model")


def test_one_pipeline_call_draws_the_same_images_as_one_by_one(engine):
    reqs = [req("a red fox", seed=10), req("a blue whale", seed=20, num_images=2),
            req("a green owl", seed=30, negative_prompt="blurry", output_format="webp")]
    together = engine.generate_batch(reqs)
    for r, res in zip(reqs, together):
        alone = engine.generate(r)
        assert [i.seed for i in res.images] == [i.seed for i in alone.images]
        assert all(close(a.data, b.data) for a, b in zip(res.images, alone.images))
        assert res.images[0].mime_type == alone.images[0].mime_type
        assert res.images[0].infotext.startswith(r.prompt + "\n")
        assert res.timings["batch"] == 4
    # Each request kept its own prompt: the two single-image requests differ.
    assert not close(together[0].images[0].data, together[2].images[0].data)


def test_concurrent_compatible_requests_share_one_call(engine):
    batcher = BatchingEngine(engine, max_batch=4, wait_ms=60_000)  # the 4th image closes it
    reqs = [req(f"prompt {i}", seed=100 + i) for i in range(4)]
    threads, results = in_threads(batcher.generate, [(r,) for r in reqs])
    join(threads)
    assert batcher.pipeline_calls == 1 and batcher.merged_requests == 4
    for r, res in zip(reqs, results):
        assert res.seed == r.seed and res.timings["batch"] == 4 and "queue" in res.timings
        assert close(res.images[0].data, engine.generate(r).images[0].data)


def test_incompatible_requests_never_wait_on_each_others_batch(engine):
    batcher = BatchingEngine(engine, max_batch=2, wait_ms=60_000)
    waiting, results_a = in_threads(batcher.generate, [(req("alone", seed=1, steps=2),)])
    # Another group (other steps) fills up and runs while the first one is still gathering.
    others, results_b = in_threads(batcher.generate, [(req("b", seed=2),), (req("c", seed=3),)])
    join(others)
    assert [r.timings["batch"] for r in results_b] == [2, 2]
    assert waiting[0].is_alive() and results_a[0] is None
    # A compatible companion closes the first group.
    assert batcher.generate(req("companion", seed=4, steps=2)).timings["batch"] == 2
    join(waiting)
    assert results_a[0].timings["batch"] == 2 and batcher.pipeline_calls == 2


def run_pair(batcher, a, b):
    """Two requests sent together; each one's result, or the error it raised."""
    out = [None, None]

    def call(i, r):
        try:
            out[i] = batcher.generate(r)
        except Exception as e:  # the assertions look at which
            out[i] = e

    threads = [threading.Thread(target=call, args=(i, r)) for i, r in enumerate((a, b))]
    for t in threads:
        t.start()
    join(threads)
    return out


def test_one_bad_request_does_not_fail_its_companions(engine, monkeypatch):
    from shared.engine import prompts

    real = prompts.encode

    def encode(pipe, prompt, *a, **kw):  # a prompt the engine refuses, batched with a good one
        if "refused" in prompt:
            raise Unsupported("refused prompt", param="prompt")
        return real(pipe, prompt, *a, **kw)

    monkeypatch.setattr(prompts, "encode", encode)
    good, bad = req("good", seed=6), req("a refused prompt", seed=7)
    batcher = BatchingEngine(engine, max_batch=2, wait_ms=60_000)
    got_good, got_bad = run_pair(batcher, good, bad)
    assert isinstance(got_bad, Unsupported)
    assert close(got_good.images[0].data, engine.generate(good).images[0].data)


def test_prompts_of_different_lengths_fall_back_to_one_by_one(engine):
    long = req(", ".join(["a very detailed red fox in the snow"] * 12), seed=8)  # 2 chunks
    short = req("a fox", seed=9)
    batcher = BatchingEngine(engine, max_batch=2, wait_ms=60_000)
    got_long, got_short = run_pair(batcher, long, short)
    assert got_long.timings["batch"] == got_short.timings["batch"] == 1
    assert close(got_long.images[0].data, engine.generate(long).images[0].data)


def test_only_plain_txt2img_requests_are_batched(engine):
    from shared.generation import HiresFix

    init = engine.generate(req(seed=5)).images[0].data
    assert batchable(req()) and batchable(req(num_images=2, batch_size=2))
    for other in (req(mode="img2img", init_image=init), req(num_images=2, batch_size=1),
                  req(hires=HiresFix(width=96, height=96)), req(variant="self_attention")):
        assert not batchable(other)
    batcher = BatchingEngine(engine, max_batch=4, wait_ms=60_000)
    i2i = batcher.generate(req(mode="img2img", init_image=init, strength=0.7))  # no 60 s wait
    assert i2i.timings["batch"] == 1
    with pytest.raises(NotBatchable):
        engine.generate_batch([req(), req(mode="img2img", init_image=init)])


def test_loras_in_prompts_are_part_of_the_key():
    assert batch_key(req("a fox <lora:x:0.5>"), "m") != batch_key(req("a fox"), "m")
    assert batch_key(req("a fox <lora:x:0.5>"), "m") == batch_key(req("a cat <lora:x:0.5>"), "m")


def test_a_batch_keeps_each_requests_progress_task(engine):
    from shared.progress import TASKS

    reqs = [req(f"p{i}", seed=60 + i, task_id=f"batch-task-{i}") for i in range(2)]
    results = engine.generate_batch(reqs)
    for i, res in enumerate(results):
        task = TASKS.get(f"batch-task-{i}")
        assert task.finished is not None and task.fraction() == 1.0
        assert not res.interrupted


def test_requests_larger_than_a_batch_run_alone(engine):
    batcher = BatchingEngine(engine, max_batch=2, wait_ms=60_000)
    assert batcher.generate(req(num_images=2)).timings["batch"] == 2  # no 60 s wait
    assert batcher.pipeline_calls == 1


def test_local_backend_batches_when_enabled(engine, tmp_path, monkeypatch):
    storage = LocalStorage(tmp_path, "http://testserver")
    assert isinstance(LocalBackend(engine, storage, max_batch=4).engine, BatchingEngine)
    assert LocalBackend(engine, storage, max_batch=1).engine is engine
    # The settings decide where the caller read them (the app and the Modal GPU class).
    from shared.config import Settings

    assert LocalBackend(engine, storage).engine is engine  # no batching unless asked
    monkeypatch.setenv("SDGATE_MAX_BATCH", "3")
    monkeypatch.setenv("SDGATE_BATCH_WAIT_MS", "7")
    backend = LocalBackend.from_settings(engine, storage, Settings(_env_file=None))
    assert backend.engine.max_batch == 3 and backend.engine.wait == pytest.approx(0.007)
    assert backend.engine.cache is engine.cache  # everything else is the engine's


def test_http_requests_are_batched_end_to_end(engine, make_settings, tmp_path):
    import httpx

    from shared.app import create_app
    from shared.storage import make_storage
    from tests.conftest import free_port, running

    port = free_port()
    settings = make_settings(public_url=f"http://127.0.0.1:{port}")
    backend = LocalBackend(engine, make_storage(settings), max_batch=3, batch_wait_ms=60_000)
    with running(create_app(settings, backend), port) as url:
        bodies = [{"prompt": f"prompt {i}", "seed": 40 + i, "width": 64, "height": 64,
                   "num_inference_steps": 3} for i in range(3)]
        threads, resps = in_threads(lambda b: httpx.post(url + "/txt2img", data=b, timeout=120),
                                    [(b,) for b in bodies])
        join(threads)
        assert [r.status_code for r in resps] == [200, 200, 200]
        assert backend.engine.pipeline_calls == 1
        for body, resp in zip(bodies, resps):
            image = resp.json()["images"][0]
            assert image["seed"] == body["seed"]
            alone = engine.generate(req(body["prompt"], seed=body["seed"])).images[0].data
            assert close(httpx.get(image["image_url"]).content, alone)

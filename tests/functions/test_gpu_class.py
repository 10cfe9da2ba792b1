"""The GPU class run in this process with .local(): enter hooks, generation, upload to S3."""

import io

import httpx
import pytest
import torch
from modal._utils.async_utils import synchronizer
from PIL import Image

from functions.generator import Generator
from shared.errors import ModelNotFound
from shared.generation import GenerationRequest

TINY = dict(prompt="a red cube", width=64, height=64, steps=2, seed=11)


@pytest.fixture
def gpu_env(monkeypatch, models_dir, s3_bucket, quiet_modal):
    """The environment a GPU container gets: the weights dir and the sdgate-s3 secret's keys."""
    endpoint, bucket = s3_bucket
    for key, value in {"SDGATE_MODELS_DIR": str(models_dir), "SDGATE_S3_BUCKET": bucket,
                       "SDGATE_S3_ENDPOINT_URL": endpoint, "SDGATE_S3_REGION": "us-east-1",
                       "SDGATE_DEVICE": "cpu"}.items():
        monkeypatch.setenv(key, value)
    return endpoint, bucket


def test_generates_uploads_and_returns_a_url_that_fetches(gpu_env):
    endpoint, bucket = gpu_env
    result = Generator().generate.local(GenerationRequest(**TINY), "job-abc")
    assert result.job_id == "job-abc" and result.model == "tiny-sd"
    image = result.images[0]
    assert image.data is None  # bytes stay on the GPU side unless asked for
    assert image.url.startswith(f"{endpoint}/{bucket}/sdgate/") and "/job-abc/0.png" in image.url
    got = httpx.get(image.url)
    assert got.status_code == 200
    assert Image.open(io.BytesIO(got.content)).size == (64, 64)


def test_enter_hooks_load_once_and_keep_bytes_on_request(gpu_env):
    generator = Generator()
    first = generator.generate.local(GenerationRequest(**TINY), "job-1")
    second = generator.generate.local(GenerationRequest(**TINY), "job-2", True)
    assert generator.engine.cache.loads == 1  # the second call found the model warm
    assert generator.loaded.local() == ["tiny-sd"]
    assert first.images[0].data is None
    assert Image.open(io.BytesIO(second.images[0].data)).size == (64, 64)
    assert "/job-2/0.png" in second.images[0].url


def test_engine_errors_cross_as_themselves(gpu_env):
    with pytest.raises(ModelNotFound):
        Generator().generate.local(GenerationRequest(model="nope", **TINY), "job-x")


def test_starts_with_an_empty_volume_and_says_why_per_request(gpu_env, monkeypatch, tmp_path):
    monkeypatch.setenv("SDGATE_MODELS_DIR", str(tmp_path))
    generator = Generator()
    assert generator.loaded.local() == []
    with pytest.raises(ModelNotFound, match="no models found"):
        generator.generate.local(GenerationRequest(**TINY), "job-y")


def test_snapshot_phase_stages_weights_in_ram_at_the_gpu_dtype(gpu_env, monkeypatch):
    """Before a CPU memory snapshot there is no GPU: the load hook keeps the GPU's fp16 dtype but
    places the weights on the CPU, and remembers where they must go after the restore."""
    monkeypatch.setenv("SDGATE_DEVICE", "cuda")
    instance = synchronizer._translate_in(Generator)._user_cls()
    instance.load()  # the @modal.enter(snap=True) hook alone
    assert instance.device == "cuda" and instance.engine.device == "cpu"
    unet = instance.engine.cache.get(instance.engine.registry.resolve(None)).pipe.unet
    param = next(unet.parameters())
    assert param.device.type == "cpu" and param.dtype == torch.float16


def test_concurrent_inputs_share_one_pipeline_call(gpu_env, monkeypatch):
    """@modal.concurrent runs inputs in threads; LocalBackend batches them (SDGATE_MAX_BATCH)."""
    import threading

    monkeypatch.setenv("SDGATE_MAX_BATCH", "2")
    monkeypatch.setenv("SDGATE_BATCH_WAIT_MS", "1000")  # the second input closes it sooner
    generator = Generator()
    generator.generate.local(GenerationRequest(**TINY), "job-warm")  # enter hooks, once
    results = {}

    def call(n):
        req = GenerationRequest(**{**TINY, "prompt": f"prompt {n}", "seed": 20 + n})
        results[n] = generator.generate.local(req, f"job-{n}")

    threads = [threading.Thread(target=call, args=(n,)) for n in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert [results[n].timings["batch"] for n in (1, 2)] == [2, 2]
    assert [results[n].images[0].seed for n in (1, 2)] == [21, 22]
    assert "/job-2/0.png" in results[2].images[0].url

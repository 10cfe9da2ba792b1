"""RemoteBackend: the web side of the Modal split, with the remote call as a plain coroutine."""

import pickle

import anyio
import pytest

from shared.engine.registry import ModelRegistry
from shared.errors import FieldError, GenerationFailed, ModelNotFound, ValidationFailed
from shared.generation import GenerationRequest, GenerationResult
from shared.remote import RemoteBackend

REQ = GenerationRequest(prompt="x")


def test_passes_request_and_a_fresh_job_id(models_dir):
    seen = []

    async def call(req, job_id, keep_bytes):
        seen.append((req, job_id, keep_bytes))
        return GenerationResult(images=[], model="m", seed=1, job_id=job_id)

    backend = RemoteBackend(call, ModelRegistry(models_dir))
    result = anyio.run(lambda: backend.generate(REQ, keep_bytes=True))
    req, job_id, keep = seen[0]
    assert req is REQ and keep is True and len(job_id) == 32 and result.job_id == job_id
    anyio.run(lambda: backend.generate(REQ, job_id="given"))
    assert seen[1][1] == "given"


def test_sdgate_errors_pass_and_others_become_generation_failed(models_dir):
    async def not_found(req, job_id, keep_bytes):
        raise ModelNotFound("Model not found: 'x'", param="model")

    async def broken(req, job_id, keep_bytes):
        raise ConnectionError("GPU container went away")

    with pytest.raises(ModelNotFound):
        anyio.run(lambda: RemoteBackend(not_found, ModelRegistry(models_dir)).generate(REQ))
    with pytest.raises(GenerationFailed, match="ConnectionError: GPU container went away"):
        anyio.run(lambda: RemoteBackend(broken, ModelRegistry(models_dir)).generate(REQ))


def test_native_size_reads_the_weights_without_an_engine(models_dir):
    backend = RemoteBackend(None, ModelRegistry(models_dir))
    assert backend.native_size(None) == 512
    with pytest.raises(ModelNotFound):
        backend.native_size("nope")


def test_errors_survive_pickling_with_their_fields():
    """Modal pickles a remote exception back to the caller; the dialect needs param and fields."""
    err = ValidationFailed("bad", param="width", fields=[FieldError("width", "too big")])
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is ValidationFailed and back.param == "width"
    assert back.fields == [FieldError("width", "too big")] and back.message == "bad"

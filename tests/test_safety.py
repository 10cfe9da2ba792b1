"""The NSFW checker: flagged images are replaced, reported, and their pixels never stored."""

from __future__ import annotations

import base64
import io
import json
import sqlite3
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from shared.engine import safety
from shared.generation import GenerationRequest, NsfwAction
from tests.http_helpers import SMALL


@pytest.fixture
def flag_everything(engine):
    """Lower the tiny checker's thresholds below any similarity, so every image is flagged."""
    checker = engine.warm().safety_checker
    saved = checker.concept_embeds_weights.data.clone()
    checker.concept_embeds_weights.data.fill_(-2.0)
    yield
    checker.concept_embeds_weights.data.copy_(saved)


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def test_tiny_checker_passes_images_by_default(engine):
    res = engine.generate(GenerationRequest(prompt="a cat", width=64, height=64, steps=2, seed=1,
                                            safety_checker=True))
    assert [i.nsfw for i in res.images] == [False] and pixels(res.images[0].data).any()


@pytest.mark.parametrize("action", list(NsfwAction))
def test_replacements(action):
    rng = np.random.default_rng(0)
    original = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    out = np.asarray(safety.replace(original, action))
    assert out.shape == (64, 64, 3) and not np.array_equal(out, np.asarray(original))
    if action is NsfwAction.black:
        assert not out.any()
    if action is NsfwAction.sensitive_content_text:
        assert out.max() > 200 and (out == 0).mean() > 0.5  # white label on black
    if action is NsfwAction.pixelate:
        assert np.array_equal(out[0, 0], out[15, 15])  # one 16 px block, one colour


def test_missing_checker_is_refused(tmp_path, models_dir):
    from shared.engine import Engine
    from shared.engine.registry import ModelRegistry
    from shared.errors import Unsupported

    eng = Engine(ModelRegistry(models_dir))
    loaded = eng.warm()
    loaded.safety_checker = None
    eng.shared_checker = safety.SharedChecker(tmp_path)  # no <models_dir>/safety_checker there
    with pytest.raises(Unsupported, match="safety checker"):
        eng.generate(GenerationRequest(prompt="x", width=64, height=64, steps=1,
                                       safety_checker=True))


def test_flagged_images_are_replaced_and_the_original_is_stored_nowhere(
        make_app, make_settings, engine, flag_everything, tmp_path):
    body = {"prompt": "a cat", "seed": 77, "samples": "2", "safety_checker": "yes", **SMALL}
    # What the model drew, computed in memory only (the same request without the checker).
    originals = engine.generate(GenerationRequest(
        prompt="a cat", width=64, height=64, steps=2, guidance=7.5, seed=77, num_images=2))
    drawn = [pixels(i.data) for i in originals.images]
    assert all(p.any() for p in drawn)

    with TestClient(make_app(sync_wait_seconds=0)) as c:
        first = c.post("/api/v3/text2img", json={**body, "base64": "yes"}).json()
        for _ in range(600):
            out = c.post(first["fetch_result"], json={}).json()
            if out["status"] != "processing":
                break
            time.sleep(0.1)
        assert out["status"] == "success" and out["nsfw_content_detected"] is True
        assert out["meta"]["nsfw_content_detected"] == [True, True]
        for b64 in out["output"]:
            assert not pixels(base64.b64decode(b64)).any()  # black

    # Every stored object: result files and every image the job store holds.
    stored = [p.read_bytes() for p in (tmp_path / "outputs").rglob("*") if p.is_file()]
    with sqlite3.connect(make_settings().jobs_db) as db:
        for (data,) in db.execute("SELECT data FROM jobs"):
            stored += [base64.b64decode(s) for s in json.loads(data)["images_base64"]]
    assert len(stored) == 4
    for blob in stored:
        assert not any(np.array_equal(pixels(blob), d) for d in drawn)
        assert not pixels(blob).any()


def test_blur_keeps_the_shape_of_the_picture(client, flag_everything):
    out = client.post("/api/v3/text2img", json={
        "prompt": "a cat", "seed": 3, "safety_checker_type": "blur", **SMALL}).json()
    assert out["nsfw_content_detected"] is True and out["meta"]["safety_checker_type"] == "blur"
    img = pixels(client.get(out["output"][0]).content)
    assert img.any() and img.std() < 40  # blurred, not blank

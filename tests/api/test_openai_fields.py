"""The openai package's newer Images fields against a live sdgate: quality, output_format and
output_compression, background, moderation, user, usage, gpt-image edits without a mask, and
GET /v1/models."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
import openai
import pytest
from PIL import Image

from tests.api.test_openai_client import image_file
from tests.conftest import running
from tests.test_safety import flag_everything, local_app  # noqa: F401 (fixture)


@pytest.fixture
def oai(live_server):
    url = live_server()
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def decoded(item) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(item.b64_json)))


def test_output_format_compression_and_usage(oai):
    sizes = {}
    for q in (95, 5):
        out = oai.images.generate(model="gpt-image-1", prompt="a red barn, dusk", size="64x64",
                                  quality="low", output_format="jpeg", output_compression=q,
                                  user="user-1234")
        img = decoded(out.data[0])
        assert img.format == "JPEG" and img.size == (64, 64)
        sizes[q] = len(base64.b64decode(out.data[0].b64_json))
        assert out.output_format == "jpeg" and out.size == "64x64" and out.background == "opaque"
        u = out.usage
        assert u.input_tokens_details.text_tokens == 5  # a, red, barn, ",", dusk
        assert u.output_tokens == 1 and u.total_tokens == u.input_tokens + u.output_tokens
    assert sizes[5] < sizes[95]  # the compression changed the bytes
    out = oai.images.generate(model="gpt-image-1", prompt="a barn", size="64x64", quality="low",
                              output_format="webp")
    assert decoded(out.data[0]).format == "WEBP"


def test_bad_combinations_are_clear_400s(oai):
    for kw, param in (({"background": "transparent"}, "background"),
                      ({"output_compression": 101}, "output_compression"),
                      ({"output_format": "gif"}, "output_format")):
        with pytest.raises(openai.BadRequestError) as e:
            oai.images.generate(model="gpt-image-1", prompt="x", size="64x64", **kw)
        assert e.value.body["param"] == param
    out = oai.images.generate(model="gpt-image-1", prompt="x", size="64x64", quality="low",
                              background="opaque", moderation="low")
    assert decoded(out.data[0]).size == (64, 64)


def test_gpt_image_edit_without_mask_reworks_the_whole_image(oai):
    rng = np.random.default_rng(1)
    src = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    out = oai.images.edit(model="gpt-image-1", image=image_file(src), prompt="a watercolor",
                          size="64x64", quality="low")
    got = np.asarray(decoded(out.data[0]).convert("RGB"), dtype=float)
    diff = np.abs(got - np.asarray(src, dtype=float)).mean(axis=2)
    # every quarter changed (no mask: nothing is kept as it was)
    for part in (diff[:32, :32], diff[:32, 32:], diff[32:, :32], diff[32:, 32:]):
        assert part.mean() > 5
    assert out.usage.input_tokens_details.image_tokens == 1
    # dall-e-2 still needs a mask or transparency
    with pytest.raises(openai.BadRequestError):
        oai.images.edit(model="dall-e-2", image=image_file(src), prompt="x", size="64x64")


def test_models_list_in_openai_shape(oai):
    page = oai.models.list()
    assert [m.id for m in page.data] == ["tiny-sd"]
    assert page.data[0].object == "model" and page.data[0].owned_by == "sdgate"


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the client marks variations retired
def test_moderation_auto_blocks_flagged_images_low_skips(make_settings, engine, flag_everything):
    with running(local_app(make_settings(), engine)) as url:
        c = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
        with pytest.raises(openai.BadRequestError) as e:
            c.images.generate(model="gpt-image-1", prompt="a cat", size="64x64", quality="low")
        assert e.value.code == "moderation_blocked"
        out = c.images.generate(model="gpt-image-1", prompt="a cat", size="64x64",
                                quality="low", moderation="low")
        assert np.asarray(decoded(out.data[0])).any()  # not blacked out
        # variations are screened too (OpenAI's default applies to every output); the SDK's
        # create_variation has no moderation argument: extra_body carries it
        src = image_file(Image.new("RGB", (64, 64), "blue"))
        with pytest.raises(openai.BadRequestError) as e:
            c.images.create_variation(image=src, response_format="b64_json")
        assert e.value.code == "moderation_blocked"
        out = c.images.create_variation(image=src, response_format="b64_json",
                                        extra_body={"moderation": "low"})
        assert np.asarray(decoded(out.data[0])).any()


def test_streaming_partial_images_through_the_sdk_iterator(oai):
    stream = oai.images.generate(model="gpt-image-1", prompt="a lighthouse", size="64x64",
                                 stream=True, partial_images=2, extra_body={"seed": 3})
    events = list(stream)
    kinds = [e.type for e in events]
    assert kinds == ["image_generation.partial_image"] * 2 + ["image_generation.completed"]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]
    previews = [np.asarray(decoded(e).convert("RGB"), dtype=float) for e in events[:2]]
    final = decoded(events[-1])
    assert final.size == (64, 64) and all(p.shape == (64, 64, 3) for p in previews)
    assert all(p.std() > 0 for p in previews) and not np.array_equal(previews[0], previews[1])
    assert events[-1].usage.output_tokens == 1 and events[-1].size == "64x64"
    # without partial images: the completed event only
    only = list(oai.images.generate(model="gpt-image-1", prompt="a lighthouse", size="64x64",
                                    quality="low", stream=True))
    assert [e.type for e in only] == ["image_generation.completed"]
    with pytest.raises(openai.BadRequestError):
        oai.images.generate(model="gpt-image-1", prompt="x", size="64x64", partial_images=2)


def test_streaming_an_edit_through_the_sdk_iterator(oai):
    rng = np.random.default_rng(2)
    src = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    stream = oai.images.edit(model="gpt-image-1", image=image_file(src), prompt="a watercolor",
                             quality="low", stream=True, partial_images=2, user="u-1")
    events = list(stream)
    assert [e.type for e in events] == ["image_edit.partial_image"] * 2 + ["image_edit.completed"]
    previews = [np.asarray(decoded(e).convert("RGB"), dtype=float) for e in events[:2]]
    assert all(p.std() > 0 for p in previews) and not np.array_equal(previews[0], previews[1])
    final = events[-1]
    assert decoded(final).size == (64, 64) and final.safety_identifier == "u-1"
    assert final.usage.input_tokens_details.image_tokens == 1 and final.quality == "low"


def test_an_engine_refusal_is_a_4xx_even_when_streaming(oai):
    # the engine refuses the unknown LoRA before denoising: the stream has not started yet
    with pytest.raises(openai.NotFoundError) as e:
        list(oai.images.generate(model="gpt-image-1", prompt="a cat <lora:no-such-lora:0.8>",
                                 size="64x64", quality="low", stream=True, partial_images=1))
    assert "no-such-lora" in e.value.message


def test_a_failure_after_the_stream_started_is_an_error_event(make_settings, engine,
                                                              flag_everything):
    # the safety checker runs after denoising: by then the stream is open, so the SDK's
    # iterator raises APIError from the `error` event, with OpenAI's error body
    with running(local_app(make_settings(), engine)) as url:
        c = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0, timeout=120)
        stream = c.images.generate(model="gpt-image-1", prompt="a cat", size="64x64",
                                   quality="low", stream=True, partial_images=1)
        seen = []
        with pytest.raises(openai.APIError) as e:
            for event in stream:
                seen.append(event.type)
        assert seen == ["image_generation.partial_image"]  # the preview came before the check
        assert e.value.body["code"] == "moderation_blocked"


def test_the_async_client_streams_too(live_server):
    import asyncio

    url = live_server()

    async def events():
        client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0,
                                    timeout=120)
        stream = await client.images.generate(model="gpt-image-1", prompt="a boat", size="64x64",
                                              quality="low", stream=True, partial_images=1)
        return [e async for e in stream]

    got = asyncio.run(events())
    assert [e.type for e in got] == ["image_generation.partial_image",
                                     "image_generation.completed"]
    final = np.asarray(decoded(got[-1]).convert("RGB"), dtype=float)
    assert final.shape == (64, 64, 3) and np.isfinite(final).all() and final.std() > 0


def test_a_client_that_leaves_a_stream_interrupts_its_generation(live_server):
    """Closing the stream after the first partial image stops the engine at its next step: the
    generation is metered interrupted, not run to its end for nobody."""
    import httpx

    url = live_server()

    def interrupted() -> float:
        text = httpx.get(f"{url}/metrics", timeout=30).text
        line = [ln for ln in text.splitlines() if ln.startswith("sdgate_generations_total{")
                and 'shape="openai"' in ln and 'result="interrupted"' in ln]
        return float(line[0].rsplit(" ", 1)[1]) if line else 0.0

    before = interrupted()
    with httpx.stream("POST", f"{url}/v1/images/generations", timeout=120, json={
            "model": "gpt-image-1", "prompt": "a long walk", "size": "128x128",
            "quality": "high", "stream": True, "partial_images": 3}) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            if line.startswith("event: image_generation.partial_image"):
                break  # leave after the first preview
    for _ in range(600):
        if interrupted() > before:
            break
        time.sleep(0.1)
    assert interrupted() == before + 1

"""The official `openai` package, unmodified, against a live sdgate server on the tiny model."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
import openai
import pytest
from PIL import Image


@pytest.fixture
def oai(live_server):
    """oai(key=None, **settings) -> an OpenAI client whose base_url is a fresh live server."""

    def make(key: str = "unused", **settings):
        url = live_server(**settings)
        return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=120)

    return make


def image_file(img: Image.Image, name: str = "image.png"):
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return (name, buf.getvalue(), "image/png")


def b64_png(item) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(item.b64_json)))
    assert img.format == "PNG"
    return img


def url_png(item) -> Image.Image:
    resp = httpx.get(item.url)
    resp.raise_for_status()
    img = Image.open(io.BytesIO(resp.content))
    assert img.format == "PNG"
    return img


def test_generate_urls(oai):
    client = oai()
    out = client.images.generate(model="dall-e-2", prompt="a lighthouse", n=2, size="64x64",
                                 quality="low")
    assert len(out.data) == 2 and out.created > 0
    for item in out.data:
        assert item.b64_json is None and item.revised_prompt == "a lighthouse"
        assert url_png(item).size == (64, 64)


def test_generate_urls_from_object_storage(oai, s3_bucket):
    endpoint, bucket = s3_bucket
    client = oai(s3_bucket=bucket, s3_endpoint_url=endpoint)
    out = client.images.generate(prompt="a lighthouse", size="64x64", quality="low")
    assert out.data[0].url.startswith(endpoint)  # a presigned GET on the S3 server
    assert url_png(out.data[0]).size == (64, 64)


def test_generate_b64_json(oai):
    client = oai()
    out = client.images.generate(model="tiny-sd", prompt="a lighthouse", size="72x64",
                                 quality="low", response_format="b64_json")
    assert len(out.data) == 1 and out.data[0].url is None
    assert b64_png(out.data[0]).size == (72, 64)


def test_edit_with_a_mask(oai):
    client = oai()
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (16, 16, 48, 48))
    out = client.images.edit(image=image_file(Image.new("RGB", (64, 64), "red")),
                             mask=image_file(mask, "mask.png"), prompt="a red hat",
                             quality="low", response_format="b64_json")
    assert len(out.data) == 1 and out.data[0].revised_prompt == "a red hat"
    assert b64_png(out.data[0]).size == (64, 64)


def test_edit_with_several_images(oai, ip_adapter_models):
    client = oai()
    red, blue = (image_file(Image.new("RGB", (64, 64), c), f"{c}.png") for c in ("red", "blue"))
    dots = Image.new("RGB", (64, 64), "white")
    dots.paste((0, 0, 0), (8, 8, 30, 30))
    dots = image_file(dots, "dots.png")

    def edit(images) -> np.ndarray:
        out = client.images.edit(model="gpt-image-1", image=images, prompt="the red one, in blue",
                                 quality="low", size="64x64", extra_body={"seed": 3})
        img = b64_png(out.data[0])  # gpt-image answers b64_json by default
        assert img.size == (64, 64)
        return np.asarray(img.convert("RGB"), dtype=float)

    alone, with_blue, with_dots = edit([red]), edit([red, blue]), edit([red, dots])
    assert np.isfinite(with_blue).all() and with_blue.std() > 0
    assert np.abs(with_blue - alone).mean() > 0.5  # the references reach the picture
    assert (with_dots != with_blue).any()  # and which reference matters
    assert np.array_equal(edit([red, blue]), with_blue)  # the same seed, the same picture


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the client marks variations retired
def test_variation(oai):
    client = oai()
    out = client.images.create_variation(image=image_file(Image.new("RGB", (64, 64), "blue")))
    assert len(out.data) == 1 and url_png(out.data[0]).size == (64, 64)


def test_bad_key_is_an_authentication_error(oai):
    client = oai(key="wrong", api_keys="secret")
    with pytest.raises(openai.AuthenticationError) as e:
        client.images.generate(prompt="x", size="64x64")
    assert e.value.status_code == 401 and e.value.code == "invalid_api_key"


def test_bad_size_is_a_bad_request(oai):
    client = oai(key="secret", api_keys="secret")  # the right key gets past auth to the size
    for size in ("100x100", "huge"):
        with pytest.raises(openai.BadRequestError) as e:
            client.images.generate(prompt="x", size=size)
        assert e.value.param == "size" and size in e.value.message


def test_unknown_model_is_not_found(oai):
    client = oai()
    with pytest.raises(openai.NotFoundError) as e:
        client.images.generate(model="sd-does-not-exist", prompt="x", size="64x64")
    assert e.value.code == "model_not_found" and "sd-does-not-exist" in e.value.message


def test_non_image_upload_is_a_bad_request(oai):
    client = oai()
    with pytest.raises(openai.BadRequestError) as e:
        client.images.edit(image=("image.png", b"GIF89a not really", "image/png"), prompt="x")
    assert e.value.param == "image"

"""OpenAI Images over HTTP on the tiny model: what reaches the engine, each refusal's envelope."""

from __future__ import annotations

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image


class Recording:
    """The real LocalBackend, remembering each GenerationRequest it was handed."""

    def __init__(self, inner):
        self.inner, self.storage, self.requests = inner, inner.storage, []
        self.registry = inner.registry

    async def generate(self, req, **kw):
        self.requests.append(req)
        return await self.inner.generate(req, **kw)

    def native_size(self, model):
        return self.inner.native_size(model)


@pytest.fixture
def api(engine, make_settings):
    """api(**settings) -> (TestClient, Recording) on the shared tiny engine."""
    from shared.app import create_app
    from shared.backend import LocalBackend
    from shared.storage import make_storage

    clients = []

    def make(**kw):
        settings = make_settings(**kw)
        rec = Recording(LocalBackend(engine, make_storage(settings)))
        clients.append(TestClient(create_app(settings, rec)))
        return clients[-1], rec

    yield make
    for c in clients:
        c.close()


def png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def holed(size=(64, 64), color=(0, 0, 0)) -> Image.Image:
    """An opaque RGBA image with a fully transparent square in the middle."""
    img = Image.new("RGBA", size, (*color, 255))
    img.paste((0, 0, 0, 0), (16, 16, 48, 48))
    return img


def decode(item: dict) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(item["b64_json"])))


def error_of(resp, status: int) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


RED = png(Image.new("RGB", (64, 64), "red"))


def test_edit_mask_reaches_the_engine_white_where_transparent(api):
    client, rec = api()
    resp = client.post("/v1/images/edits", files={"image": ("i.png", RED, "image/png"),
                                                  "mask": ("m.png", png(holed()), "image/png")},
                       data={"prompt": "a hat", "size": "64x64", "quality": "low",
                             "response_format": "b64_json"})
    assert resp.status_code == 200, resp.text
    assert decode(resp.json()["data"][0]).size == (64, 64)
    req = rec.requests[0]
    assert req.mode.value == "inpaint" and req.init_image == RED and req.steps == 10
    mask = Image.open(io.BytesIO(req.mask))
    assert mask.getpixel((32, 32)) == 255 and mask.getpixel((2, 2)) == 0


def test_edit_without_mask_uses_the_images_alpha(api):
    client, rec = api()
    resp = client.post("/v1/images/edits", data={"prompt": "fill", "quality": "low"},
                       files={"image[]": ("i.png", png(holed()), "image/png")})
    assert resp.status_code == 200, resp.text
    assert resp.json()["data"][0]["url"].startswith("http://testserver/files/")
    mask = Image.open(io.BytesIO(rec.requests[0].mask))
    assert mask.getpixel((32, 32)) == 255 and mask.getpixel((2, 2)) == 0


def test_variation_keeps_the_input_size_and_has_no_prompt(api):
    client, rec = api()
    jpeg = png(Image.new("RGB", (72, 64), "blue"), "JPEG")
    resp = client.post("/v1/images/variations", files={"image": ("i.jpg", jpeg, "image/jpeg")})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["size"] == "72x64" and body["data"][0]["revised_prompt"] is None
    req = rec.requests[0]
    assert (req.mode.value, req.prompt, req.width, req.height) == ("img2img", "", 72, 64)
    fetched = client.get(body["data"][0]["url"].removeprefix("http://testserver"))
    assert Image.open(io.BytesIO(fetched.content)).size == (72, 64)


def test_gpt_image_models_answer_in_b64_json_with_the_default_model(api):
    client, rec = api()
    resp = client.post("/v1/images/generations",
                       json={"prompt": "x", "model": "gpt-image-1", "size": "64x64",
                             "quality": "low", "output_format": "jpeg", "user": "u"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert decode(body["data"][0]).format == "JPEG" and body["output_format"] == "jpeg"
    assert rec.requests[0].model is None and rec.requests[0].steps == 10


# -- refusals: each in OpenAI's envelope, none reaching the engine --------------------------------

def test_gpt_image_edit_with_references_goes_through_ip_adapter(api, engine,
                                                                  ip_adapter_models):
    import numpy as np

    client, rec = api()
    blue = png(Image.new("RGB", (64, 64), (20, 40, 230)))
    dots = Image.new("RGB", (64, 64), "white")
    dots.paste((0, 0, 0), (8, 8, 30, 30))
    resp = client.post("/v1/images/edits", data={"prompt": "x", "model": "gpt-image-1",
                                                  "size": "64x64", "quality": "low",
                                                  "input_fidelity": "high"},
                       files=[("image[]", ("a.png", RED, "image/png")),
                              ("image[]", ("b.png", blue, "image/png")),
                              ("image[]", ("c.png", png(dots), "image/png"))])
    assert resp.status_code == 200, resp.text
    assert decode(resp.json()["data"][0]).size == (64, 64)
    req = rec.requests[0]
    assert req.mode.value == "img2img" and req.init_image == RED  # the first image is edited
    assert [r.images for r in req.ip_adapters] == [[blue, png(dots)]]  # the others: references
    assert req.ip_adapters[0].scale == 1.0  # input_fidelity high

    def pixels(r):
        out = engine.generate(r.model_copy(update={"seed": 3})).images[0].data
        return np.asarray(Image.open(io.BytesIO(out)).convert("RGB")).astype(int)

    with_refs, without = pixels(req), pixels(req.model_copy(update={"ip_adapters": []}))
    assert np.abs(with_refs - without).mean() > 0.5  # the references change the picture
    other = req.model_copy(update={"ip_adapters": [req.ip_adapters[0].model_copy(
        update={"images": [RED]})]})
    assert (pixels(other) != with_refs).any()  # and which references matters


def test_more_than_one_image_is_refused_without_gpt_image(api):
    client, rec = api()
    resp = client.post("/v1/images/edits", data={"prompt": "x"},
                       files=[("image[]", ("a.png", RED, "image/png")),
                              ("image[]", ("b.png", RED, "image/png"))])
    err = error_of(resp, 400)
    assert err["param"] == "image" and err["code"] == "unsupported_value"
    assert rec.requests == []


@pytest.mark.parametrize("route", ["/v1/images/edits", "/v1/images/variations"])
def test_a_non_image_is_a_400(api, route):
    client, rec = api()
    resp = client.post(route, data={"prompt": "x"},
                       files={"image": ("i.png", b"%PDF-1.4 not an image", "image/png")})
    err = error_of(resp, 400)
    assert err["param"] == "image" and err["code"] == "invalid_image"
    assert rec.requests == []


def test_an_image_sent_as_text_is_a_400(api):
    client, _ = api()
    err = error_of(client.post("/v1/images/variations", data={"image": "aGVsbG8="}), 400)
    assert err["param"] == "image" and "multipart" in err["message"]


def test_a_missing_image_is_a_400(api):
    client, _ = api()
    err = error_of(client.post("/v1/images/edits", data={"prompt": "x"},
                               files={"mask": ("m.png", RED, "image/png")}), 400)
    assert err["param"] == "image"


def test_an_oversized_body_is_a_413(api):
    client, rec = api(max_body_bytes=2000)
    big = png(Image.effect_noise((64, 64), 100))
    assert len(big) > 2000
    resp = client.post("/v1/images/variations", files={"image": ("i.png", big, "image/png")})
    assert error_of(resp, 413)["code"] == "payload_too_large"
    assert rec.requests == []


def test_malformed_json_and_missing_prompt_are_400s(api):
    client, _ = api()
    resp = client.post("/v1/images/generations", content=b"{nope",
                       headers={"content-type": "application/json"})
    assert error_of(resp, 400)["type"] == "invalid_request_error"
    err = error_of(client.post("/v1/images/generations", json={"n": 1}), 400)
    assert err["param"] == "prompt"


def test_mask_of_another_size_is_a_400(api):
    client, rec = api()
    resp = client.post("/v1/images/edits", data={"prompt": "x"},
                       files={"image": ("i.png", RED, "image/png"),
                              "mask": ("m.png", png(holed((32, 32))), "image/png")})
    assert error_of(resp, 400)["param"] == "mask"
    assert rec.requests == []


def test_variations_take_no_mask(api):
    client, _ = api()
    resp = client.post("/v1/images/variations",
                       files={"image": ("i.png", RED, "image/png"),
                              "mask": ("m.png", RED, "image/png")})
    assert error_of(resp, 400)["param"] == "mask"


def test_unknown_model_is_a_404_before_images_are_read(api):
    client, _ = api()
    resp = client.post("/v1/images/variations", data={"model": "no-such-model"},
                       files={"image": ("i.png", RED, "image/png")})
    err = error_of(resp, 404)
    assert err["code"] == "model_not_found" and "no-such-model" in err["message"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
def test_keys_are_checked_on_every_route(api, headers):
    client, rec = api(api_keys="secret")
    for route in ("/v1/images/generations", "/v1/images/edits", "/v1/images/variations"):
        err = error_of(client.post(route, json={"prompt": "x"}, headers=headers), 401)
        assert err["code"] == "invalid_api_key"
    assert rec.requests == []

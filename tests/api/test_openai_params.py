"""Every request field the installed `openai` package knows, checked against docs/openai.md and a
live sdgate: each has a row (supported, refused or ignored), and behaves so through the SDK."""

from __future__ import annotations

import base64
import io
import re
import typing
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
from openai.types import image_create_variation_params as variation_params
from openai.types import image_edit_params as edit_params
from openai.types import image_generate_params as generate_params
from PIL import Image

from tests.conftest import free_port, running
from tests.test_safety import flag_everything, local_app  # noqa: F401 (fixture)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # create_variation's

DOC = Path(__file__).resolve().parents[2] / "docs" / "openai.md"
# The SDK's parameter types per route, streaming variants included.
PARAMS = {"generations": (generate_params.ImageGenerateParamsNonStreaming,
                          generate_params.ImageGenerateParamsStreaming),
          "edits": (edit_params.ImageEditParamsNonStreaming,
                    edit_params.ImageEditParamsStreaming),
          "variations": (variation_params.ImageCreateVariationParams,)}
STATUSES = ("supported", "refused", "ignored")


def sdk_fields() -> list[tuple[str, str]]:
    """(route, field) for every field of the installed package's Images parameter types."""
    return sorted({(route, name) for route, types in PARAMS.items() for t in types
                   for name in typing.get_type_hints(t)})


def documented() -> dict[tuple[str, str], str]:
    """(route, field) -> status, from the Fields table of docs/openai.md."""
    text = DOC.read_text()
    table = text[text.index("## Fields\n"):text.index("\nThe answer is")]
    out = {}
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        names, routes, status = (c.strip() for c in line.strip().strip("|").split("|")[:3])
        routes = PARAMS if routes == "all" else [r.strip() for r in routes.split(",")]
        for name in re.findall(r"`([a-z_]+)`", names):
            for route in routes:
                assert route in PARAMS, f"{name}: unknown route {route!r} in docs/openai.md"
                out[route, name] = status.split()[0]
    return out


def test_every_sdk_field_has_a_row_in_the_docs():
    doc = documented()
    missing = [f"{route}: {name}" for route, name in sdk_fields() if (route, name) not in doc]
    assert not missing, f"fields of openai {openai.__version__} not in docs/openai.md: {missing}"
    assert set(doc.values()) <= set(STATUSES)
    assert len(sdk_fields()) > 40  # the enumeration sees the package's fields at all


# -- a live server and calls through the SDK --------------------------------------------------

@pytest.fixture(scope="module")
def server(engine, models_dir, tmp_path_factory):
    """One live server (the in-process engine, local files) for the whole module."""
    from shared.config import Settings

    tmp, port = tmp_path_factory.mktemp("oai"), free_port()
    settings = Settings(_env_file=None, models_dir=models_dir, output_dir=tmp / "outputs",
                        public_url=f"http://127.0.0.1:{port}", jobs_db=tmp / "jobs.sqlite3",
                        state_db=tmp / "state.sqlite3", api_keys="secret")
    with running(local_app(settings, engine), port) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="secret", max_retries=0, timeout=120)


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


SOURCE = png(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)))


def holed(size=(64, 64)) -> bytes:
    """An opaque RGBA mask with a fully transparent (= edit) square in the middle."""
    img = Image.new("RGBA", size, (0, 0, 0, 255))
    img.paste((0, 0, 0, 0), (16, 16, 48, 48))
    return png(img)


def call(client, route: str, **kw):
    """The route's SDK method with small, fast defaults; keywords override them."""
    if route == "generations":
        args = dict(model="gpt-image-1", prompt="a lighthouse", size="64x64", quality="low")
        return client.images.generate(**{**args, **kw})
    if route == "edits":
        args = dict(model="gpt-image-1", prompt="a lighthouse", image=("i.png", SOURCE),
                    quality="low")
        return client.images.edit(**{**args, **kw})
    args = dict(image=("i.png", SOURCE), response_format="b64_json")
    return client.images.create_variation(**{**args, **kw})


def raw(item) -> bytes:
    return base64.b64decode(item.b64_json)


def picture(item) -> Image.Image:
    """The decoded image, checked to be a picture: finite and not one flat colour."""
    img = Image.open(io.BytesIO(raw(item)))
    px = np.asarray(img.convert("RGB"), dtype=float)
    assert np.isfinite(px).all() and px.std() > 0
    return img


def infotext(item) -> str:
    """The A1111 infotext of a PNG answer (its `parameters` text chunk)."""
    return picture(item).info["parameters"]


def refused(fn, param: str, code: str | None = None, cls=openai.BadRequestError):
    """fn() answers a 4xx in OpenAI's envelope naming `param`; the SDK raises `cls`."""
    with pytest.raises(cls) as e:
        fn()
    body = e.value.response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["message"]
    assert e.value.param == param, body
    if code:
        assert e.value.code == code, body
    return e.value


# -- what each field does: one check per supported field (client, route, request) ------------

def _prompt(c, route, request):
    out = call(c, route, prompt="a red barn")
    assert infotext(out.data[0]).splitlines()[0] == "a red barn"
    assert out.data[0].revised_prompt == "a red barn"
    assert out.usage.input_tokens_details.text_tokens == 3
    refused(lambda: call(c, route, prompt=""), "prompt")


def _image(c, route, request):
    wide = png(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 72, 3), np.uint8)))
    out = call(c, route, image=("w.png", wide))
    assert picture(out.data[0]).size == (72, 64)  # the input's size is the default size
    assert out.usage.input_tokens_details.image_tokens == 2  # two 64x64 tiles
    refused(lambda: call(c, route, image=("i.png", b"%PDF-1.4 no image")), "image",
            "invalid_image")


def _mask(c, route, request):
    # dall-e-2 edits only where told: an opaque image needs a mask
    refused(lambda: call(c, route, model="dall-e-2", response_format="b64_json"), "mask")
    out = call(c, route, model="dall-e-2", response_format="b64_json", mask=("m.png", holed()))
    assert "Masked content" in infotext(out.data[0])  # an inpaint
    refused(lambda: call(c, route, mask=("m.png", holed((32, 32)))), "mask")


def _model(c, route, request):
    masked = {"mask": ("m.png", holed())} if route == "edits" else {}  # not gpt-image: a mask
    out = call(c, route, model="tiny-sd", response_format="b64_json", **masked)
    assert "Model: tiny-sd" in infotext(out.data[0])
    refused(lambda: call(c, route, model="no-such-model"), "model", "model_not_found",
            openai.NotFoundError)


def _n(c, route, request):
    out = call(c, route, n=2)
    assert len(out.data) == 2 and raw(out.data[0]) != raw(out.data[1])
    assert all(picture(d).size == (64, 64) for d in out.data)
    refused(lambda: call(c, route, n=11), "n")


def _size(c, route, request):
    out = call(c, route, size="64x72")
    assert picture(out.data[0]).size == (64, 72) and out.size == "64x72"
    refused(lambda: call(c, route, size="100x100"), "size")


def _response_format(c, route, request):
    out = call(c, route, response_format="url")
    assert out.data[0].b64_json is None
    got = httpx.get(out.data[0].url)
    assert got.status_code == 200 and Image.open(io.BytesIO(got.content)).size == (64, 64)
    out = call(c, route, response_format="b64_json")
    assert out.data[0].url is None and picture(out.data[0]).format == "PNG"


def _quality(c, route, request):
    steps = {}
    for q in ("low", "high"):
        out = call(c, route, quality=q)
        steps[q] = int(re.search(r"Steps: (\d+)", infotext(out.data[0]))[1])
        assert out.quality == q
    assert steps == {"low": 10, "high": 30}
    assert call(c, route, quality="auto").quality == "medium"


def _output_format(c, route, request):
    jpeg = call(c, route, output_format="jpeg")
    assert raw(jpeg.data[0])[:3] == b"\xff\xd8\xff" and picture(jpeg.data[0]).format == "JPEG"
    webp = call(c, route, output_format="webp")
    data = raw(webp.data[0])
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP" and webp.output_format == "webp"
    for fmt in ("gif", "svg"):
        refused(lambda: call(c, route, output_format=fmt), "output_format", "unsupported_value")


def _output_compression(c, route, request):
    for fmt in ("jpeg", "webp"):
        size = {q: len(raw(call(c, route, output_format=fmt, output_compression=q).data[0]))
                for q in (5, 95)}
        assert size[5] < size[95], fmt
    refused(lambda: call(c, route, output_compression=101), "output_compression")


def _background(c, route, request):
    out = call(c, route, background="opaque")
    assert out.background == "opaque" and picture(out.data[0]).mode == "RGB"
    refused(lambda: call(c, route, background="transparent"), "background", "unsupported_value")


def _moderation(c, route, request):
    request.getfixturevalue("flag_everything")  # the tiny safety checker flags every image
    refused(lambda: call(c, route), "moderation", "moderation_blocked")
    assert np.asarray(picture(call(c, route, moderation="low").data[0])).any()


def _stream(c, route, request):
    kind = "image_generation" if route == "generations" else "image_edit"
    events = list(call(c, route, stream=True))
    assert [e.type for e in events] == [f"{kind}.completed"]
    assert picture(events[0]).size == (64, 64) and events[0].usage.output_tokens == 1
    refused(lambda: call(c, route, stream=True, n=2), "n")


def _partial_images(c, route, request):
    kind = "image_generation" if route == "generations" else "image_edit"
    events = list(call(c, route, stream=True, partial_images=2))
    assert [e.type for e in events] == [f"{kind}.partial_image"] * 2 + [f"{kind}.completed"]
    assert [e.partial_image_index for e in events[:2]] == [0, 1]
    previews = [np.asarray(picture(e).convert("RGB")) for e in events[:2]]
    assert not np.array_equal(*previews) and picture(events[2]).size == (64, 64)
    refused(lambda: call(c, route, partial_images=2), "partial_images")


def _input_fidelity(c, route, request):
    for fidelity, strength in (("high", 0.5), ("low", 0.75)):
        out = call(c, route, input_fidelity=fidelity)
        assert f"Denoising strength: {strength}" in infotext(out.data[0])


SUPPORTED = {"prompt": _prompt, "image": _image, "mask": _mask, "model": _model, "n": _n,
             "size": _size, "response_format": _response_format, "quality": _quality,
             "output_format": _output_format, "output_compression": _output_compression,
             "background": _background, "moderation": _moderation, "stream": _stream,
             "partial_images": _partial_images, "input_fidelity": _input_fidelity}
# a value for each ignored field, and what the answer echoes of it (None: nothing)
IGNORED = {"user": ("user-7", "user-7"), "safety_identifier": ("hash-9", "hash-9"),
           "style": ("vivid", None), "complexity": ("high", None)}
# a value for each refused field
REFUSED = {"markup": ("markup.png", holed()), "frame_count": 9, "frame_duration_ms": 200,
           "svg": {"model": "gpt-5"}}


@pytest.mark.parametrize("route,field", sdk_fields())
def test_field_behaves_as_documented(client, request, route, field):
    status = documented()[route, field]
    if status == "refused":
        assert field in REFUSED, f"{field} is documented refused: give it a sample value"
        refused(lambda: call(client, route, **{field: REFUSED[field]}), field,
                "unsupported_value")
    elif status == "ignored":
        assert field in IGNORED, f"{field} is documented ignored: give it a sample value"
        value, echoed = IGNORED[field]
        seed = {"extra_body": {"seed": 11}}
        out = call(client, route, **{field: value}, **seed)
        assert picture(out.data[0]).size == (64, 64)
        # no effect on the image: the same bytes as without the field, at the same seed
        assert raw(out.data[0]) == raw(call(client, route, **seed).data[0])
        if echoed is not None:
            assert out.safety_identifier == echoed
    else:
        assert field in SUPPORTED, f"{field} is documented supported: check what it does"
        SUPPORTED[field](client, route, request)


# -- the answers: every field of the SDK's response types --------------------------------------

NOT_ANSWERED = {"svg_usage"}  # SVG output only (docs/openai.md)


def unanswered(obj) -> set[str]:
    """Fields of an SDK response object the JSON did not carry, its nested objects' included."""
    out = set(type(obj).model_fields) - obj.model_fields_set - NOT_ANSWERED
    for name in obj.model_fields_set:
        value = getattr(obj, name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, openai.BaseModel):
                out |= {f"{name}.{sub}" for sub in unanswered(item)}
    return out


@pytest.mark.parametrize("route", PARAMS)
def test_answers_fill_every_field_of_the_sdks_types(client, route):
    out = call(client, route, user="u-1")
    # an image comes as b64_json or as url, never both (as upstream)
    assert unanswered(out) == {"data.url"} and out.safety_identifier == "u-1"
    assert out.usage.total_tokens == out.usage.input_tokens + out.usage.output_tokens > 0
    assert out.usage.output_tokens_details.image_tokens == out.usage.output_tokens == 1
    if route == "variations":
        return
    for event in call(client, route, stream=True, partial_images=1, user="u-1"):
        assert unanswered(event) == set(), event.type


# -- sdgate's own fields ----------------------------------------------------------------------

@pytest.mark.parametrize("route", PARAMS)
def test_the_seed_extension_makes_answers_reproducible(client, route):
    first, again = (call(client, route, extra_body={"seed": 7}).data[0] for _ in range(2))
    assert raw(first) == raw(again) and "Seed: 7," in infotext(first)
    other = picture(call(client, route, extra_body={"seed": 8}).data[0])
    assert not np.array_equal(np.asarray(picture(first)), np.asarray(other))
    refused(lambda: call(client, route, extra_body={"seed": -2}), "seed")


# -- errors on every route: OpenAI's envelope, the SDK's exception classes ------------------------

@pytest.mark.parametrize("route", PARAMS)
def test_errors_on_every_route_are_openai_shaped(server, client, route):
    refused(lambda: call(client, route, size="huge"), "size", "invalid_value")
    refused(lambda: call(client, route, n=0), "n")
    refused(lambda: call(client, route, model="sd-missing"), "model", "model_not_found",
            openai.NotFoundError)
    wrong = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    refused(lambda: call(wrong, route), None, "invalid_api_key", openai.AuthenticationError)
    if route != "generations":
        refused(lambda: call(client, route, image=("i.png", b"\x89PNG broken")), "image",
                "invalid_image")
    # bodies the SDK would never send: no prompt at all, malformed JSON, JSON for multipart
    auth = {"Authorization": "Bearer secret"}
    if route == "generations":
        resp = httpx.post(f"{server}/v1/images/{route}", json={"n": 1}, headers=auth)
    else:
        resp = httpx.post(f"{server}/v1/images/{route}", headers=auth, data={"n": "1"},
                          files={"image": ("i.png", SOURCE, "image/png")})
    if route != "variations":
        assert resp.status_code == 400 and resp.json()["error"]["param"] == "prompt", resp.text
    else:  # variations take no prompt
        assert resp.status_code == 200 and httpx.get(resp.json()["data"][0]["url"]).content
    resp = httpx.post(f"{server}/v1/images/{route}", content=b"{nope",
                      headers={"Authorization": "Bearer secret",
                               "Content-Type": "application/json"})
    assert 400 <= resp.status_code < 500, resp.text
    err = resp.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["type"] == "invalid_request_error"


def test_models_routes(server, client):
    page = client.models.list()
    assert [m.id for m in page.data] == ["tiny-sd"] and page.data[0].owned_by == "sdgate"
    model = client.models.retrieve("tiny-sd")
    assert model.id == "tiny-sd" and model.object == "model"
    refused(lambda: client.models.retrieve("nope"), "model", "model_not_found",
            openai.NotFoundError)
    wrong = openai.OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0)
    refused(lambda: wrong.models.list(), None, "invalid_api_key", openai.AuthenticationError)


def test_unknown_paths_and_methods_are_openai_404s(server, client):
    for method, path in (("post", "/images/upscale"), ("get", "/images/generations"),
                         ("delete", "/models/tiny-sd"), ("post", "/models")):
        err = refused(lambda: getattr(client, method)(path, cast_to=httpx.Response), None,
                      "not_found", openai.NotFoundError)
        assert err.body["message"] == f"Invalid URL ({method.upper()} /v1{path})"
    # the other /v1 shapes keep their own routes and bodies
    assert httpx.get(f"{server}/v1/sdapi/v1/samplers",
                     headers={"Authorization": "Bearer secret"}).status_code == 200


def test_several_images_with_a_mask_inpaint_the_first_with_the_others_as_references(
        client, ip_adapter_models):
    blue = png(Image.new("RGB", (64, 64), (20, 40, 230)))

    def edit(images) -> tuple[np.ndarray, str]:
        out = call(client, "edits", image=images, mask=("m.png", holed()),
                   extra_body={"seed": 5})
        return np.asarray(picture(out.data[0]).convert("RGB"), dtype=float), infotext(out.data[0])

    alone, text = edit([("i.png", SOURCE)])
    with_ref, ref_text = edit([("i.png", SOURCE), ("b.png", blue)])
    assert "Masked content" in text and "Masked content" in ref_text  # inpaints, both
    assert np.abs(with_ref - alone).mean() > 0.5  # the reference reached the picture


def test_a_rate_limit_is_the_sdks_rate_limit_error(make_settings, engine, tmp_path):
    from shared.accounts import ratelimit, store

    url = f"sqlite:///{tmp_path}/keys.db"
    secret, rec = store.create(url, "metered")
    store.set_limit(url, rec.id, 1)  # one request per minute
    ratelimit._seen.clear()
    with running(local_app(make_settings(database_url=url), engine)) as base:
        c = openai.OpenAI(base_url=f"{base}/v1", api_key=secret, max_retries=0)
        assert [m.id for m in c.models.list().data] == ["tiny-sd"]
        with pytest.raises(openai.RateLimitError) as e:
            call(c, "generations")
    err = e.value.response.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert (err["type"], err["code"]) == ("requests", "rate_limit_exceeded")
    assert 1 <= int(e.value.response.headers["Retry-After"]) <= 60

"""A1111 /interrogate (tiny BLIP + CLIP), and /options and /cmd-flags with upstream's key sets."""

from __future__ import annotations

import base64

import pytest

from shared.dialects.a1111 import upstream
from shared.engine import tiny_interrogators
from tests.conftest import with_tiny
from tests.engine.test_interrogator import picture

P = "/sdapi/v1"


@pytest.fixture(scope="module")
def int_dir(models_dir, tmp_path_factory):
    return tiny_interrogators.write_interrogators(
        with_tiny(tmp_path_factory.mktemp("intmodels"), models_dir))


@pytest.fixture
def ic(client_on, int_dir):
    return client_on(int_dir)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_interrogate_clip(ic):
    # short BLIP lengths through the options, as a client would set them
    assert ic.post(f"{P}/options", json={"interrogate_clip_min_length": 3,
                                         "interrogate_clip_max_length": 10}).status_code == 200
    r = ic.post(f"{P}/interrogate", json={"image": b64(picture()), "model": "clip"})
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"caption"}
    parts = r.json()["caption"].split(", ")
    assert len(parts) == 5 and parts[0] and parts[4] in (
        "an oil painting", "a photograph", "a pencil sketch")
    again = ic.post(f"/v1{P}/interrogate", json={"image": b64(picture()), "model": "clip"})
    assert again.json() == r.json()  # deterministic (greedy decoding), at both prefixes


def test_interrogate_deepdanbooru_with_the_options(ic):
    r = ic.post(f"{P}/interrogate", json={"image": b64(picture()), "model": "deepdanbooru"})
    assert r.status_code == 200, r.text
    default = r.json()["caption"]
    assert ic.post(f"{P}/options", json={"interrogate_deepbooru_score_threshold": 0.0,
                                         "deepbooru_use_spaces": False,
                                         "deepbooru_filter_tags": "smile"}).status_code == 200
    every = ic.post(f"{P}/interrogate", json={"image": b64(picture()),
                                              "model": "deepdanbooru"}).json()["caption"]
    tags = every.split(", ")
    assert len(tags) == 6 and "red_background" in tags and "smile" not in tags
    assert set(t.replace("_", " ") for t in default.split(", ") if t) <= {
        t.replace("_", " ") for t in tags} | {"smile"}


def test_interrogate_refusals(ic):
    r = ic.post(f"{P}/interrogate", json={"image": b64(picture()), "model": "nope"})
    assert r.status_code == 404 and r.json()["detail"] == "Model not found: nope"
    r = ic.post(f"{P}/interrogate", json={"model": "clip"})
    assert r.status_code == 404 and r.json()["detail"] == "Image not found"


def test_interrogate_without_models(client):
    r = client.post(f"{P}/interrogate", json={"image": b64(picture())})  # no BLIP installed
    assert r.status_code == 404 and "BLIP" in r.json()["detail"]
    r = client.post(f"{P}/interrogate", json={"image": b64(picture()), "model": "deepdanbooru"})
    assert r.status_code == 404 and "selected_tags.csv" in r.json()["detail"]
    assert set(r.json()) == {"error", "detail", "body", "errors"}


def test_options_have_every_upstream_key(client):
    opts = client.get(f"{P}/options").json()
    assert set(upstream.OPTIONS) <= set(opts)
    assert len(upstream.OPTIONS) > 250
    for key in ("send_seed", "sd_model_checkpoint", "samples_format", "CLIP_stop_at_last_layers",
                "sd_vae", "eta_noise_seed_delta", "interrogate_clip_num_beams", "ESRGAN_tile"):
        assert key in opts
    assert opts["sd_model_checkpoint"]  # the model really loaded, not upstream's null
    assert opts["samples_format"] == "png" and opts["CLIP_stop_at_last_layers"] == 1
    # a client POSTing back what it read is accepted (every value is a default or honoured)
    assert client.post(f"{P}/options", json=opts).status_code == 200


def test_image_options_sdgate_lacks_are_refused_unless_default(client):
    r = client.post(f"{P}/options", json={"randn_source": "CPU"})
    assert r.status_code == 400 and "randn_source" in r.json()["detail"]
    assert client.post(f"{P}/options", json={"randn_source": "GPU"}).status_code == 200
    r = client.post(f"{P}/txt2img", json={"prompt": "a", "steps": 1, "width": 64, "height": 64,
                                          "override_settings": {"emphasis": "No norm"}})
    assert r.status_code == 400 and "emphasis" in r.json()["detail"]


def test_cmd_flags_keys(client):
    flags = client.get(f"{P}/cmd-flags").json()
    assert set(upstream.CMD_FLAGS) <= set(flags)
    assert flags["api"] is True and flags["nowebui"] is True
    for key in ("medvram", "xformers", "no_half", "listen", "port", "api_auth", "ckpt_dir"):
        assert key in flags

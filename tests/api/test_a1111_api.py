"""The A1111 API over HTTP, on the real app and the tiny model, at both prefixes."""

from __future__ import annotations

import base64
import io
import json
import threading
import time
import uuid

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.engine.a1111_assets import EMBEDDING_NAME, LORA_NAME, ensure_assets

PREFIXES = ["/sdapi/v1", "/v1/sdapi/v1"]
SMALL = {"width": 64, "height": 64, "steps": 3}
KEY = "sk-test-a1111"


@pytest.fixture(scope="module", autouse=True)
def assets(engine, models_dir):
    ensure_assets(models_dir, engine.warm().pipe)


@pytest.fixture
def keyed(make_app):
    from fastapi.testclient import TestClient

    with TestClient(make_app(api_keys=KEY)) as c:
        yield c


def b64_png(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def decode(b64: str) -> Image.Image:
    img = Image.open(io.BytesIO(base64.b64decode(b64)))
    img.load()
    return img


def error_shape(r, status: int) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error", "detail", "body", "errors"}
    return body


# -- listings ------------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", PREFIXES)
def test_listings(client, prefix):
    models = client.get(f"{prefix}/sd-models").json()
    tiny = next(m for m in models if m["model_name"] == "tiny-sd")
    assert tiny["title"] == f"tiny-sd [{tiny['hash']}]"
    assert set(tiny) == {"title", "model_name", "hash", "sha256", "filename", "config", "family",
                         "distilled"}
    assert tiny["family"] == "sd1" and tiny["distilled"] is None  # detected from its files
    names = [s["name"] for s in client.get(f"{prefix}/samplers").json()]
    assert {"Euler a", "Euler", "DPM++ 2M", "DPM++ 2M SDE", "DDIM"} <= set(names)
    scheds = {s["name"]: s["label"] for s in client.get(f"{prefix}/schedulers").json()}
    assert scheds["karras"] == "Karras"
    ups = [u["name"] for u in client.get(f"{prefix}/upscalers").json()]
    assert ups == ["None", "Lanczos", "Nearest"]
    assert {"name": "Latent"} in client.get(f"{prefix}/latent-upscale-modes").json()
    loras = {x["name"]: x for x in client.get(f"{prefix}/loras").json()}
    assert loras[LORA_NAME]["metadata"] == {"ss_output_name": LORA_NAME}
    emb = client.get(f"{prefix}/embeddings").json()
    assert emb["loaded"][EMBEDDING_NAME]["vectors"] == 2 and emb["skipped"] == {}
    mem = client.get(f"{prefix}/memory").json()
    assert mem["ram"]["total"] > 0 and mem["cuda"]["error"].startswith("unavailable")
    names = ["controlnet", "reactor", "adetailer"]  # the alwayson scripts served (faces on)
    assert client.get(f"{prefix}/scripts").json() == {"txt2img": names, "img2img": names}
    # restorer families with weights in the (shared) models folder: tests/api/test_reactor_api
    assert {r["name"] for r in client.get(f"{prefix}/face-restorers").json()} <= {"GFPGAN",
                                                                                 "CodeFormer"}
    for route in ("refresh-checkpoints", "refresh-loras", "refresh-embeddings"):
        assert client.post(f"{prefix}/{route}").status_code == 200


def test_options_get_and_set(client):
    opts = client.get("/sdapi/v1/options").json()
    assert opts["sd_model_checkpoint"].startswith("tiny-sd [")
    assert opts["CLIP_stop_at_last_layers"] == 1
    assert client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "tiny-sd",
                                                  "CLIP_stop_at_last_layers": 2}).status_code == 200
    assert client.get("/v1/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 2
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", **SMALL})
    assert json.loads(r.json()["info"])["clip_skip"] == 2
    assert "Clip skip: 2" in decode(r.json()["images"][0]).info["parameters"]
    bad = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "no-such-model"})
    assert "Model not found" in error_shape(bad, 404)["detail"]
    assert error_shape(client.post("/sdapi/v1/options",
                                   json={"CLIP_stop_at_last_layers": 40}), 422)


def test_options_switch_the_checkpoint(tmp_path, models_dir, make_settings):
    """POST /options sd_model_checkpoint changes which model later requests use."""
    from fastapi.testclient import TestClient

    from shared.app import create_app

    two = tmp_path / "two-models"
    two.mkdir()
    for name in ("alpha", "beta"):
        (two / name).symlink_to(models_dir / "tiny-sd", target_is_directory=True)
    with TestClient(create_app(make_settings(models_dir=two))) as c:
        def model_used():
            r = c.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL})
            return json.loads(r.json()["info"])["sd_model_name"]

        assert model_used() == "alpha"
        beta = next(m["title"] for m in c.get("/sdapi/v1/sd-models").json()
                    if m["model_name"] == "beta")
        assert c.post("/sdapi/v1/options", json={"sd_model_checkpoint": beta}).status_code == 200
        assert c.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == beta
        assert model_used() == "beta"
        r = c.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL, "override_settings": {
            "sd_model_checkpoint": "alpha"}})
        assert json.loads(r.json()["info"])["sd_model_name"] == "alpha"


# -- txt2img -------------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", PREFIXES)
def test_txt2img_shape_seeds_and_infotext(client, prefix):
    r = client.post(f"{prefix}/txt2img", json={
        "prompt": "a (red:1.3) cat", "negative_prompt": "dog", "seed": 1234, "batch_size": 2,
        "n_iter": 2, "sampler_name": "Euler a", **SMALL})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"images", "parameters", "info"}
    assert len(body["images"]) == 4
    info = json.loads(body["info"])
    assert info["all_seeds"] == [1234, 1235, 1236, 1237]
    assert info["seed"] == 1234 and len(set(info["all_subseeds"])) == 4
    assert body["parameters"]["seed"] == 1234 and body["parameters"]["n_iter"] == 2
    img = decode(body["images"][2])
    assert img.format == "PNG" and img.size == (64, 64)
    text = img.info["parameters"]
    assert text == info["infotexts"][2]
    assert text.startswith("a (red:1.3) cat\nNegative prompt: dog\nSteps: 3, Sampler: Euler a")
    assert "Seed: 1236" in text and "Model: tiny-sd" in text


def test_txt2img_hires_tiling_and_formats(client):
    r = client.post("/sdapi/v1/txt2img", json={
        "prompt": "tiles", "tiling": True, "enable_hr": True, "hr_scale": 1.5,
        "hr_second_pass_steps": 2, "denoising_strength": 0.5, **SMALL})
    img = decode(r.json()["images"][0])
    assert img.size == (96, 96)
    assert "Tiling: True" in img.info["parameters"] and "Hires resize: 96x96" in \
        img.info["parameters"]
    jpg = client.post("/sdapi/v1/txt2img", json={
        "prompt": "x", **SMALL, "override_settings": {"samples_format": "jpg"}})
    assert decode(jpg.json()["images"][0]).format == "JPEG"


def test_lora_tag_and_embedding_through_the_api(client):
    plain = client.post("/sdapi/v1/txt2img", json={"prompt": "a cat", "seed": 5, **SMALL})
    styled = client.post("/sdapi/v1/txt2img", json={
        "prompt": f"a cat <lora:{LORA_NAME}:0.8>", "seed": 5,
        "negative_prompt": EMBEDDING_NAME, **SMALL})
    a, b = (np.asarray(decode(r.json()["images"][0])) for r in (plain, styled))
    assert not np.array_equal(a, b)
    assert f"<lora:{LORA_NAME}:0.8>" in decode(styled.json()["images"][0]).info["parameters"]
    missing = client.post("/sdapi/v1/txt2img", json={"prompt": "<lora:absent:1>", **SMALL})
    assert "LoRA not found" in error_shape(missing, 404)["detail"]


def test_infotext_request_field(client):
    text = "a cat\nSteps: 2, Sampler: Euler, CFG scale: 5.0, Seed: 42, Size: 64x64"
    r = client.post("/sdapi/v1/txt2img", json={"infotext": text})
    info = json.loads(r.json()["info"])
    assert (info["prompt"], info["seed"], info["steps"], info["width"]) == ("a cat", 42, 2, 64)


# -- img2img and inpainting ---------------------------------------------------------------------
GREEN = Image.new("RGB", (64, 64), (20, 180, 60))


def test_img2img_and_include_init_images(client):
    init = b64_png(GREEN)
    r = client.post("/sdapi/v1/img2img", json={
        "init_images": [init], "prompt": "a cat", "denoising_strength": 0.5,
        "include_init_images": True, **SMALL})
    assert r.status_code == 200, r.text
    body = r.json()
    assert decode(body["images"][0]).size == (64, 64)
    assert body["parameters"]["init_images"] == [init]
    assert "Denoising strength: 0.5" in decode(body["images"][0]).info["parameters"]
    data_uri = client.post("/v1/sdapi/v1/img2img", json={
        "init_images": ["data:image/png;base64," + init], "prompt": "x", **SMALL})
    assert data_uri.status_code == 200
    assert data_uri.json()["parameters"]["init_images"] is None


def test_inpaint_through_the_api(client):
    mask = Image.new("L", (64, 64))
    mask.paste(255, (0, 0, 32, 64))  # repaint the left half
    r = client.post("/sdapi/v1/img2img", json={
        "init_images": [b64_png(GREEN)], "mask": b64_png(mask), "prompt": "a cat",
        "denoising_strength": 0.9, "mask_blur": 0, "inpainting_fill": 1,
        "inpaint_full_res": False, "steps": 4, "width": 64, "height": 64})
    assert r.status_code == 200, r.text
    out = np.asarray(decode(r.json()["images"][0]).convert("RGB"), dtype=np.int16)
    green = np.asarray(GREEN, dtype=np.int16)
    assert np.array_equal(out[:, 32:], green[:, 32:])
    assert not np.array_equal(out[:, :32], green[:, :32])


# -- png-info ------------------------------------------------------------------------------------
def test_png_info_round_trip(client):
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "a (cat:1.2)", "negative_prompt": "dog",
                                               "seed": 77, **SMALL})
    image = r.json()["images"][0]
    back = client.post("/sdapi/v1/png-info", json={"image": image}).json()
    assert back["info"] == json.loads(r.json()["info"])["infotexts"][0]
    p = back["parameters"]
    assert (p["Prompt"], p["Negative prompt"], p["Seed"], p["Steps"]) == \
        ("a (cat:1.2)", "dog", "77", "3")
    assert (p["Size-1"], p["Size-2"]) == ("64", "64")
    plain = client.post("/sdapi/v1/png-info", json={"image": b64_png(GREEN)}).json()
    assert plain["info"] == "" and plain["parameters"] == {}


# -- bad inputs ----------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", PREFIXES)
def test_bad_inputs_get_upstream_shaped_errors(client, prefix):
    body = error_shape(client.post(f"{prefix}/txt2img", json={
        "prompt": "x", "sampler_name": "Nope", **SMALL}), 404)
    assert body["detail"].startswith("Sampler not found") and body["error"] == "HTTPException"
    body = error_shape(client.post(f"{prefix}/txt2img", json={
        "prompt": "x", "override_settings": {"sd_model_checkpoint": "nope"}, **SMALL}), 404)
    assert body["detail"].startswith("Model not found: 'nope'")
    body = error_shape(client.post(f"{prefix}/txt2img", json={
        "prompt": "x", "model": "majicmixRealistic_v7", **SMALL}), 404)
    assert "majicmixRealistic_v7" in body["detail"]
    body = error_shape(client.post(f"{prefix}/txt2img", json={
        "prompt": "x", "width": 30, "steps": 500}), 422)
    assert body["error"] == "RequestValidationError"
    assert {tuple(d["loc"]) for d in body["detail"]} == {("body", "width"), ("body", "steps")}
    body = error_shape(client.post(f"{prefix}/img2img", json={
        "prompt": "x", "init_images": ["not base64!!"], **SMALL}), 400)
    assert "init_images" in body["detail"]
    body = error_shape(client.post(f"{prefix}/img2img", json={
        "prompt": "x", "init_images": [base64.b64encode(b"no image").decode()], **SMALL}), 400)
    assert "not a PNG" in body["detail"]
    body = error_shape(client.post(f"{prefix}/txt2img", json={
        "prompt": "x", "restore_faces": True, **SMALL}), 404)  # default CodeFormer: no weights
    assert "face restorer" in body["detail"]
    error_shape(client.post(f"{prefix}/txt2img", content=b"{not json",
                            headers={"content-type": "application/json"}), 400)
    body = error_shape(client.post(f"{prefix}/txt2img", json={
        "prompt": "x", "enable_hr": True, "hr_upscaler": "R-ESRGAN 4x+", **SMALL}), 400)
    assert "R-ESRGAN 4x+" in body["detail"]


def test_unknown_fields_are_accepted(client):
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "controlnet_units": [], **SMALL})
    assert r.status_code == 200


# -- auth ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("prefix", PREFIXES)
def test_keys_are_required_at_both_prefixes(keyed, prefix):
    error_shape(keyed.get(f"{prefix}/sd-models"), 401)
    error_shape(keyed.post(f"{prefix}/txt2img", json={"prompt": "x", **SMALL}), 401)
    error_shape(keyed.get(f"{prefix}/sd-models", headers={"Authorization": "Bearer wrong"}), 401)
    bearer = {"Authorization": f"Bearer {KEY}"}
    assert keyed.get(f"{prefix}/sd-models", headers=bearer).status_code == 200
    basic = "Basic " + base64.b64encode(f"user:{KEY}".encode()).decode()
    assert keyed.get(f"{prefix}/samplers", headers={"Authorization": basic}).status_code == 200
    assert keyed.get(f"{prefix}/options", headers={"API-KEY": KEY}).status_code == 200


# -- storage URLs instead of base64 --------------------------------------------------------------
def test_url_opt_in(client):
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "response_format": "url",
                                               **SMALL})
    url = r.json()["images"][0]
    assert url.startswith("http://testserver/files/")
    got = client.get(url[len("http://testserver"):])
    assert got.status_code == 200 and got.content.startswith(b"\x89PNG")
    assert "response_format" not in r.json()["parameters"]
    h = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL},
                    headers={"X-Response-Format": "url"})
    assert h.json()["images"][0].startswith("http://testserver/files/")


# -- progress, interrupt, skip -------------------------------------------------------------------
def test_progress_of_a_finished_task(client):
    task = uuid.uuid4().hex
    r = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "force_task_id": task,
                                               "n_iter": 2, **SMALL})
    stamp = json.loads(r.json()["info"])["job_timestamp"]
    last = client.get("/sdapi/v1/progress").json()  # idle: upstream keeps the last job's stamp
    assert last["progress"] == 0 and last["state"]["job_timestamp"] == stamp
    p = client.get("/sdapi/v1/progress", params={"id_task": task}).json()
    assert p["progress"] == 1.0 and p["eta_relative"] == 0
    assert (p["state"]["job_no"], p["state"]["job_count"]) == (2, 2)
    idle = client.get("/sdapi/v1/progress", params={"id_task": "unknown"}).json()
    assert idle["progress"] == 0 and idle["state"]["job_count"] == 0


def _start(base: str, body: dict) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def run():
        out["r"] = httpx.post(f"{base}/sdapi/v1/txt2img", json=body, timeout=600)

    t = threading.Thread(target=run)
    t.start()
    return t, out


def _wait_for_sampling(base: str, task: str, worker: threading.Thread) -> dict:
    """Poll the task's progress until its sampler has taken a step."""
    while worker.is_alive():
        p = httpx.get(f"{base}/sdapi/v1/progress", params={"id_task": task}).json()
        if p["state"]["sampling_step"] >= 1:
            return p
        time.sleep(0.02)
    raise AssertionError("the request finished before sampling was observed")


def test_progress_interrupt_per_task(live_server):
    base = live_server()
    task = uuid.uuid4().hex
    worker, out = _start(base, {"prompt": "x", "force_task_id": task, "n_iter": 3,
                                "width": 64, "height": 64, "steps": 60})
    p = _wait_for_sampling(base, task, worker)
    assert 0 < p["progress"] < 1 and p["state"]["sampling_steps"] == 60
    assert p["state"]["job_count"] == 3
    glob = httpx.get(f"{base}/sdapi/v1/progress").json()  # upstream's global form still works
    assert glob["state"]["job_count"] == 3
    assert httpx.post(f"{base}/sdapi/v1/interrupt", params={"id_task": task}).json() == {}
    worker.join()
    assert out["r"].status_code == 200
    assert len(out["r"].json()["images"]) == 1  # the other iterations never ran
    done = httpx.get(f"{base}/sdapi/v1/progress", params={"id_task": task}).json()
    assert done["state"]["interrupted"] and done["progress"] == 1.0


def test_skip_ends_the_current_iteration_only(live_server):
    base = live_server()
    task = uuid.uuid4().hex
    worker, out = _start(base, {"prompt": "x", "force_task_id": task, "n_iter": 2,
                                "width": 64, "height": 64, "steps": 60})
    _wait_for_sampling(base, task, worker)
    httpx.post(f"{base}/sdapi/v1/skip", params={"id_task": task})
    worker.join()
    assert len(out["r"].json()["images"]) == 2
    state = httpx.get(f"{base}/sdapi/v1/progress", params={"id_task": task}).json()["state"]
    assert state["job_no"] == 2 and not state["interrupted"]

"""The web container runs with only its image's packages (functions/app.py CPU_PACKAGES and what
they require, plus modal): the deployed entry point boots and serves every API shape's listing
and refusal routes without torch, diffusers or anything else the image lacks."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, logging, sys
from functions import app as a
from tests.functions import image_packages
image_packages.install(a.CPU_PACKAGES)
missing = []
class Catch(logging.Handler):
    def emit(self, record):
        text = record.getMessage() + (logging.Formatter().formatException(record.exc_info)
                                      if record.exc_info else "")
        if "No module named" in text:
            missing.append(text[-300:])
logging.getLogger().addHandler(Catch())
from fastapi.testclient import TestClient
from functions.web import web
K = {"Authorization": "Bearer k1"}
gets = ["/health", "/metrics", "/", "/sdapi/v1/sd-models", "/sdapi/v1/samplers",
        "/sdapi/v1/schedulers", "/sdapi/v1/options", "/sdapi/v1/loras", "/sdapi/v1/upscalers",
        "/sdapi/v1/progress", "/v1/models", "/sdapi/v1/cmd-flags", "/sdapi/v1/scripts"]
posts = {"/v1/draw": {"prompt": ""}, "/txt2img": {"prompt": ""},
         "/v1/images/generations": {"prompt": "x", "size": "3x3"},
         "/sdapi/v1/txt2img": {"prompt": "x", "width": 3},
         "/api/v3/text2img": {"key": "k1", "prompt": "x", "width": "3"},
         "/api/v4/dreambooth/model_list": {"key": "k1"},
         "/api/v6/images/text2img": {"key": "k1", "prompt": "x", "model_id": "nope"}}
out = {}
with TestClient(web.local(), raise_server_exceptions=False) as c:
    for p in gets:
        out[p] = c.get(p, headers=K).status_code
    for p, body in posts.items():
        out[p] = c.post(p, json=body, headers=K).status_code
print(json.dumps({"status": out, "missing": missing}))
"""


def test_the_web_container_serves_with_only_its_images_packages(tmp_path, models_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "SDGATE_"))}
    env.update(HOME=str(tmp_path), MODAL_CONFIG_PATH=str(tmp_path / "none.toml"),
               SDGATE_API_KEYS="k1", SDGATE_MODELS_DIR=str(models_dir),
               SDGATE_S3_BUCKET="sdgate-probe", SDGATE_S3_ENDPOINT_URL="http://127.0.0.1:9",
               PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["missing"] == [], report["missing"]
    status = report["status"]
    assert all(code < 500 for code in status.values()), status
    assert status["/health"] == status["/sdapi/v1/sd-models"] == status["/v1/models"] == 200
    assert all(400 <= status[p] < 500 for p in ("/v1/draw", "/v1/images/generations",
                                               "/sdapi/v1/txt2img", "/api/v3/text2img")), status


WEIGHTS_PROBE = """
import functools, http.server, json, struct, sys, threading
from pathlib import Path
from functions import app as a
from tests.functions import image_packages
image_packages.install(a.CPU_PACKAGES)
import functions.weights  # noqa: F401 - the filler's Modal function
from infra import weights
served, root = Path(sys.argv[1]), Path(sys.argv[2])
header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
(served / "style.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
handler.log_message = lambda *a: None
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
url = f"http://127.0.0.1:{server.server_address[1]}/style.safetensors"
lines = weights.fill(root, [weights.Item("lora", url, "style")], log=lambda line: None)
print(json.dumps({"lines": lines, "placed": sorted(p.name for p in (root / "Lora").iterdir())}))
"""


def test_the_weights_filler_runs_with_only_its_images_packages(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "SDGATE_"))}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1")
    run = subprocess.run([sys.executable, "-c", WEIGHTS_PROBE, str(served), str(tmp_path / "m")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert report["placed"] == ["style.safetensors"] and report["lines"][0].startswith("done")


GPU_PROBE = """
import json, sys
from functions import app as a
from tests.functions import image_packages
# the local CPU machine has onnxruntime where the GPU image has onnxruntime-gpu (same module)
image_packages.install([s.replace("onnxruntime-gpu", "onnxruntime")
                        for s in a.CPU_PACKAGES + a.GPU_PACKAGES])
from shared.engine import Engine
from shared.engine.registry import ModelRegistry
from shared.generation import GenerationRequest
engine = Engine(ModelRegistry(sys.argv[1]), device="cpu", max_loaded=1)
sizes = []
for sampler in ("Euler a", "LMS", "DPM++ SDE", "DPM++ 2M"):
    res = engine.generate(GenerationRequest(prompt="a cat", width=64, height=64, steps=2,
                                            seed=1, sampler=sampler))
    sizes.append(len(res.images[0].data))
print(json.dumps({"sizes": sizes}))
"""


def test_the_gpu_container_generates_with_only_its_images_packages(tmp_path, models_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "SDGATE_"))}
    env.update(HOME=str(tmp_path), PYTHONPATH=str(ROOT))
    run = subprocess.run([sys.executable, "-c", GPU_PROBE, str(models_dir)], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    sizes = json.loads(run.stdout.strip().splitlines()[-1])["sizes"]
    assert len(sizes) == 4 and all(n > 1000 for n in sizes)

"""The README's first command on a fresh machine: `sdgate serve` with nothing configured builds
the embedded tiny model into the empty models folder and serves it, no keys, no weights."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from tests.conftest import free_port
from tests.http_helpers import wait_healthy

ROOT = Path(__file__).resolve().parents[2]


def test_serve_on_an_empty_models_folder_builds_the_tiny_model_and_draws(tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDGATE_")}
    env.update({"SDGATE_MODELS_DIR": str(tmp_path / "models"),
                "SDGATE_OUTPUT_DIR": str(tmp_path / "out"),
                "SDGATE_JOBS_DB": str(tmp_path / "jobs.sqlite3"),
                "SDGATE_STATE_DB": str(tmp_path / "state.sqlite3")})
    proc = subprocess.Popen([sys.executable, "-m", "shared.cli", "serve", "--port", str(port)],
                            cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(proc, base)
        assert (tmp_path / "models" / "tiny-sd" / "model_index.json").is_file()
        models = httpx.get(base + "/sdapi/v1/sd-models", timeout=30).json()
        assert [m["model_name"] for m in models] == ["tiny-sd"]
        r = httpx.post(base + "/sdapi/v1/txt2img", timeout=300, json={
            "prompt": "a lighthouse", "width": 64, "height": 64, "steps": 3, "seed": 5})
        assert r.status_code == 200, r.text
        img = Image.open(io.BytesIO(base64.b64decode(r.json()["images"][0])))
        a = np.asarray(img.convert("RGB"), dtype=float)
        assert img.size == (64, 64) and np.isfinite(a).all() and a.std() > 1.0
    finally:
        proc.terminate()
        proc.wait(timeout=30)

"""Every module of functions/ imports with no Modal credentials and no GPU, as on `modal deploy`."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import importlib, json, pkgutil, sys
import functions
names = sorted(m.name for m in pkgutil.iter_modules(functions.__path__, "functions."))
for name in names:
    importlib.import_module(name)
web_only = {m for m in ("torch", "diffusers", "transformers") if m in sys.modules}
print(json.dumps({"modules": names, "heavy": sorted(web_only)}))
"""


def test_every_functions_module_imports_without_credentials(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MODAL_", "SDGATE_")) and k != "CUDA_VISIBLE_DEVICES"}
    # No token anywhere: no env vars, an empty home, a config file that does not exist.
    env.update(HOME=str(tmp_path), MODAL_CONFIG_PATH=str(tmp_path / "none.toml"),
               CUDA_VISIBLE_DEVICES="")
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["modules"] == ["functions.app", "functions.generator",
                                 "functions.local_worker", "functions.web", "functions.weights"]
    # The web and weights images carry no torch: defining the app must not need it.
    assert report["heavy"] == []

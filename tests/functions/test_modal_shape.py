"""The deployment's shape, read from the Modal objects (what `modal deploy` would send)."""

import json
import os
import subprocess
import sys
from pathlib import Path

from modal._partial_function import _find_partial_methods_for_user_cls, _PartialFunctionFlags
from modal._utils.async_utils import synchronizer
from modal_proto import api_pb2

from functions import app as app_module
from functions.generator import Generator
from functions.web import web
from functions.weights import fill

ROOT = Path(__file__).resolve().parents[2]


def definition(obj) -> dict:
    """A Function's or Cls's definition. modal 1.6 keeps what FunctionInfo lacks (autoscaler,
    snapshot flags) in the closure of the loader that creates the function on deploy."""
    impl = synchronizer._translate_in(obj)
    if hasattr(impl, "_get_class_service_function"):
        impl = impl._get_class_service_function()
    load = impl._load
    cells = dict(zip(load.__code__.co_freevars, (c.cell_contents for c in load.__closure__)))
    return {**cells, "info": impl._function_info}


def test_gpu_class_has_a_gpu_the_weights_and_a_memory_snapshot():
    d = definition(Generator)
    info = d["info"]
    assert info.gpus == [("L40S", 1)]
    mount = info.volumes["/models"]
    assert mount.name == "sdgate-weights" and not mount.read_only
    assert d["enable_memory_snapshot"] is True
    assert d["experimental_options"] == {}  # GPU snapshot (alpha) is opt-in
    assert info.secrets == ["modal.Secret.from_name('sdgate-s3')"]  # no API keys on the GPU side
    assert sorted(info.method_names) == ["generate", "loaded", "memory", "op", "run_job"]
    assert info.concurrency_info.max_inputs == 4  # = SDGATE_MAX_BATCH: four inputs can share a call
    assert info.timeout == 600


def test_gpu_class_scales_to_zero_by_default():
    d = definition(Generator)
    assert d["min_containers"] == 0 and d["buffer_containers"] == 0
    assert d["scaledown_window"] == 60 and d["max_containers"] == 4
    auto = d["autoscaler_settings"]
    assert (auto.min_containers, auto.buffer_containers, auto.scaledown_window) == (0, 0, 60)


def test_gpu_class_loads_before_the_snapshot_and_moves_after():
    user_cls = synchronizer._translate_in(Generator)._user_cls
    pre = _find_partial_methods_for_user_cls(user_cls, _PartialFunctionFlags.ENTER_PRE_SNAPSHOT)
    post = _find_partial_methods_for_user_cls(user_cls, _PartialFunctionFlags.ENTER_POST_SNAPSHOT)
    assert list(pre) == ["load"] and list(post) == ["start"]


def test_web_function_is_a_concurrent_asgi_app_without_gpu():
    d = definition(web)
    info = d["info"]
    assert d["webhook_config"].type == api_pb2.WEBHOOK_TYPE_ASGI_APP
    assert info.gpus == []
    assert info.concurrency_info.max_inputs == 100
    assert info.volumes["/models"].read_only  # reads model configs, never writes weights
    assert info.secrets == ["modal.Secret.from_name('sdgate-s3')",
                            "modal.Secret.from_name('sdgate-api')"]
    assert d["min_containers"] == 0


def test_weights_filler_writes_the_volume():
    info = definition(fill)["info"]
    assert info.gpus == [] and not info.volumes["/models"].read_only


def test_images_pin_every_package():
    for spec in app_module.CPU_PACKAGES + app_module.GPU_PACKAGES:
        name, sep, version = spec.partition("==")
        assert sep and version[0].isdigit(), spec
    assert "diffusers==0.42.1" in app_module.GPU_PACKAGES


SHAPE = """
import json
from tests.functions.test_modal_shape import definition
from functions.generator import Generator
from functions.web import web
g, w = definition(Generator), definition(web)
print(json.dumps({"gpu": g["info"].gpus, "min": g["min_containers"],
                  "buffer": g["buffer_containers"],
                  "snap": g["experimental_options"], "web_min": w["min_containers"]}))
"""


def test_deploy_time_environment_sets_the_knobs():
    env = {**os.environ, "SDGATE_GPU": "H100", "SDGATE_GPU_MIN_CONTAINERS": "1",
           "SDGATE_GPU_BUFFER_CONTAINERS": "1", "SDGATE_GPU_SNAPSHOT": "1",
           "SDGATE_WEB_MIN_CONTAINERS": "1"}
    out = subprocess.run([sys.executable, "-c", SHAPE], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    shape = json.loads(out.stdout.strip().splitlines()[-1])
    assert shape["gpu"] == [["H100", 1]]
    assert (shape["min"], shape["buffer"], shape["web_min"]) == (1, 1, 1)
    assert shape["snap"] == {"enable_gpu_snapshot": "True"}


def image_commands(image) -> list[str]:
    """The Dockerfile commands of an image and its bases (ENV lines included), as deployed."""
    wrapped = not type(image).__name__.startswith("_")
    impl = synchronizer._translate_in(image) if wrapped else image
    load = impl._load
    cells = dict(zip(load.__code__.co_freevars, (c.cell_contents for c in load.__closure__ or ())))
    bases = list((cells.get("base_images") or {}).values())
    if cells.get("base_image") is not None:
        bases.append(cells["base_image"])
    out = [c for base in bases for c in image_commands(base)]
    if cells.get("dockerfile_function") is not None:
        out += cells["dockerfile_function"]("2025.06").commands
    return out


FRESH = """
import json
from tests.functions.test_modal_shape import definition, image_commands
from functions import app as app_module
from functions.generator import Generator
from functions.web import web
from functions.weights import fill
out = {}
for name, fn, image in [("gpu", Generator, app_module.gpu_image),
                        ("web", web, app_module.web_image),
                        ("weights", fill, app_module.weights_image)]:
    info = definition(fn)["info"]
    out[name] = {"env": [c for c in image_commands(image) if c.startswith("ENV ")],
                 "secrets": info.secrets, "timeout": info.timeout,
                 "volumes": {p: [m.name, m.read_only] for p, m in info.volumes.items()}}
print(json.dumps(out))
"""


def test_fresh_import_every_function_image_secrets_volumes_timeouts_and_no_secret_in_env():
    """Import the app in a new interpreter with secret settings exported (as a careless deploy
    shell would have them): no image's environment holds any of their values."""
    secrets = {"SDGATE_API_KEYS": "sk-live-should-not-leak",
               "SDGATE_WEBHOOK_SECRET": "whsec_bm90LWluLXRoZS1pbWFnZQ==",
               "SDGATE_DATABASE_URL": "postgresql://u:hunter2@db/sdgate"}
    env = {k: v for k, v in os.environ.items() if not k.startswith("SDGATE_")}
    env.update({**secrets, "SDGATE_DEFAULT_MODEL": "sd15"})
    out = subprocess.run([sys.executable, "-c", FRESH], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    shape = json.loads(out.stdout.strip().splitlines()[-1])
    for name, fn in shape.items():
        joined = "\n".join(fn["env"])
        for value in secrets.values():
            assert value not in joined, (name, value)
        assert "SDGATE_API_KEYS" not in joined and "SDGATE_WEBHOOK_SECRET" not in joined
    assert "ENV SDGATE_DEFAULT_MODEL=sd15" in shape["gpu"]["env"]  # plain settings do travel
    assert "ENV SDGATE_DEVICE=cuda" in shape["gpu"]["env"]
    assert shape["gpu"]["secrets"] == ["modal.Secret.from_name('sdgate-s3')"]
    assert shape["web"]["secrets"] == ["modal.Secret.from_name('sdgate-s3')",
                                       "modal.Secret.from_name('sdgate-api')"]
    assert shape["weights"]["secrets"] == []
    assert shape["gpu"]["volumes"] == {"/models": ["sdgate-weights", False]}
    assert shape["web"]["volumes"] == {"/models": ["sdgate-weights", True]}
    assert shape["weights"]["volumes"] == {"/models": ["sdgate-weights", False]}
    assert (shape["gpu"]["timeout"], shape["web"]["timeout"], shape["weights"]["timeout"]) == (
        600, 900, 4 * 3600)


def _uploaded(image) -> set[str]:
    """The remote paths of the local source mounts an image adds (what deploy uploads)."""
    from modal.mount import _Mount

    seen, mounts, todo = set(), [], [synchronizer._translate_in(image)]
    while todo:  # the image's lazy loaders name the mounts as dependencies
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, _Mount):
            mounts.append(obj)
        todo.extend(obj._deps() if obj._deps else ())
    return {str(remote) for mount in mounts for entry in mount.entries
            for _, remote in entry.get_files_to_upload()}


def test_images_carry_every_tracked_file_of_the_packages_and_no_caches():
    """Modal's default takes `.py` files only; the archs configs (TAESD previews, bench) and the
    migrations' template must reach the containers too."""
    tracked = subprocess.run(["git", "ls-files", "shared", "functions"], cwd=ROOT, check=True,
                             capture_output=True, text=True).stdout.split()
    assert any(t.endswith(".json") for t in tracked)
    for image in (app_module.web_image, app_module.gpu_image, app_module.weights_image):
        files = _uploaded(image)
        missing = {t for t in tracked if f"/root/{t}" not in files}
        assert not missing, missing
        assert not [f for f in files if "__pycache__" in f or f.endswith(".pyc")]
    assert "/root/infra/weights.py" in _uploaded(app_module.weights_image)

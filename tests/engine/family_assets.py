"""What the model-family tests share: the init image and masks, pixel checks, scheduler
variants of the tiny SD1, and a TestClient over a family folder on either backend."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

INIT = Image.new("RGB", (64, 64), (200, 40, 40))
MASK = Image.new("L", (64, 64), 0)  # white: repaint
MASK.paste(255, (16, 16, 48, 48))


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def pixels(data: bytes) -> np.ndarray:
    """The RGB pixels of an encoded image, which must be finite and not constant."""
    a = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
    assert np.isfinite(a).all() and a.std() > 1.0, "blank or constant image"
    return a


def alpha_mask() -> Image.Image:
    """MASK as OpenAI sends it: transparent where to edit."""
    m = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    m.paste((0, 0, 0, 0), (16, 16, 48, 48))
    return m


def scheduler_variant(src: Path, out: Path, change: dict) -> Path:
    """A copy of the tiny SD1 folder with its scheduler config changed (and, for another
    `_class_name`, model_index.json naming that class: the loader builds what it names)."""
    out = shutil.copytree(src, out)
    cfg = out / "scheduler" / "scheduler_config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), **change}))
    if "_class_name" in change:
        index = json.loads((out / "model_index.json").read_text())
        index["scheduler"] = ["diffusers", change["_class_name"]]
        (out / "model_index.json").write_text(json.dumps(index))
    return out


@contextlib.contextmanager
def family_client(backend: str, models_dir: Path, engine, default_model: str, make_settings,
                  monkeypatch):
    """A TestClient over `models_dir`: the local backend sharing `engine`, or ("remote") the
    Modal-wiring backend, as the make_app fixture builds its apps."""
    from fastapi.testclient import TestClient

    from shared.app import create_app
    from shared.backend import LocalBackend
    from shared.storage import make_storage
    from tests.conftest import gpu_class_backend

    settings = make_settings(models_dir=models_dir, default_model=default_model)
    if backend == "remote":
        app = create_app(settings, gpu_class_backend(settings, monkeypatch))
    else:
        app = create_app(settings, LocalBackend(engine, make_storage(settings)))
    with TestClient(app) as c:
        yield c

"""What the listing routes show: checkpoints, LoRAs, embeddings, samplers, upscalers, memory.

Built from the model registry's files and the engine's name tables; safetensors headers are read
as JSON (no tensors are loaded).
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

from shared import postprocess
from shared.engine import samplers
from shared.engine.hires import LATENT_UPSCALERS
from shared.engine.loras import LORA_SUFFIXES
from shared.engine.registry import EMBEDDING_SUFFIXES, EMBEDDINGS_DIR, LORA_DIR

MAX_HEADER = 64 * 1024 * 1024


def safetensors_header(path: Path) -> dict:
    """The JSON header of a .safetensors file ({} for other files or a broken header)."""
    if path.suffix != ".safetensors":
        return {}
    try:
        with path.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > MAX_HEADER:
                return {}
            return json.loads(f.read(size))
    except (OSError, ValueError, struct.error):
        return {}


def sd_models(registry) -> list[dict]:
    # `family` (and `distilled`) are sdgate's, detected from the files (docs/families.md)
    return [{"title": m.title, "model_name": m.name, "hash": m.hash, "sha256": None,
             "filename": str(m.path), "config": None, "family": m.family,
             "distilled": m.distilled or None} for m in registry.models()]


def loras(registry) -> list[dict]:
    out = []
    for name, path in registry.extra_files(LORA_DIR, LORA_SUFFIXES).items():
        meta = safetensors_header(path).get("__metadata__", {})
        out.append({"name": name, "alias": meta.get("ss_output_name", name), "path": str(path),
                    "metadata": meta})
    return out


def _embedding_item(path: Path) -> dict:
    header = safetensors_header(path)
    shapes = [v["shape"] for k, v in header.items() if k != "__metadata__" and "shape" in v]
    vectors = shape = None
    if shapes:
        first = shapes[0]
        vectors, shape = (first[0], first[-1]) if len(first) == 2 else (1, first[-1])
    return {"step": None, "sd_checkpoint": None, "sd_checkpoint_name": None, "shape": shape,
            "vectors": vectors}


def embeddings(registry) -> dict:
    """Every embedding file; each loads into a model the first time a prompt names it."""
    files = registry.extra_files(EMBEDDINGS_DIR, EMBEDDING_SUFFIXES)
    return {"loaded": {n: _embedding_item(p) for n, p in files.items()}, "skipped": {}}


def sampler_list() -> list[dict]:
    return samplers.a1111_list()


def scheduler_list() -> list[dict]:
    return [{"name": n, "label": label, "aliases": aliases, "default_rho": rho,
             "need_inner_model": inner}
            for n, (label, _, rho, inner, aliases) in samplers.SCHEDULE_TYPES.items()]


def upscaler_list(models_dir: Path) -> list[dict]:
    """Built-ins, then the installed model upscalers, in upstream's shape."""
    out = [{"name": n, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
           for n in postprocess.BUILTINS]
    return out + [{"name": u.name, "model_name": u.model_name, "model_path": str(u.path),
                   "model_url": None, "scale": u.scale} for u in postprocess.installed(models_dir)]


def realesrgan_models(models_dir: Path) -> list[dict]:
    """upstream's Real-ESRGAN table, limited to the files installed in <models_dir>/RealESRGAN."""
    return [{"name": u.name, "path": str(u.path), "scale": u.scale}
            for u in postprocess.installed(models_dir) if u.folder == "RealESRGAN"]


def latent_upscale_modes() -> list[dict]:
    return [{"name": n} for n in LATENT_UPSCALERS]


def ram() -> dict:
    """System memory in bytes, from sysconf (no extra dependency)."""
    try:
        page = os.sysconf("SC_PAGE_SIZE")
        total, free = os.sysconf("SC_PHYS_PAGES") * page, os.sysconf("SC_AVPHYS_PAGES") * page
    except (ValueError, OSError, AttributeError):
        return {"error": "unavailable"}
    return {"free": free, "used": total - free, "total": total}

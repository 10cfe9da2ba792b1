"""Torch-free ControlNet and IP-Adapter pieces the dialects use: model listing / lookup and the
detect op's types.

Layout: <models_dir>/ControlNet/<name>/config.json (diffusers folder) or
<models_dir>/ControlNet/<name>.safetensors|.pth|.bin|.ckpt (single file).
IP-Adapters: <models_dir>/IP-Adapter/ holds h94/IP-Adapter's `models/` (or `sdxl_models/`) folder
as it is, or several of them as subfolders: `<name>.safetensors|.bin` next to the
`image_encoder/` (CLIPVisionModelWithProjection) it was trained with.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, Field

from shared.errors import InvalidRequest

CONTROLNET_DIR = "ControlNet"
IPADAPTER_DIR = "IP-Adapter"
SUFFIXES = (".safetensors", ".pth", ".bin", ".ckpt")


def models(root: Path) -> dict[str, Path]:
    """name -> path of every ControlNet model on disk, sorted by name."""
    base = Path(root) / CONTROLNET_DIR
    found = {}
    if base.is_dir():
        for p in base.iterdir():
            if p.is_dir() and (p / "config.json").is_file():
                found[p.name] = p
            elif p.is_file() and p.suffix.lower() in SUFFIXES:
                found[p.stem] = p
    return dict(sorted(found.items()))


def _named(found: dict[str, Path], name: str) -> Path | None:
    """The entry for "name", "name [hash]" or "name.safetensors", or None."""
    want = re.sub(r"\s*\[[0-9a-fA-F]+\]$", "", (name or "").strip())
    for key in (want, Path(want).stem):
        if key in found:
            return found[key]
    return None


def resolve_model(root: Path, name: str) -> Path:
    """The path of a ControlNet by name ("name", "name [hash]" or "name.safetensors")."""
    found = models(root)
    if (path := _named(found, name)) is not None:
        return path
    raise InvalidRequest(f"ControlNet model {name!r} not found under {CONTROLNET_DIR}/; "
                         f"choose one of {list(found)}", param="model")


def ip_adapters(root: Path) -> dict[str, Path]:
    """name -> file of every IP-Adapter with an image_encoder/ folder beside it, sorted."""
    base = Path(root) / IPADAPTER_DIR
    found = {}
    for folder in [base, *sorted(base.iterdir())] if base.is_dir() else []:
        if folder.is_dir() and (folder / "image_encoder" / "config.json").is_file():
            for p in sorted(folder.iterdir()):
                if p.is_file() and p.suffix.lower() in (".safetensors", ".bin"):
                    found.setdefault(p.stem, p)
    return dict(sorted(found.items()))


def resolve_ip_adapter(root: Path, name: str) -> Path:
    """The file of an IP-Adapter by name ("name", "name [hash]" or "name.safetensors")."""
    found = ip_adapters(root)
    if (path := _named(found, name)) is not None:
        return path
    raise InvalidRequest(f"IP-Adapter {name!r} not found under {IPADAPTER_DIR}/ (each needs an "
                         f"image_encoder/ folder beside it); choose one of {list(found)}",
                         param="model")


class DetectRequest(BaseModel):
    """One preprocessor over some images (/controlnet/detect)."""

    module: str
    images: list[bytes] = Field(min_length=1)
    processor_res: int = Field(512, ge=64, le=4096)
    threshold_a: float | None = None
    threshold_b: float | None = None


class DetectResult(BaseModel):
    images: list[bytes]  # PNG

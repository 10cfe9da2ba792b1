"""The `upscale` operation's torch-free request and result, and the catalogue of upscaler names.

Names are A1111's (v1.10): the built-ins "None", "Lanczos" and "Nearest", and model upscalers
found in A1111's folders under the models directory. Files are named as upstream names them:
RealESRGAN's fixed table (`modules/realesrgan_model.py`: "R-ESRGAN 4x+" is RealESRGAN_x4plus.pth),
DAT's ("DAT x4" is DAT_x4.pth), ScuNET's, and otherwise the file's stem (`friendly_name`), which
is how "4x-UltraSharp", "ESRGAN_4x" (ESRGAN's download name) and "SwinIR_4x" come about.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from shared.errors import InvalidRequest

BUILTINS = ("None", "Lanczos", "Nearest")
SUFFIXES = (".pth", ".pt", ".safetensors")
# A1111's folder -> the model_name its Upscaler class reports in /upscalers (None where unset)
FOLDERS: dict[str, str | None] = {"ESRGAN": "ESRGAN_4x", "RealESRGAN": None, "SwinIR": "SwinIR 4x",
                                  "DAT": None, "HAT": None, "ScuNET": None}
# upstream's fixed names -> (folder, file stem, scale); files with other stems get their stem
KNOWN: dict[str, tuple[str, str, int]] = {
    "R-ESRGAN General 4xV3": ("RealESRGAN", "realesr-general-x4v3", 4),
    "R-ESRGAN General WDN 4xV3": ("RealESRGAN", "realesr-general-wdn-x4v3", 4),
    "R-ESRGAN AnimeVideo": ("RealESRGAN", "realesr-animevideov3", 4),
    "R-ESRGAN 4x+": ("RealESRGAN", "RealESRGAN_x4plus", 4),
    "R-ESRGAN 4x+ Anime6B": ("RealESRGAN", "RealESRGAN_x4plus_anime_6B", 4),
    "R-ESRGAN 2x+": ("RealESRGAN", "RealESRGAN_x2plus", 2),
    "DAT x2": ("DAT", "DAT_x2", 2),
    "DAT x3": ("DAT", "DAT_x3", 3),
    "DAT x4": ("DAT", "DAT_x4", 4),
    "ScuNET GAN": ("ScuNET", "scunet_color_real_gan", 1),
    "ScuNET PSNR": ("ScuNET", "scunet_color_real_psnr", 1),
}


@dataclass(frozen=True)
class UpscalerFile:
    """One installed model upscaler."""

    name: str
    folder: str
    path: Path
    scale: int

    @property
    def model_name(self) -> str | None:
        return FOLDERS.get(self.folder)


def installed(models_dir: Path) -> list[UpscalerFile]:
    """Every model upscaler file under the models directory, with its A1111 name."""
    by_file = {(folder, stem): name for name, (folder, stem, _) in KNOWN.items()}
    out: list[UpscalerFile] = []
    for folder in FOLDERS:
        root = Path(models_dir) / folder
        if not root.is_dir():
            continue
        for path in sorted(root.iterdir()):
            if path.suffix.lower() not in SUFFIXES or not path.is_file():
                continue
            name = by_file.get((folder, path.stem))
            scale = KNOWN[name][2] if name else 4  # upstream lists files as 4x; the model decides
            out.append(UpscalerFile(name or path.stem, folder, path, scale))
    return out


def choices(models_dir: Path) -> list[str]:
    return [*BUILTINS, *(u.name for u in installed(models_dir))]


def find(models_dir: Path, name: str, param: str = "upscaler_1") -> UpscalerFile | str:
    """A built-in's canonical name, or the installed file for a model name; else a 4xx."""
    key = name.strip().lower()
    for b in BUILTINS:
        if b.lower() == key:
            return b
    files = installed(models_dir)
    for u in files:
        if u.name.lower() == key:
            return u
    for u in files:  # upstream's download name ("SwinIR 4x" is saved as SwinIR_4x.pth)
        if u.name.lower() == key.replace(" ", "_"):
            return u
    for u in files:  # the file's own stem: ModelsLab's model_id ("realesr-general-x4v3")
        if u.path.stem.lower() == key:
            return u
    raise InvalidRequest(f"upscaler {name!r} not found; installed: "
                         f"{', '.join(choices(models_dir))}", param=param)


def model_ids(models_dir: Path) -> list[str]:
    """The installed model upscalers by file stem (ModelsLab's super resolution model_id)."""
    return [u.path.stem for u in installed(models_dir)]


def find_model(models_dir: Path, model_id: str, param: str = "model_id") -> UpscalerFile:
    """An installed model upscaler by file stem or A1111 name (no built-in resizes); else a 4xx."""
    try:
        found = find(models_dir, model_id, param)
    except InvalidRequest:
        found = None
    if not isinstance(found, UpscalerFile):
        ids = ", ".join(model_ids(models_dir)) or "none (add model files under RealESRGAN/)"
        raise InvalidRequest(f"upscaler model {model_id!r} is not installed; installed: {ids}",
                             param=param)
    return found


class UpscaleRequest(BaseModel):
    """A1111's extras upscale (scripts/postprocessing_upscale.py) over one or more images."""

    images: list[bytes] = Field(min_length=1)
    upscaler_1: str | None = "None"  # None: no upscaling at all (as upstream)
    upscaler_2: str | None = None
    upscaler_2_visibility: float = Field(0.0, ge=0.0, le=1.0)
    resize_mode: Literal["scale", "size"] = "scale"
    scale: float = Field(2.0, ge=1.0, le=8.0)
    width: int = Field(512, ge=1, le=8192)
    height: int = Field(512, ge=1, le=8192)
    crop: bool = True
    tile: int = Field(192, ge=0)  # A1111's ESRGAN_tile (0: whole image at once)
    tile_overlap: int = Field(8, ge=0)
    output_format: Literal["png", "jpeg", "webp"] = "png"


class UpscaleResult(BaseModel):
    images: list[bytes]
    info: dict[str, str]  # upstream's "Postprocess ..." parameters, in order

"""ADetailer's torch-free request and result, and its detector names under models_dir.

    <models_dir>/adetailer/<stem>.onnx   a YOLOv8 detection model exported to ONNX
                                         (`yolo export format=onnx`), asked for as "<stem>.pt"
                                         (upstream's name) or "<stem>.onnx"
    <models_dir>/insightface/models/buffalo_l/det_10g.onnx   the SCRFD face detector the face
                                         features use, asked for as "face_scrfd_10g" (sdgate's)

The dialect imports this module; the engine side is shared/engine/adetailer.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from shared.errors import ModelNotFound
from shared.faces import DETECTOR, PACK
from shared.generation import GenerationRequest

FOLDER = Path("adetailer")
SCRFD = "face_scrfd_10g"
VERSION = "25.3.0"  # the upstream release whose arguments this follows


class ADetailerUnit(BaseModel):
    """One ADetailer tab: what to detect, how to mask it, how to inpaint each detection."""

    model: str
    prompt: str = ""  # "" : the image's own prompt; "[PROMPT]" is replaced by it; [SEP] splits
    negative_prompt: str = ""
    confidence: float = Field(0.3, ge=0, le=1)
    filter_method: Literal["Area", "Confidence"] = "Area"
    mask_k: int = Field(0, ge=0)  # keep the k largest / most confident; 0: all
    min_ratio: float = Field(0.0, ge=0, le=1)  # box area / image area bounds
    max_ratio: float = Field(1.0, ge=0, le=1)
    dilate_erode: int = 4  # >0 dilate, <0 erode the mask (square kernel of that size)
    x_offset: int = 0
    y_offset: int = 0  # up is positive (upstream's)
    merge_invert: Literal["None", "Merge", "Merge and Invert"] = "None"
    mask_blur: int = Field(4, ge=0)
    strength: float = Field(0.4, ge=0, le=1)
    only_masked: bool = True
    padding: int = Field(32, ge=0)
    size: tuple[int, int] | None = None  # inpaint width, height; None: the request's
    steps: int | None = Field(None, ge=1, le=500)
    guidance: float | None = Field(None, ge=0)
    sampler: str | None = None
    scheduler: str | None = None
    clip_skip: int | None = Field(None, ge=1, le=12)


class ADetailerRequest(BaseModel):
    """Detect and re-inpaint the regions of one generated image. `base` is the generation
    request that drew it (model, prompts, seed of this image, sampler ...)."""

    image: bytes
    base: GenerationRequest
    units: list[ADetailerUnit]


class ADetailerResult(BaseModel):
    """The image after every unit, and how many regions were inpainted."""

    image: bytes
    regions: int
    params: dict[str, str] = {}  # infotext entries, upstream's wording


def params(units: list[ADetailerUnit]) -> dict[str, str]:
    """Upstream's infotext entries for the units ("ADetailer model", "... 2nd", ...)."""
    out: dict[str, str] = {}
    for n, unit in enumerate(units):
        sfx = "" if n == 0 else f" {n + 1}" + {1: "nd", 2: "rd"}.get(n, "th")
        out[f"ADetailer model{sfx}"] = unit.model
        if unit.prompt:
            out[f"ADetailer prompt{sfx}"] = unit.prompt
        if unit.negative_prompt:
            out[f"ADetailer negative prompt{sfx}"] = unit.negative_prompt
        out[f"ADetailer confidence{sfx}"] = str(unit.confidence)
        out[f"ADetailer dilate erode{sfx}"] = str(unit.dilate_erode)
        out[f"ADetailer mask blur{sfx}"] = str(unit.mask_blur)
        out[f"ADetailer denoising strength{sfx}"] = str(unit.strength)
    out["ADetailer version"] = VERSION
    return out


def add_params(infotext: str, extra: dict[str, str]) -> str:
    """An infotext with more entries on its parameter line."""
    from shared.infotext import format_infotext, parse_infotext

    if not infotext:
        return infotext
    p = parse_infotext(infotext)
    prompt, negative = p.pop("Prompt", ""), p.pop("Negative prompt", "")
    return format_infotext(prompt, negative, {**p, **extra})


def detectors(models_dir: Path) -> list[str]:
    """The ad_model names that resolve here (GET /adetailer/v1/ad_model), "None" first."""
    names = ["None"]
    folder = Path(models_dir) / FOLDER
    if folder.is_dir():
        names += sorted(f"{p.stem}.pt" for p in folder.iterdir() if p.suffix == ".onnx")
    if (Path(models_dir) / PACK / DETECTOR).is_file():
        names.append(SCRFD)
    return names


def detector_file(models_dir: Path, name: str) -> Path:
    """The ONNX file of an ad_model name; unknown or missing: 404 listing the choices."""
    stem = name[:-3] if name.endswith(".pt") else name[:-5] if name.endswith(".onnx") else None
    if name == SCRFD:
        path = Path(models_dir) / PACK / DETECTOR
    elif stem and "/" not in stem and "\\" not in stem and stem not in ("", ".", ".."):
        path = Path(models_dir) / FOLDER / f"{stem}.onnx"
    else:
        path = None
    if path is None or not path.is_file():
        raise ModelNotFound(f"ADetailer model {name!r} not found; choose one of "
                            f"{detectors(models_dir)} (YOLO .pt weights are used as their ONNX "
                            f"export, <models_dir>/{FOLDER}/<name>.onnx)", param="ad_model")
    return path

"""Face operations' torch-free requests and results, and the face model files under models_dir.

    <models_dir>/insightface/models/buffalo_l/det_10g.onnx    SCRFD detector (5 landmarks)
    <models_dir>/insightface/models/buffalo_l/w600k_r50.onnx  ArcFace recogniser (512-d)
    <models_dir>/insightface/models/buffalo_l/genderage.onnx  gender (gender_source/target)
    <models_dir>/insightface/inswapper_128.onnx               swapper (ReActor's `model`)
    <models_dir>/reactor/faces/<name>.safetensors             ReActor face models (embedding)
    <models_dir>/GFPGAN/*.pth, <models_dir>/Codeformer/*.pth   face restorers (spandrel)

The dialects import this module; the engine side lives in shared/engine/faces/.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from shared.errors import ModelNotFound

PACK = Path("insightface/models/buffalo_l")
DETECTOR, RECOGNISER, GENDERAGE = "det_10g.onnx", "w600k_r50.onnx", "genderage.onnx"
SWAPPERS = Path("insightface")
FACE_MODELS = Path("reactor/faces")
RESTORER_DIRS = {"GFPGAN": "GFPGAN", "CodeFormer": "Codeformer"}
WEIGHT_SUFFIXES = (".pth", ".safetensors", ".ckpt", ".pt")


class Restore(BaseModel):
    """Face restoration of the detected faces: a restorer family and how much of it shows."""

    model: str  # "GFPGAN" or "CodeFormer"
    visibility: float = Field(1.0, ge=0, le=1)
    codeformer_weight: float = Field(0.5, ge=0, le=1)  # CodeFormer's fidelity w (0: strongest)


class FaceSwapRequest(BaseModel):
    """ReActor's swap: faces of `source_image` (or a face model) onto faces of `target_image`."""

    target_image: bytes
    source_image: bytes | None = None
    face_model: str | None = None  # a <models_dir>/reactor/faces file instead of a source image
    source_faces_index: list[int] = [0]
    face_index: list[int] = [0]
    model: str = "inswapper_128.onnx"
    gender_source: int = Field(0, ge=0, le=2)  # 0 any, 1 female only, 2 male only
    gender_target: int = Field(0, ge=0, le=2)
    det_thresh: float = Field(0.5, ge=0, le=1)
    det_maxnum: int = Field(0, ge=0)
    restore: Restore | None = None
    restore_first: bool = True
    # ReActor as an A1111 alwayson script, on a generated image: a target without the asked
    # face comes back unchanged (ReActor logs and skips) instead of /reactor/image's 4xx, and
    # the result keeps the target's format and infotext.
    on_generated: bool = False
    safety_checker: bool = False  # refuse when the safety checker flags the source or target


class FaceRestoreRequest(BaseModel):
    """Restore every detected face of an image (A1111 restore_faces / extras)."""

    image: bytes
    restore: Restore


class FaceImageResult(BaseModel):
    """A PNG and how many faces were changed."""

    image: bytes
    faces: int


def _files(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in suffixes)


def swap_models(models_dir: Path) -> list[str]:
    """ReActor's /reactor/models: the swapper files."""
    return [p.name for p in _files(Path(models_dir) / SWAPPERS, (".onnx",))]


def face_models(models_dir: Path) -> list[str]:
    """ReActor's /reactor/facemodels: face model names (no extension)."""
    return [p.stem for p in _files(Path(models_dir) / FACE_MODELS, (".safetensors",))]


def restorers(models_dir: Path) -> list[str]:
    """Restorer families with a weights file present (A1111's face-restorers names)."""
    return [name for name, sub in RESTORER_DIRS.items()
            if _files(Path(models_dir) / sub, WEIGHT_SUFFIXES)]


def restorer_file(models_dir: Path, name: str) -> Path:
    """The weights of a restorer family, by A1111 / ReActor name (case-insensitive)."""
    for family, sub in RESTORER_DIRS.items():
        if family.lower() == name.strip().lower():
            files = _files(Path(models_dir) / sub, WEIGHT_SUFFIXES)
            if not files:
                raise ModelNotFound(f"face restorer {family}: no weights in <models_dir>/{sub}",
                                    param="face_restorer")
            return files[-1]  # sorted: the newest version number last (GFPGANv1.4 > v1.3)
    raise ModelNotFound(f"unknown face restorer {name!r}; choose one of "
                        f"{list(RESTORER_DIRS)}", param="face_restorer")

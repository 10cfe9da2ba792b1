"""A1111's restore_faces: the restorer its options choose, applied to each generated image."""

from __future__ import annotations

from shared.errors import Unavailable, Unsupported
from shared.faces import FaceRestoreRequest, Restore

DEFAULT_RESTORER = "CodeFormer"  # A1111's face_restoration_model default


def restore_of(req, settings: dict) -> Restore | None:
    """The Restore a txt2img / img2img request asks for (None when restore_faces is off), from
    the `face_restoration_model` and `code_former_weight` options (override_settings win)."""
    if not req.restore_faces:
        return None
    model = settings.get("face_restoration_model") or DEFAULT_RESTORER
    if str(model).lower() == "none":
        return None
    weight = settings.get("code_former_weight", 0.5)
    return Restore(model=str(model), visibility=1.0,
                   codeformer_weight=0.5 if weight is None else float(weight))


def check(request, urls: bool) -> None:
    """Refusals before generating: faces turned off, or URL responses (already uploaded)."""
    if not request.app.state.settings.faces:
        raise Unavailable("face features are turned off on this server (SDGATE_FACES)",
                          param="restore_faces")
    if urls:
        raise Unsupported("restore_faces with URL responses is not supported; ask for base64",
                          param="restore_faces")


async def restore_images(request, result, restore: Restore, urls: bool):
    """Replace each image of a result by its face-restored version (before it is rendered)."""
    check(request, urls)
    for img in result.images:
        if img.data:
            out = await request.app.state.backend.op(
                "face_restore", FaceRestoreRequest(image=img.data, restore=restore))
            img.data = out.image
    return result


def extras_restores(req) -> list[Restore]:
    """Extras' face restorers in upstream's postprocessing order (upscale, GFPGAN, CodeFormer)."""
    out = []
    if req.gfpgan_visibility > 0:
        out.append(Restore(model="GFPGAN", visibility=req.gfpgan_visibility))
    if req.codeformer_visibility > 0:
        out.append(Restore(model="CodeFormer", visibility=req.codeformer_visibility,
                           codeformer_weight=req.codeformer_weight))
    return out


async def restore_extras(request, result, restores: list[Restore]):
    """Apply each restorer to every upscaled image; upstream's info gains their parameters."""
    for restore in restores:
        images = []
        for data in result.images:
            out = await request.app.state.backend.op(
                "face_restore", FaceRestoreRequest(image=data, restore=restore))
            images.append(out.image)
        result.images = images
        if restore.model == "GFPGAN":
            result.info["GFPGAN visibility"] = str(restore.visibility)
        else:
            result.info["CodeFormer visibility"] = str(restore.visibility)
            result.info["CodeFormer weight"] = str(restore.codeformer_weight)
    return result

"""ModelsLab super resolution: `/api/v3/super_resolution` and `/api/v6/image_editing/super_resolution`.

Upstream: docs.modelslab.com/image-editing/super-resolution (v6: `init_image`, `model_id`,
`scale`, `face_enhance`, `webhook`, `track_id`) and the stablediffusionapi.com v3 page (the image
is `url` there). The work is the one `upscale` engine operation A1111's extras use, with the
model looked up by its file stem (`realesr-general-x4v3` is RealESRGAN/realesr-general-x4v3.pth);
`face_enhance` is GFPGAN through the `face_restore` operation, as Real-ESRGAN's own flag is.
The answer is a finished job: fetchable by id, and posted to `webhook` like a generation.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from shared.dialects.modelslab.protocol import Blank, Switch
from shared.errors import FieldError, InvalidRequest, ModelNotFound, ValidationFailed
from shared.faces import FaceRestoreRequest, Restore, restorer_file
from shared.generation import GeneratedImage, GenerationResult
from shared.postprocess import UpscaleRequest, find_model

DEFAULT_MODEL = "realesr-general-x4v3"  # upstream's documented default model_id


class SuperResolutionRequest(BaseModel):
    """POST /api/v3/super_resolution (image in `url`) and v6's (image in `init_image`)."""

    model_config = ConfigDict(extra="allow")

    key: str | None = None
    url: Annotated[str | None, Blank] = None  # v3
    init_image: Annotated[str | None, Blank] = None  # v6: a URL, or base64
    model_id: Annotated[str, Blank] = DEFAULT_MODEL
    scale: Annotated[int, Blank, Field(ge=1, le=8)] = 3  # upstream openapi default and example
    face_enhance: Switch = False
    webhook: Annotated[str | None, Blank] = None
    track_id: Annotated[str | int | None, Blank] = None
    base64: Switch = False

    def image_ref(self) -> tuple[str, str]:
        """(field, value) of the image to upscale: v6's init_image, else v3's url."""
        if self.init_image:
            return "init_image", self.init_image
        if self.url:
            return "url", self.url
        raise ValidationFailed("The init image field is required.", fields=[FieldError(
            "init_image", "The init image field is required.")])

    def to_upscale(self, image: bytes) -> UpscaleRequest:
        """The engine's upscale: the model over the image until `scale` x is covered."""
        return UpscaleRequest(images=[image], upscaler_1=self.model_id, scale=float(self.scale))

    def check_face_enhance(self, models_dir) -> None:
        """face_enhance without GFPGAN weights: refused before any work, naming the folder."""
        if self.face_enhance:
            try:
                restorer_file(models_dir, "GFPGAN")
            except ModelNotFound as e:
                raise InvalidRequest(f"face_enhance needs GFPGAN weights: {e.message}",
                                     param="face_enhance") from e

    def face_restore(self, image: bytes) -> FaceRestoreRequest | None:
        return FaceRestoreRequest(image=image, restore=Restore(model="GFPGAN")) \
            if self.face_enhance else None

    def meta(self, field: str, value: str, job_id: str) -> dict:
        shown = value if value.lower().startswith(("http://", "https://")) else "base64"
        return {field: shown, "model_id": self.model_id, "scale": self.scale,
                "face_enhance": self.face_enhance, "file_prefix": job_id,
                "base64": "yes" if self.base64 else "no", "webhook": self.webhook,
                "track_id": self.track_id}


def check_text2img_upscaler(models_dir, name: str) -> None:
    """text2img `upscale: yes` with the configured model upscaler missing: refused up front."""
    try:
        find_model(models_dir, name, "upscale")
    except InvalidRequest as e:
        raise InvalidRequest(f"{e.message} (SDGATE_MODELSLAB_UPSCALER); send upscale \"no\"",
                             param="upscale") from e


def as_result(data: bytes, model_id: str, seconds: float) -> GenerationResult:
    """The upscaled PNG as a one-image result, so it is stored and rendered like a generation."""
    from shared.images import open_image

    img = open_image(data, 1 << 40)
    return GenerationResult(images=[GeneratedImage(seed=-1, data=data, width=img.width,
                                                   height=img.height)],
                            model=model_id, seed=-1, timings={"upscale": seconds})

"""Face restoration (GFPGAN, CodeFormer, any spandrel face model) on aligned 512 px face crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from shared.engine import ops, spandrel_models
from shared.engine.faces.analysis import FaceAnalyser, similarity, warp
from shared.engine.faces.paste import paste_back
from shared.faces import FaceImageResult, FaceRestoreRequest, Restore, restorer_file
from shared.images import encode, open_image

CROP = 512
# facexlib's FFHQ 5-point template at 512 px, the alignment GFPGAN and CodeFormer were trained on
FFHQ_512 = np.array([[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935],
                     [201.26117, 371.41043], [313.08905, 371.15118]], dtype=np.float32)


def _apply(model, crop: Image.Image, restore: Restore) -> Image.Image:
    if model.architecture.id == "CodeFormer":  # its fidelity weight is a forward argument
        import torch

        arr = np.asarray(crop, np.float32) / 255.0
        x = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).to(model.device)
        with torch.inference_mode():
            y = model.model(x, weight=restore.codeformer_weight)[0]
        out = y.squeeze(0).float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
        return Image.fromarray((out * 255.0 + 0.5).astype(np.uint8))
    out = spandrel_models.run(model, crop)
    return out if out.size == crop.size else out.resize(crop.size, Image.Resampling.LANCZOS)


def restore_faces(image: Image.Image, faces, restore: Restore, models_dir: Path,
                  device: str = "cpu") -> Image.Image:
    """Each face cropped, restored, blended with its crop by `visibility`, pasted back."""
    if restore.visibility <= 0 or not faces:
        return image  # A1111 skips the restorer at visibility 0: the image stays bit-identical
    model = spandrel_models.load(restorer_file(models_dir, restore.model), device)
    out = image.convert("RGB")
    for face in faces:
        m = similarity(face.kps, FFHQ_512)
        crop = warp(out, m, (CROP, CROP))
        fixed = _apply(model, crop, restore)
        if restore.visibility < 1:
            fixed = Image.blend(crop, fixed, restore.visibility)
        out = paste_back(out, fixed, m)
    return out


@ops.op("face_restore")
def face_restore(engine, req: FaceRestoreRequest) -> FaceImageResult:
    """Detect every face of an image and restore it (A1111 restore_faces, extras)."""
    root = engine.registry.root
    restorer_file(root, req.restore.model)  # unknown / missing restorer: refused before work
    src = open_image(req.image, engine.max_image_pixels, "image")
    fmt = {"JPEG": "jpeg", "WEBP": "webp"}.get(src.format or "", "png")  # keep the format
    text = {k: v for k, v in src.info.items() if k == "parameters" and isinstance(v, str)}
    img = src.convert("RGB")
    faces = FaceAnalyser(root, str(engine.device)).faces(img)
    out = restore_faces(img, faces, req.restore, root, str(engine.device))
    return FaceImageResult(image=encode(out, fmt, text if fmt == "png" else None),
                           faces=len(faces))

"""inswapper face swap (ReActor's), with ReActor's face choice rules and optional restoration."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from PIL import Image

from shared.engine import ops
from shared.engine.faces.analysis import FaceAnalyser, norm_crop_matrix, session, warp
from shared.engine.faces.paste import paste_back
from shared.engine.faces.restore import restore_faces
from shared.errors import (InvalidRequest, ModelNotFound, ModerationBlocked, Unsupported,
                           ValidationFailed)
from shared.faces import FACE_MODELS, SWAPPERS, FaceImageResult, FaceSwapRequest, restorer_file
from shared.images import encode, open_image

_lock = threading.Lock()
_emaps: dict[tuple, np.ndarray] = {}


def emap(path: Path) -> np.ndarray:
    """inswapper's embedding map: the graph's last initializer (insightface's INSwapper)."""
    import onnx
    from onnx import numpy_helper

    key = (str(path), path.stat().st_mtime_ns)
    with _lock:
        if key not in _emaps:
            graph = onnx.load(str(path)).graph
            _emaps[key] = numpy_helper.to_array(graph.initializer[-1]).astype(np.float32)
        return _emaps[key]


def swap_one(sess, em: np.ndarray, image: Image.Image, target_kps: np.ndarray,
             source_embedding: np.ndarray) -> Image.Image:
    """Swap one face: aligned crop (x / 255), latent = normed(embedding @ emap), paste back."""
    inputs = {i.name: i for i in sess.get_inputs()}
    dim = inputs["target"].shape[2] if "target" in inputs else sess.get_inputs()[0].shape[2]
    size = dim if isinstance(dim, int) else 128
    m = norm_crop_matrix(target_kps, size)
    crop = np.asarray(warp(image, m, (size, size)), np.float32)
    latent = source_embedding.reshape(1, -1).astype(np.float32) @ em
    latent /= np.linalg.norm(latent) or 1.0
    names = [i.name for i in sess.get_inputs()]
    feed = {names[0]: (crop / 255.0).transpose(2, 0, 1)[None].astype(np.float32),
            names[1]: latent.astype(np.float32)}
    if "target" in inputs and "source" in inputs:
        feed = {"target": feed[names[0]], "source": feed[names[1]]}
    pred = sess.run(None, feed)[0][0].transpose(1, 2, 0)
    fake = Image.fromarray(np.clip(pred * 255.0 + 0.5, 0, 255).astype(np.uint8))
    return paste_back(image, fake, m)


def _face_model_embedding(root: Path, name: str) -> np.ndarray:
    """A ReActor face model (safetensors of insightface Face fields): its `embedding`."""
    from safetensors.numpy import load_file

    stem = name[:-len(".safetensors")] if name.endswith(".safetensors") else name
    path = root / FACE_MODELS / f"{stem}.safetensors"
    if "/" in name or "\\" in name or not path.is_file():
        raise ModelNotFound(f"face model {name!r} not found in <models_dir>/{FACE_MODELS}",
                            param="face_model")
    tensors = load_file(str(path))
    if "embedding" not in tensors:
        raise InvalidRequest(f"face model {name!r} has no 'embedding' tensor", param="face_model")
    emb = tensors["embedding"].astype(np.float32).reshape(-1)
    return emb / (np.linalg.norm(emb) or 1.0)


def _pick(faces, index: int, gender: int, field: str, image_field: str):
    """ReActor's get_face_single: by index in the sorted faces; None when the gender filter
    (1 female only, 2 male only) rejects it."""
    if not faces:
        raise InvalidRequest(f"no face found in {image_field}", param=image_field)
    if not 0 <= index < len(faces):
        raise ValidationFailed(f"{field}: face {index} out of range; {image_field} has "
                               f"{len(faces)} face(s) (0-{len(faces) - 1})", param=field)
    face = faces[index]
    if gender and face.gender != ("F" if gender == 1 else "M"):
        return None
    return face


def screen(engine, images: dict[str, Image.Image]) -> None:
    """Refuse the swap when the safety checker (shared/engine/safety.py, the models folder's
    shared one) flags any of `images` (field name -> image); no checker installed: refused."""
    from shared.engine import safety

    shared = getattr(engine, "shared_checker", None) or safety.SharedChecker(engine.registry.root)
    checker = shared.get()
    if checker is None:
        raise Unsupported(f"face swap safety screening is on, but no safety checker is installed "
                          f"({shared.path})", param="safety_checker")
    flags = checker.flags(list(images.values()), str(engine.device))
    for field, flagged in zip(images, flags):
        if flagged:
            raise ModerationBlocked(f"{field} was flagged by the safety checker; face swap "
                                    "refused", param=field)


def reencode(src: Image.Image, out: Image.Image) -> bytes:
    """`out` encoded like the image it came from: its format, and a PNG's `parameters` text."""
    fmt = {"JPEG": "jpeg", "WEBP": "webp"}.get(src.format or "", "png")
    text = {k: v for k, v in src.info.items() if k == "parameters" and isinstance(v, str)}
    return encode(out, fmt, text if fmt == "png" and text else None)


def swapper_path(root: Path, model: str) -> Path:
    path = root / SWAPPERS / model
    if "/" in model or "\\" in model or not model.endswith(".onnx") or not path.is_file():
        raise ModelNotFound(f"swap model {model!r} not found in <models_dir>/{SWAPPERS}",
                            param="model")
    return path


@ops.op("face_swap")
def face_swap(engine, req: FaceSwapRequest) -> FaceImageResult:
    """Swap the chosen source face(s) onto the chosen target faces (faces found on the original
    target, swapped one after another into the result)."""
    root, device = engine.registry.root, str(engine.device)
    path = swapper_path(root, req.model)
    if req.restore:
        restorer_file(root, req.restore.model)
    n_src = len(req.source_faces_index)
    if n_src > 1 and n_src != len(req.face_index):
        raise ValidationFailed("source_faces_index: give one index, or one per face_index entry",
                               param="source_faces_index")
    analyser = FaceAnalyser(root, device)
    original = open_image(req.target_image, engine.max_image_pixels, "target_image")
    target = original.convert("RGB")
    source = None
    if not req.face_model and req.source_image is not None:
        source = open_image(req.source_image, engine.max_image_pixels, "source_image")
    if req.safety_checker:
        screen(engine, {"source_image": source, "target_image": target} if source else
               {"target_image": target})
    targets = analyser.faces(target, thresh=req.det_thresh, max_num=req.det_maxnum,
                             genders=bool(req.gender_target))
    if req.face_model:
        embeddings = None
        fixed = _face_model_embedding(root, req.face_model)
    else:
        if req.source_image is None:
            raise ValidationFailed("source_image is required (or select_source=1 with a "
                                   "face_model)", param="source_image")
        embeddings = analyser.faces(source.convert("RGB"), thresh=req.det_thresh,
                                    max_num=req.det_maxnum, embeddings=True,
                                    genders=bool(req.gender_source))
    sess, em = session(path, device), emap(path)
    result, swapped = target, []
    for i, t_idx in enumerate(req.face_index):
        if embeddings is None:
            src_emb = fixed
        else:
            s_idx = req.source_faces_index[i if n_src > 1 else 0]
            src = _pick(embeddings, s_idx, req.gender_source, "source_faces_index",
                        "source_image")
            if src is None:
                continue  # ReActor: a source face of the wrong gender swaps nothing
            src_emb = src.embedding
        if req.on_generated and not 0 <= t_idx < len(targets):
            continue  # ReActor on generated images: "no face" / "index out of bounds" skips
        face = _pick(targets, t_idx, req.gender_target, "face_index", "target_image")
        if face is None:
            continue
        result = swap_one(sess, em, result, face.kps, src_emb)
        swapped.append(face)
    if req.restore:
        result = restore_faces(result, swapped, req.restore, root, device)
    if not swapped and req.on_generated:
        return FaceImageResult(image=req.target_image, faces=0)  # untouched, byte for byte
    data = reencode(original, result) if req.on_generated else encode(result)
    return FaceImageResult(image=data, faces=len(swapped))

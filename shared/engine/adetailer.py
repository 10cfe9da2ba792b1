"""ADetailer (Bing-su/adetailer's postprocess_image): detect regions of a generated image, mask
each one (box, dilate/erode, offset, merge/invert), and inpaint it again with the engine's own
inpaint at the requested strength, one region after another. Detectors run on onnxruntime: a
YOLOv8 detection model exported to ONNX, or the SCRFD face detector of the face features."""

from __future__ import annotations

import io
import re

import numpy as np
from PIL import Image, ImageChops, ImageFilter
from pydantic import ValidationError

from shared import adetailer as types
from shared.engine import ops
from shared.engine.faces.analysis import FaceAnalyser, _nms, session
from shared.errors import Unsupported, from_pydantic
from shared.generation import GenerationRequest, Mode
from shared.images import encode, open_image

YOLO_IOU = 0.7  # ultralytics' predict default
PAD_GREY = 114  # ultralytics' letterbox colour


# -- detection -----------------------------------------------------------------------------------
def yolo(sess, img: Image.Image, confidence: float) -> list[tuple[np.ndarray, float]]:
    """YOLOv8's ONNX export: letterbox (centred, grey), RGB / 255; output0 [1, 4 + classes, N]
    of centre-x, centre-y, width, height and class scores; NMS; boxes back in image pixels."""
    inp = sess.get_inputs()[0]
    side = inp.shape[2] if isinstance(inp.shape[2], int) else 640
    w, h = img.size
    r = min(side / w, side / h)
    nw, nh = round(w * r), round(h * r)
    left, top = int(round((side - nw) / 2 - 0.1)), int(round((side - nh) / 2 - 0.1))
    canvas = Image.new("RGB", (side, side), (PAD_GREY,) * 3)
    canvas.paste(img.convert("RGB").resize((nw, nh), Image.Resampling.BILINEAR), (left, top))
    blob = (np.asarray(canvas, np.float32) / 255.0).transpose(2, 0, 1)[None]
    outs = sess.run(None, {inp.name: blob})
    if len(outs) != 1 or outs[0].ndim != 3:
        raise Unsupported("this ADetailer model is not a YOLO detection export (segmentation "
                          "models, with mask prototypes, are not supported)", param="ad_model")
    pred = outs[0][0].T  # (N, 4 + classes)
    scores = pred[:, 4:].max(axis=1)
    keep = scores >= confidence
    pred, scores = pred[keep], scores[keep]
    if not len(pred):
        return []
    cx, cy, bw, bh = pred[:, 0], pred[:, 1], pred[:, 2], pred[:, 3]
    boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    order = _nms(boxes, scores, YOLO_IOU)  # highest score first
    boxes = (boxes[order] - [left, top, left, top]) / r
    boxes = np.clip(boxes, 0, [w, h, w, h])
    return [(b, float(s)) for b, s in zip(boxes, scores[order])]


def detect(engine, unit: types.ADetailerUnit, img: Image.Image):
    """Boxes and scores of one unit's detector on an image."""
    root, device = engine.registry.root, str(engine.device)
    path = types.detector_file(root, unit.model)
    if unit.model == types.SCRFD:
        faces = FaceAnalyser(root, device).faces(img.convert("RGB"), thresh=unit.confidence)
        faces.sort(key=lambda f: f.score, reverse=True)  # ultralytics' order: by confidence
        return [(f.bbox, f.score) for f in faces]
    return yolo(session(path, device), img, unit.confidence)


# -- masks ---------------------------------------------------------------------------------------
def select(found, unit: types.ADetailerUnit, size: tuple[int, int]):
    """Upstream's filter_by_ratio then filter_k_by (k largest or most confident)."""
    area = size[0] * size[1]

    def box_area(b):
        return float((b[2] - b[0]) * (b[3] - b[1]))

    found = [(b, s) for b, s in found if unit.min_ratio <= box_area(b) / area <= unit.max_ratio]
    if unit.mask_k:
        key = (lambda d: box_area(d[0])) if unit.filter_method == "Area" else (lambda d: d[1])
        found = sorted(found, key=key, reverse=True)[:unit.mask_k]
    return found


def masks(found, unit: types.ADetailerUnit, size: tuple[int, int]) -> list[Image.Image]:
    """One white-box mask per detection, dilated / eroded (square kernel, odd size as PIL's
    filters take), offset (y up), empty ones dropped, then merged and / or inverted."""
    out = []
    for box, _ in found:
        m = Image.new("L", size, 0)
        m.paste(255, tuple(int(round(v)) for v in box))
        k = abs(unit.dilate_erode)
        if k:
            k += 1 - k % 2
            m = m.filter(ImageFilter.MaxFilter(k) if unit.dilate_erode > 0 else
                         ImageFilter.MinFilter(k))
        if unit.x_offset or unit.y_offset:
            m = ImageChops.offset(m, unit.x_offset, -unit.y_offset)
        if m.getbbox():
            out.append(m)
    if out and unit.merge_invert != "None":
        merged = out[0]
        for m in out[1:]:
            merged = ImageChops.lighter(merged, m)
        out = [ImageChops.invert(merged) if unit.merge_invert == "Merge and Invert" else merged]
    return out


def prompts(text: str, default: str) -> list[str]:
    """ADetailer's prompt: "[SEP]" splits one per region; empty parts and "[PROMPT]" take
    the image's own prompt."""
    parts = re.split(r"\s*\[SEP\]\s*", text)
    return [default if not p else p.replace("[PROMPT]", default) for p in parts]


# -- inpainting ----------------------------------------------------------------------------------
def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def region_request(base: GenerationRequest, unit: types.ADetailerUnit, image: bytes,
                   mask: Image.Image, size: tuple[int, int], j: int) -> GenerationRequest | None:
    """The inpaint request of region j (upstream's get_i2i_p + fix_p2), or None to skip it."""
    pos = prompts(unit.prompt, base.prompt)
    neg = prompts(unit.negative_prompt, base.negative_prompt)
    prompt = pos[min(j, len(pos) - 1)]
    if re.match(r"^\s*\[SKIP\]\s*$", prompt):
        return None
    steps = unit.steps or base.steps
    if unit.strength * steps < 1:
        return None  # less than one denoising step: the region stays as it is
    w, h = unit.size or ((base.width, base.height) if unit.only_masked else size)
    fields = base.model_dump(exclude={"hires", "variant", "controlnets", "ip_adapters",
                                      "refiner", "upscale", "task_id", "defaulted",
                                      "partial_images", "batch_size"})
    fields.update(
        mode=Mode.inpaint, init_image=image, mask=_png(mask), strength=unit.strength,
        mask_blur=(unit.mask_blur, unit.mask_blur), mask_invert=False, inpainting_fill=1,
        inpaint_full_res=unit.only_masked, inpaint_full_res_padding=unit.padding,
        resize_mode=0, num_images=1, seed=GenerationRequest.nth_seed(base.seed, j),
        subseed=base.subseed if base.subseed == -1 else GenerationRequest.nth_seed(
            base.subseed, j),
        width=w, height=h, steps=steps, guidance=unit.guidance if unit.guidance is not None
        else base.guidance, sampler=unit.sampler or base.sampler,
        scheduler=unit.scheduler or base.scheduler, clip_skip=unit.clip_skip or base.clip_skip,
        prompt=prompt, negative_prompt=neg[min(j, len(neg) - 1)], extra_params={})
    try:
        return GenerationRequest(**fields)
    except ValidationError as e:  # a combination the engine cannot take: a 4xx, never a 500
        raise from_pydantic(e, "ADetailer.") from e


def _with_params(original: Image.Image, params: dict) -> dict | None:
    """The image's own `parameters` text chunk with the ADetailer entries added."""
    text = original.info.get("parameters")
    if not isinstance(text, str) or not text:
        return None
    return {"parameters": types.add_params(text, params)}


@ops.op("adetailer")
def adetailer(engine, req: types.ADetailerRequest) -> types.ADetailerResult:
    """Every unit in order on one image: detect, mask, inpaint each region."""
    for unit in req.units:  # unknown detector: refused before any work
        types.detector_file(engine.registry.root, unit.model)
    original = open_image(req.image, engine.max_image_pixels, "image")
    current, regions = req.image, 0
    for unit in req.units:
        img = open_image(current, engine.max_image_pixels, "image").convert("RGB")
        found = select(detect(engine, unit, img), unit, img.size)
        for j, mask in enumerate(masks(found, unit, img.size)):
            sub = region_request(req.base, unit, current, mask, img.size, j)
            if sub is None:
                continue
            current = engine.generate(sub).images[0].data
            regions += 1
    if not regions:
        return types.ADetailerResult(image=req.image, regions=0)  # nothing detected: as is
    fmt = {"JPEG": "jpeg", "WEBP": "webp"}.get(original.format or "", "png")
    out = open_image(current, engine.max_image_pixels, "image").convert("RGB")
    params = types.params(req.units)
    text = _with_params(original, params) if fmt == "png" else None
    return types.ADetailerResult(image=encode(out, fmt, text), regions=regions, params=params)

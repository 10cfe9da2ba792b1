"""Face detection (SCRFD), 5-point alignment, ArcFace embeddings and gender on onnxruntime.

The pre/post-processing follows insightface's model_zoo (scrfd.py, arcface_onnx.py,
attribute.py, face_align.py), rewritten on numpy + PIL: insightface 2.1 is a wheel, but it drags
in opencv-python (needs libGL), scipy and scikit-image for what is ~150 lines here.
Images are RGB throughout: insightface reads BGR and every model call swaps to RGB.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from shared.errors import ModelNotFound, Unsupported
from shared.faces import DETECTOR, GENDERAGE, PACK, RECOGNISER

DET_SIZE = 640  # insightface's FaceAnalysis.prepare(det_size=(640, 640)), as ReActor uses
NMS_THRESH = 0.4
# ArcFace's 5-point template at 112x112 (eyes, nose, mouth corners): face_align.arcface_dst.
ARCFACE_DST = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32)

_lock = threading.Lock()
_sessions: dict[tuple, object] = {}


def providers(device: str) -> list[str]:
    """CUDA when the engine runs on it and onnxruntime has it, else the CPU."""
    import onnxruntime as ort

    have = ort.get_available_providers()
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def session(path: Path, device: str = "cpu"):
    """One onnxruntime session per file (and mtime) and device, kept for the process."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise ModelNotFound(f"face model file missing: {path.name} (looked in {path.parent})",
                            param="model")
    key = (str(path), path.stat().st_mtime_ns, str(device))
    with _lock:
        if key not in _sessions:
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            _sessions[key] = ort.InferenceSession(str(path), opts, providers=providers(device))
        return _sessions[key]


@dataclass
class Face:
    """One detected face: box and landmarks in image pixels, and what was computed for it."""

    bbox: np.ndarray  # x1, y1, x2, y2
    kps: np.ndarray  # (5, 2)
    score: float
    embedding: np.ndarray | None = None  # L2-normalised ArcFace embedding
    gender: str | None = None  # "F" / "M" (insightface's Face.sex)

    @property
    def area(self) -> float:
        return float((self.bbox[2] - self.bbox[0]) * (self.bbox[3] - self.bbox[1]))


# -- geometry ------------------------------------------------------------------------------------
def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity transform (rotation, uniform scale, shift) taking src points closest
    to dst in least squares (Umeyama 1991, as skimage's SimilarityTransform.estimate)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    n = src.shape[0]
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / n
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / ((s ** 2).sum() / n)
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m


def invert(m: np.ndarray) -> np.ndarray:
    """The inverse of a 2x3 affine matrix (cv2.invertAffineTransform)."""
    full = np.vstack([m, [0, 0, 1]])
    return np.linalg.inv(full)[:2]


def warp(img: Image.Image, m: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """Apply the 2x3 map `m` (source pixels -> output pixels) like cv2.warpAffine (black
    outside). PIL wants the opposite map, output -> source."""
    inv = invert(m)
    return img.transform(size, Image.Transform.AFFINE, data=tuple(inv.reshape(-1)),
                         resample=Image.Resampling.BILINEAR)


def norm_crop_matrix(kps: np.ndarray, size: int) -> np.ndarray:
    """insightface's estimate_norm: the ArcFace template scaled to 112k or 128k pixels."""
    if size % 112 == 0:
        ratio, dx = size / 112.0, 0.0
    else:
        ratio = size / 128.0
        dx = 8.0 * ratio
    dst = ARCFACE_DST * ratio
    dst[:, 0] += dx
    return similarity(kps, dst)


# -- detection -----------------------------------------------------------------------------------
def _nms(boxes: np.ndarray, scores: np.ndarray, thresh: float) -> list[int]:
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep = []
    while order.size:
        i = order[0]
        keep.append(int(i))
        xx1, yy1 = np.maximum(x1[i], x1[order[1:]]), np.maximum(y1[i], y1[order[1:]])
        xx2, yy2 = np.minimum(x2[i], x2[order[1:]]), np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0, xx2 - xx1 + 1) * np.maximum(0, yy2 - yy1 + 1)
        iou = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[1:][iou <= thresh]
    return keep


def _centres(rows: int, cols: int, stride: int, per_cell: int) -> np.ndarray:
    grid = np.stack(np.mgrid[:rows, :cols][::-1], axis=-1).astype(np.float32)
    grid = (grid * stride).reshape(-1, 2)
    return np.repeat(grid, per_cell, axis=0) if per_cell > 1 else grid


def detect(sess, img: Image.Image, thresh: float = 0.5, max_num: int = 0) -> list[Face]:
    """SCRFD: letterbox to 640x640 (top-left), score/box/landmark maps at strides 8/16/32."""
    rgb = img.convert("RGB")
    w, h = rgb.size
    if h > w:
        new_h, new_w = DET_SIZE, max(1, int(DET_SIZE * w / h))
    else:
        new_w, new_h = DET_SIZE, max(1, int(DET_SIZE * h / w))
    scale = new_h / h
    canvas = np.zeros((DET_SIZE, DET_SIZE, 3), np.float32)
    canvas[:new_h, :new_w] = np.asarray(rgb.resize((new_w, new_h), Image.Resampling.BILINEAR))
    blob = ((canvas - 127.5) / 128.0).transpose(2, 0, 1)[None]
    outs = sess.run(None, {sess.get_inputs()[0].name: blob})
    if len(outs) != 9:
        raise Unsupported(f"face detector has {len(outs)} outputs; sdgate needs SCRFD with "
                          "landmarks (9 outputs: scores, boxes, keypoints at 3 strides)",
                          param="model")
    boxes, points, scores = [], [], []
    for i, stride in enumerate((8, 16, 32)):
        sc = outs[i].reshape(-1)
        rows = cols = DET_SIZE // stride
        per_cell = max(1, sc.size // (rows * cols))
        c = _centres(rows, cols, stride, per_cell)
        d = outs[i + 3].reshape(-1, 4) * stride
        k = outs[i + 6].reshape(-1, 10) * stride
        pos = np.where(sc >= thresh)[0]
        if pos.size == 0:
            continue
        c, d, k = c[pos], d[pos], k[pos]
        boxes.append(np.stack([c[:, 0] - d[:, 0], c[:, 1] - d[:, 1],
                               c[:, 0] + d[:, 2], c[:, 1] + d[:, 3]], axis=-1))
        points.append(np.repeat(c, 5, axis=0).reshape(-1, 5, 2) + k.reshape(-1, 5, 2))
        scores.append(sc[pos])
    if not scores:
        return []
    b, p, s = np.concatenate(boxes) / scale, np.concatenate(points) / scale, np.concatenate(scores)
    faces = [Face(b[i], p[i], float(s[i])) for i in _nms(b, s, NMS_THRESH)]
    if max_num and len(faces) > max_num:
        # insightface's "default" metric: large faces near the centre win
        cx, cy = w / 2, h / 2

        def rank(f: Face) -> float:
            fx, fy = (f.bbox[0] + f.bbox[2]) / 2, (f.bbox[1] + f.bbox[3]) / 2
            return f.area - 2.0 * ((fx - cx) ** 2 + (fy - cy) ** 2)

        faces = sorted(faces, key=rank, reverse=True)[:max_num]
    return faces


# -- recognition and gender ----------------------------------------------------------------------
def embed(sess, img: Image.Image, face: Face) -> np.ndarray:
    """ArcFace: the aligned 112x112 crop, (x - 127.5) / 127.5, L2-normalised output."""
    dim = sess.get_inputs()[0].shape[2]
    size = dim if isinstance(dim, int) else 112
    crop = np.asarray(warp(img.convert("RGB"), norm_crop_matrix(face.kps, size), (size, size)),
                      np.float32)
    blob = ((crop - 127.5) / 127.5).transpose(2, 0, 1)[None]
    emb = sess.run(None, {sess.get_inputs()[0].name: blob})[0].reshape(-1)
    return emb / (np.linalg.norm(emb) or 1.0)


def _raw_pixels(model_path: Path) -> bool:
    """insightface's Attribute check: a graph that starts with Sub and Mul normalises itself."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    ops = {n.op_type for n in graph.node[:8]}
    return "Sub" in ops and "Mul" in ops


_raw_cache: dict[str, bool] = {}


def gender(sess, model_path: Path, img: Image.Image, face: Face) -> str:
    """genderage: a 96x96 crop centred on the box at 1.5x its size; argmax of the first two."""
    size = 96
    x1, y1, x2, y2 = face.bbox
    s = size / (max(x2 - x1, y2 - y1) * 1.5)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    m = np.array([[s, 0, size / 2 - cx * s], [0, s, size / 2 - cy * s]])
    crop = np.asarray(warp(img.convert("RGB"), m, (size, size)), np.float32)
    key = str(model_path)
    if key not in _raw_cache:
        _raw_cache[key] = _raw_pixels(model_path)
    blob = crop if _raw_cache[key] else (crop - 127.5) / 128.0
    pred = sess.run(None, {sess.get_inputs()[0].name: blob.transpose(2, 0, 1)[None]})[0][0]
    return "M" if int(np.argmax(pred[:2])) == 1 else "F"


class FaceAnalyser:
    """buffalo_l's models for one models folder: detect, then embed / sex on demand."""

    def __init__(self, models_dir: Path, device: str = "cpu"):
        self.pack = Path(models_dir) / PACK
        self.device = device

    def _session(self, name: str):
        path = self.pack / name
        if not path.is_file():
            raise ModelNotFound(f"insightface model {name} missing from <models_dir>/{PACK}",
                                param="model")
        return session(path, self.device)

    def faces(self, img: Image.Image, *, thresh: float = 0.5, max_num: int = 0,
              embeddings: bool = False, genders: bool = False) -> list[Face]:
        """Faces sorted largest first (ReActor's default face order, "large-small")."""
        found = detect(self._session(DETECTOR), img, thresh, max_num)
        found.sort(key=lambda f: f.area, reverse=True)
        if embeddings:
            rec = self._session(RECOGNISER)
            for f in found:
                f.embedding = embed(rec, img, f)
        if genders:
            ga = self._session(GENDERAGE)
            for f in found:
                f.gender = gender(ga, self.pack / GENDERAGE, img, f)
        return found

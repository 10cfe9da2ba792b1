"""Tiny random face models in the real formats: insightface's ONNX names and shapes, and a
spandrel-detected restorer .pth. The detector's outputs are constants a test chooses, so a test
knows where the faces are."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = [helper.make_opsetid("", 13)]
DET = 640
STRIDES = (8, 16, 32)
# ArcFace template proportions: eyes, nose, mouth corners as fractions of a 112 px face box
KPS_FRACTIONS = np.array([[38.29, 51.70], [73.53, 51.50], [56.03, 71.74], [41.55, 92.37],
                          [70.73, 92.20]]) / 112.0


def face_kps(box) -> np.ndarray:
    """Plausible landmarks for a face box (x1, y1, x2, y2)."""
    x1, y1, x2, y2 = box
    return np.array([x1, y1]) + KPS_FRACTIONS * np.array([x2 - x1, y2 - y1])


def _save(graph, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def write_detector(path: Path, faces: list[tuple], scale: float) -> Path:
    """SCRFD det_10g's interface: 'input.1' [1,3,?,?] -> scores/boxes/kps at strides 8/16/32,
    2 anchors per cell. `faces` are (box, score) in image pixels; `scale` is image -> 640."""
    scores = {s: np.zeros(((DET // s) ** 2 * 2, 1), np.float32) for s in STRIDES}
    boxes = {s: np.zeros(((DET // s) ** 2 * 2, 4), np.float32) for s in STRIDES}
    kps = {s: np.zeros(((DET // s) ** 2 * 2, 10), np.float32) for s in STRIDES}
    for box, score in faces:
        b = np.asarray(box, np.float64) * scale
        k = face_kps(box) * scale
        s = 8
        col, row = int(round((b[0] + b[2]) / 2 / s)), int(round((b[1] + b[3]) / 2 / s))
        idx = (row * (DET // s) + col) * 2
        cx, cy = col * s, row * s
        scores[s][idx, 0] = score
        boxes[s][idx] = [(cx - b[0]) / s, (cy - b[1]) / s, (b[2] - cx) / s, (b[3] - cy) / s]
        kps[s][idx] = ((k - [cx, cy]) / s).reshape(-1)
    consts = [scores[s] for s in STRIDES] + [boxes[s] for s in STRIDES] + \
        [kps[s] for s in STRIDES]
    names = [f"{448 + i}" for i in range(9)]  # det_10g's outputs are numbered node names too
    nodes = [helper.make_node("ReduceMean", ["input.1"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "zero"], ["nil"])]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero")]
    outputs = []
    for name, c in zip(names, consts):
        inits.append(numpy_helper.from_array(c, f"c{name}"))
        nodes.append(helper.make_node("Add", [f"c{name}", "nil"], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(c.shape)))
    graph = helper.make_graph(
        nodes, "scrfd_tiny",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "h", "w"])],
        outputs, inits)
    return _save(graph, path)


def write_recogniser(path: Path, seed: int = 0) -> Path:
    """w600k_r50's interface: 'input.1' [1,3,112,112] -> [1,512], depending on the pixels."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((192, 512)).astype(np.float32)
    nodes = [helper.make_node("AveragePool", ["input.1"], ["pool"], kernel_shape=[14, 14],
                              strides=[14, 14]),
             helper.make_node("Flatten", ["pool"], ["flat"]),
             helper.make_node("Gemm", ["flat", "w"], ["683"])]
    graph = helper.make_graph(
        nodes, "arcface_tiny",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, [1, 512])],
        [numpy_helper.from_array(w, "w")])
    return _save(graph, path)


def write_genderage(path: Path, male: bool) -> Path:
    """genderage's interface: 'data' [1,3,96,96] -> 'fc1' [1,3] (female, male, age/100);
    a graph starting with Sub and Mul (it normalises itself, as the real one does)."""
    pred = np.array([[0.1, 0.9, 0.3]] if male else [[0.9, 0.1, 0.3]], np.float32)
    nodes = [helper.make_node("Sub", ["data", "zero"], ["a"]),
             helper.make_node("Mul", ["a", "zero"], ["b"]),
             helper.make_node("ReduceMean", ["b"], ["m"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Unsqueeze", ["m", "ax"], ["m2"]),
             helper.make_node("Add", ["pred", "m2"], ["fc1"])]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero"),
             numpy_helper.from_array(np.array([1], np.int64), "ax"),
             numpy_helper.from_array(pred, "pred")]
    graph = helper.make_graph(
        nodes, "genderage_tiny",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 96, 96])],
        [helper.make_tensor_value_info("fc1", TensorProto.FLOAT, [1, 3])], inits)
    return _save(graph, path)


def write_swapper(path: Path, seed: int = 0) -> Path:
    """inswapper_128's interface: 'target' [1,3,128,128] + 'source' [1,512] -> 'output'
    [1,3,128,128] in 0-1; the last initializer is the [512,512] emap."""
    rng = np.random.default_rng(seed)
    conv = rng.standard_normal((3, 3, 1, 1)).astype(np.float32)
    proj = (rng.standard_normal((512, 3)) * 4).astype(np.float32)
    emap = rng.standard_normal((512, 512)).astype(np.float32) / np.sqrt(512)
    nodes = [helper.make_node("Conv", ["target", "conv"], ["t"]),
             helper.make_node("Gemm", ["source", "proj"], ["s"]),
             helper.make_node("Reshape", ["s", "shape"], ["s4"]),
             helper.make_node("Add", ["t", "s4"], ["z"]),
             helper.make_node("Sigmoid", ["z"], ["output"])]
    inits = [numpy_helper.from_array(conv, "conv"), numpy_helper.from_array(proj, "proj"),
             numpy_helper.from_array(np.array([1, 3, 1, 1], np.int64), "shape"),
             numpy_helper.from_array(emap, "emap")]
    graph = helper.make_graph(
        nodes, "inswapper_tiny",
        [helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, 3, 128, 128]),
         helper.make_tensor_value_info("source", TensorProto.FLOAT, [1, 512])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 128, 128])], inits)
    return _save(graph, path)


def write_restorer(path: Path, seed: int = 0) -> Path:
    """A 1x SRVGGNetCompact .pth: spandrel detects it from its keys. A random GFPGAN is fixed
    at 512 px / ~80M parameters (340 MB), too big for a fast test; the restore path is the
    same spandrel load + run for any architecture."""
    import torch
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(seed)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def write_face_model(path: Path, embedding: np.ndarray) -> Path:
    """A ReActor face model: safetensors of insightface Face fields (embedding and others)."""
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"embedding": embedding.astype(np.float32),
               "bbox": np.zeros(4, np.float32), "det_score": np.ones(1, np.float32)}, str(path))
    return path


def write_pack(root: Path, faces: list[tuple], scale: float, male: bool = True) -> Path:
    """buffalo_l + inswapper under a models folder (the layout shared/faces.py reads)."""
    pack = root / "insightface" / "models" / "buffalo_l"
    write_detector(pack / "det_10g.onnx", faces, scale)
    write_recogniser(pack / "w600k_r50.onnx")
    write_genderage(pack / "genderage.onnx", male)
    write_swapper(root / "insightface" / "inswapper_128.onnx")
    return root


def write_yolo(path: Path, boxes: list[tuple], size: tuple[int, int], classes: int = 1) -> Path:
    """A YOLOv8 detection model's ONNX export interface: 'images' [1,3,640,640] -> 'output0'
    [1, 4 + classes, 8400] (centre x, centre y, width, height in letterboxed pixels, then class
    scores). `boxes` are (box, score) in the pixels of an image of `size`, letterboxed as
    ultralytics does (scaled to fit, centred on grey)."""
    w, h = size
    r = min(DET / w, DET / h)
    left = int(round((DET - round(w * r)) / 2 - 0.1))
    top = int(round((DET - round(h * r)) / 2 - 0.1))
    out = np.zeros((1, 4 + classes, 8400), np.float32)
    for i, (box, score) in enumerate(boxes):
        x1, y1, x2, y2 = (np.asarray(box, np.float64) * r) + [left, top, left, top]
        out[0, :4, i * 7] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
        out[0, 4, i * 7] = score
    nodes = [helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
             helper.make_node("Mul", ["mean", "zero"], ["nil"]),
             helper.make_node("Add", ["pred", "nil"], ["output0"])]
    inits = [numpy_helper.from_array(np.zeros((), np.float32), "zero"),
             numpy_helper.from_array(out, "pred")]
    graph = helper.make_graph(
        nodes, "yolov8_tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, DET, DET])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(out.shape))], inits)
    return _save(graph, path)


def write_codeformer(path: Path, seed: int = 0) -> Path:
    """A random CodeFormer in its real key layout (spandrel_extra_arches detects and sizes it):
    the smallest transformer the loader reads back (dim 64, one layer, 16 codes); the VQ encoder
    and generator are fixed by the architecture (~68M parameters, saved in half precision)."""
    import torch
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    torch.manual_seed(seed)
    net = CodeFormer(dim_embd=64, n_head=8, n_layers=1, codebook_size=16, latent_size=256,
                     connect_list=["32"], fix_modules=["quantize", "generator"])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() for k, v in net.state_dict().items()}, path)
    return path

"""ADetailer in the engine: YOLO (ONNX export) and SCRFD detections, masks, region inpaint."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from shared import adetailer as types
from shared.engine import adetailer, ops
from shared.engine.faces import analysis
from shared.errors import ModelNotFound, Unsupported
from shared.generation import GenerationRequest
from tests.engine.faces_assets import write_pack, write_yolo
from tests.engine.test_faces import BIG, H, SCALE, SMALL, W, changed_outside, decode, noise, png

BOX = (150.0, 30.0, 214.0, 94.0)  # the YOLO model's one detection


@pytest.fixture(scope="module")
def detector_root(models_dir):
    write_pack(models_dir, [(BIG, 0.9), (SMALL, 0.8)], SCALE)  # the face pack (SCRFD)
    write_yolo(models_dir / "adetailer" / "face_yolov8n.onnx", [(BOX, 0.9), (BIG, 0.2)], (W, H))
    return models_dir


def test_yolo_export_decodes_the_forced_box(detector_root):
    sess = analysis.session(detector_root / "adetailer" / "face_yolov8n.onnx")
    found = adetailer.yolo(sess, Image.fromarray(noise(0)), 0.3)
    assert len(found) == 1 and found[0][1] == pytest.approx(0.9)
    np.testing.assert_allclose(found[0][0], BOX, atol=0.5)
    assert len(adetailer.yolo(sess, Image.fromarray(noise(0)), 0.1)) == 2


def test_detector_names_and_refusal(detector_root):
    assert types.detectors(detector_root) == ["None", "face_yolov8n.pt", "face_scrfd_10g"]
    assert types.detector_file(detector_root, "face_yolov8n.onnx").name == "face_yolov8n.onnx"
    with pytest.raises(ModelNotFound, match="face_yolov8n.pt"):
        types.detector_file(detector_root, "hand_yolov8n.pt")
    with pytest.raises(ModelNotFound):
        types.detector_file(detector_root, "../adetailer/face_yolov8n.pt")


def test_masks_dilate_offset_merge_invert():
    unit = types.ADetailerUnit(model="x", dilate_erode=5, x_offset=3, y_offset=2)
    (m,) = adetailer.masks([((10, 10, 20, 20), 0.9)], unit, (64, 64))
    assert m.getbbox() == (10 - 2 + 3, 10 - 2 - 2, 20 + 2 + 3, 20 + 2 - 2)
    two = [((0, 0, 8, 8), 0.9), ((30, 30, 40, 40), 0.8)]
    merged = adetailer.masks(two, types.ADetailerUnit(model="x", dilate_erode=0,
                                                      merge_invert="Merge"), (64, 64))
    assert len(merged) == 1 and merged[0].getbbox() == (0, 0, 40, 40)
    inv = adetailer.masks(two, types.ADetailerUnit(model="x", dilate_erode=0,
                                                   merge_invert="Merge and Invert"), (64, 64))
    assert np.asarray(inv[0])[0, 0] == 0 and np.asarray(inv[0])[20, 20] == 255
    k = adetailer.select(two, types.ADetailerUnit(model="x", mask_k=1), (64, 64))
    assert k == [two[1]]  # the larger box
    assert adetailer.select(two, types.ADetailerUnit(model="x", min_ratio=0.02), (64, 64)) == \
        [two[1]]


def test_prompts_sep_and_prompt_token():
    assert adetailer.prompts("", "base") == ["base"]
    assert adetailer.prompts("a [PROMPT] [SEP] [SEP]b", "base") == ["a base", "base", "b"]


def _run(engine, model: str, **unit):
    image = png(noise(7))
    base = GenerationRequest(prompt="a face", width=W, height=H, steps=4, seed=5)
    req = types.ADetailerRequest(image=image, base=base, units=[
        types.ADetailerUnit(model=model, strength=0.75, dilate_erode=0, mask_blur=0, **unit)])
    return noise(7).astype(int), ops.run(engine, "adetailer", req)


@pytest.mark.parametrize("model, box", [("face_yolov8n.pt", BOX), ("face_scrfd_10g", None)])
def test_only_the_detected_regions_change(engine, detector_root, model, box):
    before, got = _run(engine, model)
    diff = np.abs(decode(got.image) - before)
    boxes = [box] if box else [BIG, SMALL]
    assert got.regions == len(boxes)
    for b in boxes:
        x1, y1, x2, y2 = (int(v) for v in b)
        assert diff[y1:y2, x1:x2].mean() > 5  # repainted inside the box
    assert changed_outside(diff, 0.0, *boxes) == 0  # and not one pixel outside it


def test_whole_image_inpaint_still_keeps_the_outside(engine, detector_root):
    before, got = _run(engine, "face_yolov8n.pt", only_masked=False)
    diff = np.abs(decode(got.image) - before)
    assert got.regions == 1 and changed_outside(diff, 0.0, BOX) == 0


def test_nothing_detected_returns_the_image_as_is(engine, detector_root):
    _, got = _run(engine, "face_yolov8n.pt", confidence=0.95)
    assert got.regions == 0 and got.image == png(noise(7))


def test_segmentation_exports_are_refused(engine, tmp_path):
    from types import SimpleNamespace

    import onnx
    from onnx import TensorProto, helper

    path = tmp_path / "adetailer" / "person_yolov8n-seg.onnx"
    path.parent.mkdir(parents=True)
    a = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 640, 640])
    o0 = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 640, 640])
    o1 = helper.make_tensor_value_info("output1", TensorProto.FLOAT, [1, 3, 640, 640])
    g = helper.make_graph([helper.make_node("Identity", ["images"], ["output0"]),
                           helper.make_node("Identity", ["images"], ["output1"])], "seg", [a],
                          [o0, o1])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    eng = SimpleNamespace(registry=SimpleNamespace(root=tmp_path), device="cpu")
    unit = types.ADetailerUnit(model="person_yolov8n-seg.pt")
    with pytest.raises(Unsupported, match="segmentation"):
        adetailer.detect(eng, unit, Image.fromarray(noise(0)))

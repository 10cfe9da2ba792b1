"""Face detection, swap and restoration on tiny random ONNX / spandrel models (real formats)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from shared.engine import ops
from shared.engine.faces import analysis
from shared.errors import InvalidRequest, ModelNotFound, ValidationFailed
from shared.faces import FaceRestoreRequest, FaceSwapRequest, Restore
from tests.engine.faces_assets import (face_kps, write_codeformer, write_face_model, write_pack,
                                      write_restorer)

W, H = 256, 128  # letterboxed to 640x320: image -> detector scale 2.5
SCALE = 640 / W
BIG = (24.0, 24.0, 104.0, 104.0)  # 80 px: face 0 (largest first)
SMALL = (160.0, 40.0, 216.0, 96.0)  # 56 px: face 1


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def noise(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


@pytest.fixture
def engine(tmp_path):
    """What a face op reads from the engine: the models folder, device, pixel cap."""
    write_pack(tmp_path, [(BIG, 0.9), (SMALL, 0.8)], SCALE)
    return SimpleNamespace(registry=SimpleNamespace(root=tmp_path), device="cpu",
                           max_image_pixels=4096 * 4096)


def region(box, grow: float) -> tuple[slice, slice]:
    x1, y1, x2, y2 = box
    gx, gy = (x2 - x1) * grow, (y2 - y1) * grow
    return (slice(max(0, int(y1 - gy)), int(y2 + gy) + 1),
            slice(max(0, int(x1 - gx)), int(x2 + gx) + 1))


def changed_outside(diff: np.ndarray, grow: float, *boxes) -> int:
    keep = np.ones(diff.shape[:2], bool)
    for box in boxes:
        keep[region(box, grow)] = False
    return int(diff[keep].sum())


def test_detector_finds_the_forced_boxes_and_landmarks(engine):
    faces = analysis.FaceAnalyser(engine.registry.root).faces(Image.fromarray(noise(0)))
    assert len(faces) == 2
    np.testing.assert_allclose(faces[0].bbox, BIG, atol=0.5)
    np.testing.assert_allclose(faces[1].bbox, SMALL, atol=0.5)
    np.testing.assert_allclose(faces[0].kps, face_kps(BIG), atol=0.5)


def test_alignment_maps_landmarks_onto_the_arcface_template():
    kps = face_kps((10, 20, 90, 100))
    m = analysis.norm_crop_matrix(kps, 112)
    mapped = kps @ m[:, :2].T + m[:, 2]
    np.testing.assert_allclose(mapped, analysis.ARCFACE_DST, atol=1.5)


@pytest.mark.parametrize("index,box,other", [(0, BIG, SMALL), (1, SMALL, BIG)])
def test_swap_changes_only_the_chosen_face(engine, index, box, other):
    target = noise(1)
    req = FaceSwapRequest(source_image=png(noise(2)), target_image=png(target),
                          face_index=[index])
    got = ops.run(engine, "face_swap", req)
    out = decode(got.image)
    diff = np.abs(out - target.astype(int))
    assert got.faces == 1 and out.shape == target.shape
    assert diff[region(box, 0)].mean() > 10  # the face itself is replaced
    assert changed_outside(diff, 0.5, box) == 0  # and nothing away from it
    assert diff[region(other, 0)].sum() == 0


def test_source_face_index_picks_the_embedding(engine):
    target, source = png(noise(1)), png(noise(2))
    first = ops.run(engine, "face_swap", FaceSwapRequest(source_image=source,
                                                         target_image=target))
    second = ops.run(engine, "face_swap", FaceSwapRequest(
        source_image=source, target_image=target, source_faces_index=[1]))
    assert first.image != second.image


def test_two_faces_swapped_in_one_call(engine):
    target = noise(1)
    got = ops.run(engine, "face_swap", FaceSwapRequest(
        source_image=png(noise(2)), target_image=png(target), source_faces_index=[0, 1],
        face_index=[0, 1]))
    diff = np.abs(decode(got.image) - target.astype(int))
    assert got.faces == 2
    assert diff[region(BIG, 0)].mean() > 10 and diff[region(SMALL, 0)].mean() > 10


def test_face_model_replaces_the_source_image(engine):
    root = engine.registry.root
    emb = np.random.default_rng(3).standard_normal(512)
    write_face_model(root / "reactor" / "faces" / "elena.safetensors", emb)
    target = noise(1)
    got = ops.run(engine, "face_swap", FaceSwapRequest(target_image=png(target),
                                                       face_model="elena.safetensors"))
    assert got.faces == 1
    assert np.abs(decode(got.image) - target)[region(BIG, 0)].mean() > 10


def test_gender_filter_skips_faces_of_the_other_gender(engine):
    target = png(noise(1))  # the tiny genderage model says "male" for every face
    female = ops.run(engine, "face_swap", FaceSwapRequest(
        source_image=png(noise(2)), target_image=target, gender_target=1))
    male = ops.run(engine, "face_swap", FaceSwapRequest(
        source_image=png(noise(2)), target_image=target, gender_target=2))
    assert female.faces == 0 and female.image != male.image and male.faces == 1


@pytest.mark.parametrize("kw,err", [
    (dict(face_index=[2]), ValidationFailed),
    (dict(source_faces_index=[5]), ValidationFailed),
    (dict(det_thresh=0.95), InvalidRequest),  # no face above the threshold
    (dict(model="nope.onnx"), ModelNotFound),
    (dict(model="../inswapper_128.onnx"), ModelNotFound),
    (dict(face_model="ghost"), ModelNotFound),
])
def test_bad_requests_are_refused(engine, kw, err):
    req = FaceSwapRequest(source_image=png(noise(2)), target_image=png(noise(1)), **kw)
    with pytest.raises(err):
        ops.run(engine, "face_swap", req)


def test_missing_detector_is_a_missing_model(engine):
    (engine.registry.root / "insightface/models/buffalo_l/det_10g.onnx").unlink()
    with pytest.raises(ModelNotFound):
        ops.run(engine, "face_swap", FaceSwapRequest(source_image=png(noise(2)),
                                                     target_image=png(noise(1))))


def test_restoration_changes_faces_and_visibility_zero_changes_nothing(engine):
    write_restorer(engine.registry.root / "GFPGAN" / "GFPGANv1.4.pth")
    image = noise(4)
    full = ops.run(engine, "face_restore",
                   FaceRestoreRequest(image=png(image), restore=Restore(model="GFPGAN")))
    none = ops.run(engine, "face_restore", FaceRestoreRequest(
        image=png(image), restore=Restore(model="GFPGAN", visibility=0)))
    diff = np.abs(decode(full.image) - image)
    assert full.faces == 2 and diff[region(BIG, 0)].mean() > 5
    assert diff[region(SMALL, 0)].mean() > 5
    assert changed_outside(diff, 0.7, BIG, SMALL) == 0
    assert (decode(none.image) == image).all()
    with pytest.raises(ModelNotFound):
        ops.run(engine, "face_restore", FaceRestoreRequest(
            image=png(image), restore=Restore(model="CodeFormer")))


def test_codeformer_restores_through_spandrel_extra_arches_with_its_weight(engine, tmp_path):
    """A tiny random CodeFormer (the extra-architectures loader): faces change, nothing else;
    codeformer_weight reaches the network; visibility 0 is the image as sent."""
    path = write_codeformer(engine.registry.root / "Codeformer" / "codeformer-v0.1.0.pth")
    try:
        image = noise(6)

        def run(**kw):
            return ops.run(engine, "face_restore", FaceRestoreRequest(
                image=png(image), restore=Restore(model="CodeFormer", **kw)))

        low, high = run(codeformer_weight=0.0), run(codeformer_weight=1.0)
        diff = np.abs(decode(low.image) - image)
        assert low.faces == 2 and diff[region(BIG, 0)].mean() > 5
        assert changed_outside(diff, 0.7, BIG, SMALL) == 0
        assert (decode(low.image) != decode(high.image)).any()  # the fidelity weight is used
        assert (decode(run(visibility=0).image) == image).all()
    finally:
        path.unlink()


def write_checker(folder, flag_all: bool):
    """The tiny safety checker saved where the engine's shared checker looks for it."""
    from shared.engine.tiny import build_safety_checker

    checker, processor = build_safety_checker()
    if flag_all:  # thresholds below any similarity: every image flagged
        checker.concept_embeds_weights.data.fill_(-2.0)
    checker.save_pretrained(folder)
    processor.save_pretrained(folder)


@pytest.mark.parametrize("flag_all", [False, True])
def test_safety_screening_of_swap_inputs(engine, flag_all):
    from shared.engine import safety
    from shared.errors import ModerationBlocked

    write_checker(engine.registry.root / "safety_checker", flag_all)
    engine.shared_checker = safety.SharedChecker(engine.registry.root)
    req = FaceSwapRequest(source_image=png(noise(2)), target_image=png(noise(1)),
                          safety_checker=True)
    if flag_all:
        with pytest.raises(ModerationBlocked, match="source_image"):
            ops.run(engine, "face_swap", req)
    else:
        assert ops.run(engine, "face_swap", req).faces == 1


def test_safety_screening_without_a_checker_is_refused(engine):
    from shared.errors import Unsupported

    req = FaceSwapRequest(source_image=png(noise(2)), target_image=png(noise(1)),
                          safety_checker=True)
    with pytest.raises(Unsupported, match="safety checker"):
        ops.run(engine, "face_swap", req)


def test_on_generated_skips_missing_faces_and_keeps_the_infotext(engine):
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a face\nSteps: 2")
    buf = io.BytesIO()
    Image.fromarray(noise(1)).save(buf, format="PNG", pnginfo=info)
    target = buf.getvalue()
    missing = ops.run(engine, "face_swap", FaceSwapRequest(
        source_image=png(noise(2)), target_image=target, face_index=[5], on_generated=True))
    assert missing.faces == 0 and missing.image == target
    got = ops.run(engine, "face_swap", FaceSwapRequest(
        source_image=png(noise(2)), target_image=target, face_index=[1, 5], on_generated=True))
    assert got.faces == 1
    assert Image.open(io.BytesIO(got.image)).info["parameters"] == "a face\nSteps: 2"

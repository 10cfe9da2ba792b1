"""ReActor as an A1111 `alwayson_scripts.reactor.args` entry: its positional args (upstream's
`FaceSwapScript.process` order, scripts/reactor_faceswap.py) -> the engine's face swap request,
applied to the init image (img2img "swap in source") and/or each generated image."""

from __future__ import annotations

import os

from pydantic import ValidationError

from shared.dialects import reactor
from shared.errors import InvalidRequest, Unsupported, from_pydantic
from shared.faces import FaceSwapRequest
from shared.images import b64decode_strict, check_image

SCRIPT = "reactor"
FIELD = "alwayson_scripts.reactor.args"
# (name, default) in upstream's order; the API example documents indices 0-29, 30 is the tab
ARGS = (
    ("img", None), ("enable", False), ("source_faces_index", "0"), ("faces_index", "0"),
    ("model", "inswapper_128.onnx"), ("face_restorer_name", "None"),
    ("face_restorer_visibility", 1.0), ("restore_first", True), ("upscaler_name", "None"),
    ("upscaler_scale", 1.0), ("upscaler_visibility", 1.0), ("swap_in_source", False),
    ("swap_in_generated", True), ("console_logging_level", 1), ("gender_source", 0),
    ("gender_target", 0), ("save_original", False), ("codeformer_weight", 0.5),
    ("source_hash_check", True), ("target_hash_check", False), ("device", "CPU"),
    ("mask_face", False), ("select_source", 0), ("face_model", "None"), ("source_folder", ""),
    ("imgs", None), ("random_image", False), ("upscale_force", False), ("det_thresh", 0.5),
    ("det_maxnum", 0), ("selected_tab", "tab_single"),
)
NAMES = [name for name, _ in ARGS]
GENDERS = {"no": 0, "female only": 1, "male only": 2}
SOURCES = {"image(s)": 0, "image": 0, "face model": 1, "folder": 2}


def is_script(name: str) -> bool:
    return name.strip().lower() == SCRIPT


def _named(raw) -> dict:
    """The args as a name -> value dict (a positional list as upstream, or named values)."""
    if isinstance(raw, dict) and "args" in raw:
        raw = raw["args"]
    if isinstance(raw, dict):
        unknown = sorted(set(raw) - set(NAMES))
        if unknown:
            raise InvalidRequest(f"{FIELD}: unknown ReActor args {unknown}", param=FIELD)
        return {**dict(ARGS), **raw}
    if not isinstance(raw, list):
        raise InvalidRequest(f"{FIELD} must be ReActor's list of args", param=FIELD)
    if len(raw) > len(ARGS):
        raise InvalidRequest(f"{FIELD}: ReActor takes at most {len(ARGS)} args, got {len(raw)}",
                             param=FIELD)
    return {**dict(ARGS), **dict(zip(NAMES, raw))}


def _indices(value, name: str) -> list[int]:
    """ReActor's comma-separated face numbers ("0,2,1"); non-numbers dropped, empty -> [0]."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, str):
        raise InvalidRequest(f"{FIELD}.{name}: comma-separated face numbers, e.g. '0,1'",
                             param=f"{FIELD}.{name}")
    out = [int(x) for x in value.strip().replace(" ", "").strip(",").split(",") if x.isnumeric()]
    return out or [0]


def _choice(value, names: dict, name: str) -> int:
    if value is None:
        return 0
    if isinstance(value, int | float) and not isinstance(value, bool) and value in (0, 1, 2):
        return int(value)
    key = str(value).strip().lower()
    if key not in names:
        raise InvalidRequest(f"{FIELD}.{name}={value!r}: choose 0, 1, 2 or one of "
                             f"{list(names)}", param=f"{FIELD}.{name}")
    return names[key]


def parse(raw, max_px: int, safety: bool) -> tuple[FaceSwapRequest, bool, bool] | None:
    """(swap request without its target, swap in source, swap in generated), or None when the
    script is disabled. What would change the image but is not done here is refused."""
    a = _named(raw)
    if not a["enable"]:
        return None
    field = lambda n: f"{FIELD}.{NAMES.index(n)}"  # noqa: E731 (upstream's arg index)
    if a["upscaler_name"] not in (None, "None", "") and (a["upscaler_scale"] not in (1, 1.0)
                                                          or a["upscale_force"]):
        raise Unsupported("ReActor's upscaler is not supported; send upscaler 'None' and "
                          "upscale with hires fix or /sdapi/v1/extra-single-image",
                          param=field("upscaler_name"))
    refused = {"mask_face": "needs a face parsing model sdgate does not have",
               "save_original": "(returning the unswapped images too) is not offered",
               "random_image": "(a server folder of source images) is not offered"}
    for name, why in refused.items():
        if a[name]:
            raise Unsupported(f"ReActor {name} {why}", param=field(name))
    select = _choice(a["select_source"], SOURCES, "select_source")
    if select == 2 or a["source_folder"] or a["imgs"] or a["selected_tab"] not in (
            None, "", "tab_single"):
        raise Unsupported("ReActor's source folder / multiple source images are not offered; "
                          "send one source image (arg 0) or a face model", param=field("imgs"))
    source = face_model = None
    if select == 1:
        face_model = str(a["face_model"] or "None")
        if face_model == "None":
            raise Unsupported("ReActor select_source 1 needs face_model (arg 23)",
                              param=field("face_model"))
    else:
        img = a["img"]
        if not isinstance(img, str) or not img:
            raise InvalidRequest(f"{field('img')}: ReActor needs a source image (base64)",
                                 param=field("img"))
        if img.startswith(("http://", "https://")):
            raise Unsupported(f"{field('img')}: image URLs are not fetched; send base64",
                              param=field("img"))
        source = check_image(b64decode_strict(img, field("img")), max_px, field("img"))
    api = dict(face_restorer=str(a["face_restorer_name"] or "None"),
               restorer_visibility=a["face_restorer_visibility"],
               codeformer_weight=a["codeformer_weight"], restore_first=int(bool(
                   a["restore_first"])),
               model=os.path.basename(str(a["model"])),  # upstream joins it to its models dir
               gender_source=_choice(a["gender_source"], GENDERS, "gender_source"),
               gender_target=_choice(a["gender_target"], GENDERS, "gender_target"),
               det_thresh=a["det_thresh"], det_maxnum=a["det_maxnum"])
    try:
        req = reactor.ReactorImageRequest(**api)
    except ValidationError as e:
        raise from_pydantic(e, FIELD + ".") from e
    swap = FaceSwapRequest(
        target_image=b"", source_image=source, face_model=face_model,
        source_faces_index=_indices(a["source_faces_index"], "source_faces_index"),
        face_index=_indices(a["faces_index"], "faces_index"), model=req.model,
        gender_source=req.gender_source, gender_target=req.gender_target,
        det_thresh=req.det_thresh, det_maxnum=req.det_maxnum,
        restore=reactor.restore_of(req), restore_first=bool(req.restore_first),
        on_generated=True, safety_checker=safety)
    return swap, bool(a["swap_in_source"]), bool(a["swap_in_generated"])

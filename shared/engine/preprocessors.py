"""ControlNet preprocessors that need no weights (sd-webui-controlnet's names and defaults).

Each takes an RGB PIL image (already resized so its short side is the processor resolution) and
returns the control image. Annotators that need weights (depth, openpose, ...) are refused with
the name of what to install: nothing is downloaded at run time.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from shared.errors import InvalidRequest, Unsupported

# module -> (threshold_a default, threshold_b default), as sd-webui-controlnet's sliders
DEFAULTS = {"none": (None, None), "canny": (100.0, 200.0), "invert": (None, None),
            "threshold": (127.0, None), "scribble_xdog": (32.0, None),
            "tile_resample": (1.0, None), "blur_gaussian": (9.0, None), "shuffle": (None, None)}
ALIASES = {"invert (from white bg & black line)": "invert", "blur": "blur_gaussian",
           "scribble": "scribble_xdog", "binary": "threshold", "tile": "tile_resample"}
# Annotators that need weights: module prefix -> what upstream loads for it.
NEED_WEIGHTS = {
    "depth": "MiDaS / LeReS / ZoeDepth depth annotator weights (lllyasviel/Annotators)",
    "normal": "the normal-map annotator weights (BAE normal, lllyasviel/Annotators)",
    "openpose": "the OpenPose body/hand/face annotator weights (lllyasviel/Annotators)",
    "dw_openpose": "the DWPose ONNX weights (yzd-v/DWPose)",
    "lineart": "the lineart annotator weights (sk_model.pth, lllyasviel/Annotators)",
    "softedge": "the HED / PiDiNet annotator weights (lllyasviel/Annotators)",
    "scribble_hed": "the HED annotator weights (ControlNetHED.pth, lllyasviel/Annotators)",
    "scribble_pidinet": "the PiDiNet annotator weights (table5_pidinet.pth)",
    "mlsd": "the M-LSD line detector weights (mlsd_large_512_fp32.pth)",
    "seg": "the segmentation annotator weights (OneFormer / UniFormer, lllyasviel/Annotators)",
    "inpaint": "inpaint preprocessors (not implemented by sdgate)",
    "reference": "reference-only attention injection (not implemented by sdgate)",
    "ip-adapter": "an IP-Adapter model (an image prompt, not a control image: A1111 units with "
                  "an ip-adapter_* module and IP-Adapter model, ModelsLab ip_adapter_id)",
    "mediapipe_face": "mediapipe (face mesh)",
    "recolor": "recolor preprocessors (not implemented by sdgate)",
    "t2ia": "T2I-Adapter preprocessors (not implemented by sdgate)",
}


def canonical(module: str | None) -> str:
    """The preprocessor's own name for a module name or alias; a 4xx naming the choices."""
    name = (module or "none").strip()
    name = ALIASES.get(name.lower(), name.lower())
    if name in DEFAULTS:
        return name
    for prefix, need in NEED_WEIGHTS.items():
        if name.startswith(prefix):
            raise Unsupported(f"ControlNet module {module!r} needs {need}, which this server does "
                              f"not have; modules without weights: {sorted(DEFAULTS)}",
                              param="module")
    raise InvalidRequest(f"unknown ControlNet module {module!r}; choose one of "
                         f"{sorted(DEFAULTS)}", param="module")


def _arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


def run(module: str, img: Image.Image, a: float | None = None, b: float | None = None,
        seed: int = 0) -> Image.Image:
    """The control image of `img` by the preprocessor `module` (thresholds None: defaults)."""
    import cv2

    name = canonical(module)
    da, db = DEFAULTS[name]
    a = da if a is None or a < 0 else a  # upstream sends -1 for "default"
    b = db if b is None or b < 0 else b
    x = _arr(img)
    if name == "none":
        out = x
    elif name == "canny":
        out = cv2.Canny(x, int(a), int(b))
    elif name == "invert":
        out = 255 - x
    elif name == "threshold":
        grey = cv2.cvtColor(x, cv2.COLOR_RGB2GRAY)
        out = np.where(grey > a, 255, 0).astype(np.uint8)
    elif name == "scribble_xdog":  # upstream's difference of Gaussians, thresholded
        g = x.astype(np.float32)
        dog = cv2.GaussianBlur(g, (0, 0), 0.5) - cv2.GaussianBlur(g, (0, 0), 5.0)
        dog = dog.min(axis=2)
        out = ((-dog > a) * 255).astype(np.uint8)
    elif name == "tile_resample":  # downsample by the rate (the tile model sharpens it back)
        rate = max(1.0, a)
        h, w = x.shape[:2]
        out = cv2.resize(x, (max(1, int(w / rate)), max(1, int(h / rate))),
                         interpolation=cv2.INTER_AREA)
    elif name == "blur_gaussian":
        out = cv2.GaussianBlur(x, (0, 0), max(0.01, a))
    else:  # shuffle: upstream's content shuffle, a random smooth warp of the picture
        out = _shuffle(x, seed)
    return Image.fromarray(out).convert("RGB")


def _shuffle(x: np.ndarray, seed: int) -> np.ndarray:
    import cv2

    h, w = x.shape[:2]
    rng = np.random.default_rng(seed)
    f = 256  # upstream's default flow scale
    flow = [cv2.resize(rng.uniform(0, 1, (f // 32 + 1, f // 32 + 1)).astype(np.float32), (w, h),
                       interpolation=cv2.INTER_CUBIC) for _ in range(2)]
    mx = (flow[0] * (w - 1)).astype(np.float32)
    my = (flow[1] * (h - 1)).astype(np.float32)
    return cv2.remap(x, mx, my, cv2.INTER_LINEAR)

"""Image-to-image models (upscalers, face restorers) loaded with spandrel, kept warm in an LRU.

spandrel (MIT) detects the architecture from the state dict, as ComfyUI and Forge do; its extra
architectures package (CodeFormer and others under non-commercial licences) is registered too.
spandrel imports torchvision: locally that is the torch 2.14.1 + torchvision 0.29.1 pair from the
Makefile, on Modal the GPU image's pins.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from shared.errors import Unsupported

MAX_LOADED = 4

_lock = threading.Lock()
_cache: OrderedDict[tuple, object] = OrderedDict()
_extra_installed = False


def _loader(device: str):
    global _extra_installed
    import spandrel

    if not _extra_installed:
        try:
            import spandrel_extra_arches

            spandrel_extra_arches.install()
        except ImportError:  # optional: only the non-commercial architectures need it
            pass
        _extra_installed = True
    return spandrel.ModelLoader(device=device)


def load(path: Path, device: str = "cpu"):
    """The model descriptor of a weights file (loaded once per file and device), in eval mode."""
    import spandrel

    path = Path(path)
    key = (str(path), path.stat().st_mtime_ns, device)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        try:
            model = _loader(device).load_from_file(str(path))
        except spandrel.UnsupportedModelError as e:
            raise Unsupported(f"{path.name}: not an architecture spandrel can load ({e})") from e
        model.eval()
        _cache[key] = model
        while len(_cache) > MAX_LOADED:
            _cache.popitem(last=False)
        return model


def run(model, image):
    """Apply a loaded image-to-image model to a PIL image; returns a PIL image (RGB)."""
    import numpy as np
    import torch
    from PIL import Image

    arr = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    x = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).to(model.device)
    with torch.inference_mode():
        y = model(x.to(next(model.model.parameters()).dtype))
    out = y.squeeze(0).float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray((out * 255.0 + 0.5).astype(np.uint8))

"""Booru tags for A1111's `interrogate` with model "deepdanbooru": a WD14-format ONNX tagger.

The folder holds `model.onnx` (NHWC float input, 0-255 BGR, square; sigmoid scores out) and
`selected_tags.csv` (tag_id,name,category,count; category 9 are ratings, skipped as upstream
skips `rating:` tags). The caption follows upstream's deepbooru.tag_multi: tags at or above the
threshold, alphabetical or by score, underscores as spaces, brackets escaped, filtered tags
dropped, `(tag:0.987)` with ranks.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
from PIL import Image

from shared.errors import ModelNotFound

RATING = "9"


def tags(folder: Path) -> list[tuple[str, str]]:
    """(name, category) per output of the tagger."""
    with open(folder / "selected_tags.csv", newline="", encoding="utf8") as f:
        return [(row["name"], str(row.get("category", "0"))) for row in csv.DictReader(f)]


def scores(folder: Path, image: Image.Image, device: str = "cpu") -> np.ndarray:
    """The tagger's score per tag for one image (white-padded square, resized, BGR)."""
    from shared.engine.faces.analysis import session

    sess = session(folder / "model.onnx", device)
    inp = sess.get_inputs()[0]
    side = int(inp.shape[1]) if isinstance(inp.shape[1], int) else 448
    img = image.convert("RGB")
    square = Image.new("RGB", (max(img.size),) * 2, (255, 255, 255))
    square.paste(img, ((square.width - img.width) // 2, (square.height - img.height) // 2))
    arr = np.asarray(square.resize((side, side), Image.BICUBIC), np.float32)[:, :, ::-1]
    return sess.run(None, {inp.name: np.ascontiguousarray(arr[None])})[0][0]


def caption(folder: Path, image: Image.Image, req, device: str = "cpu") -> str:
    if not (folder / "model.onnx").is_file() or not (folder / "selected_tags.csv").is_file():
        raise ModelNotFound("interrogate model deepdanbooru needs a WD14-format tagger "
                            f"(model.onnx + selected_tags.csv) in <models_dir>/{folder.name}; "
                            "none is installed", param="model")
    names = tags(folder)
    probs = scores(folder, image, device)
    found = [(name, float(p)) for (name, cat), p in zip(names, probs)
             if cat != RATING and p >= req.threshold]
    found.sort(key=lambda t: t[0] if req.sort_alpha else -t[1])
    skip = {t.strip() for t in req.filter_tags}
    out = []
    for name, p in found:
        if name in skip:
            continue
        text = name.replace("_", " ") if req.use_spaces else name
        if req.escape:
            text = re.sub(r"([\\()\[\]])", r"\\\1", text)
        out.append(f"({text}:{p:.3f})" if req.return_ranks else text)
    return ", ".join(out)

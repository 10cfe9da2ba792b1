"""The `interrogate` operation: BLIP captions (transformers), ranked CLIP matches appended;
booru tags for "deepdanbooru" (shared/engine/tagger.py).

As upstream's `modules/interrogate.py`: the caption, then for each category file the top matches
of its lines by CLIP similarity to the image (`flavors.top3.txt` gives three, others one),
joined with ", ". Models load with `from_pretrained` from the models folder and stay warm.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

from shared import images as imgs
from shared.engine import ops
from shared.errors import ModelNotFound, NotFound
from shared.interrogation import (BLIP_DIR, CATEGORIES_DIR, CLIP_DIR, TAGGER_DIR,
                                  InterrogateRequest, InterrogateResult)

_lock = threading.Lock()
_cache: dict[tuple, tuple] = {}


def _load(kind: str, folder: Path, device: str):
    key = (kind, str(folder), (folder / "config.json").stat().st_mtime_ns, device)
    with _lock:
        if key not in _cache:
            if kind == "blip":
                from transformers import BlipForConditionalGeneration as Model
                from transformers import BlipProcessor as Processor
            else:
                from transformers import CLIPModel as Model
                from transformers import CLIPProcessor as Processor
            if len(_cache) > 4:
                _cache.clear()
            _cache[key] = (Processor.from_pretrained(str(folder)),
                           Model.from_pretrained(str(folder)).to(device).eval())
        return _cache[key]


def caption(folder: Path, image, req: InterrogateRequest, device: str = "cpu") -> str:
    """upstream generate_caption: BLIP with num_beams and the min/max description length."""
    import torch

    proc, model = _load("blip", folder, device)
    inputs = proc(images=image, return_tensors="pt").to(device)
    with torch.inference_mode():
        out = model.generate(**inputs, num_beams=req.num_beams, min_length=req.min_length,
                             max_length=req.max_length, do_sample=False)
    return proc.decode(out[0], skip_special_tokens=True).strip()


def categories(root: Path, limit: int, skip: list[str]) -> list[tuple[str, int, list[str]]]:
    """(name, top count, lines) of each category file, as upstream reads them."""
    out = []
    folder = root / CATEGORIES_DIR
    for path in sorted(folder.glob("*.txt")) if folder.is_dir() else []:
        m = re.search(r"\.top(\d+)\.", path.name)
        name = path.name.split(".")[0]
        if name in skip:
            continue
        lines = [x.strip() for x in path.read_text(encoding="utf8").splitlines() if x.strip()]
        out.append((name, int(m.group(1)) if m else 1, lines[:limit] if limit else lines))
    return out


def rank(folder: Path, image, cats, device: str = "cpu") -> list[str]:
    """The best-matching lines of every category by CLIP cosine similarity, best first."""
    import torch

    proc, model = _load("clip", folder, device)
    with torch.inference_mode():
        pixel = proc(images=image, return_tensors="pt")["pixel_values"].to(device)
        feats = model.get_image_features(pixel_values=pixel)
        feats = getattr(feats, "pooler_output", feats)
        feats = feats / feats.norm(dim=-1, keepdim=True)
        found = []
        for _, top, lines in cats:
            if not lines:
                continue
            text = proc(text=lines, return_tensors="pt", padding=True, truncation=True).to(device)
            tf = model.get_text_features(input_ids=text["input_ids"],
                                         attention_mask=text["attention_mask"])
            tf = getattr(tf, "pooler_output", tf)
            tf = tf / tf.norm(dim=-1, keepdim=True)
            sims = (feats @ tf.T)[0]
            for i in sims.topk(min(top, len(lines))).indices.tolist():
                found.append(lines[i])
    return found


@ops.op("interrogate")
def interrogate(engine, req: InterrogateRequest) -> InterrogateResult:
    """A1111's interrogate: "clip" captions with BLIP (plus CLIP matches when installed)."""
    if req.model not in ("clip", "deepdanbooru"):
        raise NotFound(f"Model not found: {req.model}")
    root = Path(engine.registry.root)
    device = str(getattr(engine, "device", "cpu") or "cpu")
    if req.model == "deepdanbooru":
        from shared.engine import tagger

        image = imgs.open_image(req.image, engine.max_image_pixels, "image")
        return InterrogateResult(caption=tagger.caption(root / TAGGER_DIR, image, req, device))
    blip = root / BLIP_DIR
    if not (blip / "config.json").is_file():
        raise ModelNotFound(f"interrogate needs a BLIP captioning model in <models_dir>/{BLIP_DIR} "
                            "(e.g. Salesforce/blip-image-captioning-base saved with "
                            "save_pretrained); none is installed", param="model")
    image = imgs.open_image(req.image, engine.max_image_pixels, "image").convert("RGB")
    text = caption(blip, image, req, device)
    clip = root / CLIP_DIR
    cats = categories(root, req.dict_limit, req.skip_categories)
    if (clip / "config.json").is_file() and cats:
        text = ", ".join([text, *rank(clip, image, cats, device)])
    return InterrogateResult(caption=text)

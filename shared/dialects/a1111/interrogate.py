"""A1111's POST /interrogate onto the `interrogate` operation (upstream modules/api/api.py).

Body `{image, model}` (model "clip" or "deepdanbooru"), answer `{caption}`. As upstream: no image
is 404 "Image not found", an unknown model 404 "Model not found: <name>". The BLIP options come
from the caller's stored /options (interrogate_clip_num_beams, _min_length, _max_length, ...).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from shared.errors import NotFound
from shared.images import b64decode_strict, check_image
from shared.interrogation import InterrogateRequest as OpRequest


class InterrogateRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    image: str | None = ""
    model: str | None = "clip"


def _int(options: dict, key: str, default: int, low: int, high: int) -> int:
    try:
        return min(high, max(low, int(options.get(key, default))))
    except (TypeError, ValueError):
        return default


def _float(options: dict, key: str, default: float) -> float:
    try:
        return min(1.0, max(0.0, float(options.get(key, default))))
    except (TypeError, ValueError):
        return default


def to_op(req: InterrogateRequest, max_px: int, options: dict) -> OpRequest:
    if not req.image:
        raise NotFound("Image not found", param="image")
    image = check_image(b64decode_strict(req.image, "image"), max_px, "image")
    skip = options.get("interrogate_clip_skip_categories") or []
    return OpRequest(image=image, model=(req.model or "clip").strip(),
                     num_beams=_int(options, "interrogate_clip_num_beams", 1, 1, 16),
                     min_length=_int(options, "interrogate_clip_min_length", 24, 1, 128),
                     max_length=_int(options, "interrogate_clip_max_length", 48, 1, 256),
                     dict_limit=_int(options, "interrogate_clip_dict_limit", 1500, 0, 10**6),
                     skip_categories=[str(s) for s in skip] if isinstance(skip, list) else [],
                     threshold=_float(options, "interrogate_deepbooru_score_threshold", 0.5),
                     sort_alpha=bool(options.get("deepbooru_sort_alpha", True)),
                     use_spaces=bool(options.get("deepbooru_use_spaces", True)),
                     escape=bool(options.get("deepbooru_escape", True)),
                     filter_tags=[t for t in str(options.get("deepbooru_filter_tags") or "")
                                  .split(",") if t.strip()],
                     return_ranks=bool(options.get("interrogate_return_ranks", False)))


def render(result) -> dict:
    return {"caption": result.caption}

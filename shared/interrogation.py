"""The `interrogate` operation's torch-free request and result (A1111's POST /interrogate).

model "clip" is upstream's BLIP caption (models/BLIP), followed, as upstream, by the best CLIP
matches of each category file (models/interrogate/*.txt) when a CLIP model is installed in
models/CLIP-interrogator. "deepdanbooru" tags the image with a WD14-format ONNX tagger in
models/deepdanbooru (model.onnx + selected_tags.csv, the SmilingWolf wd-v1-4 layout that ComfyUI
and Forge taggers use): A1111's own model-resnet_custom_v3.pt network is not loadable here.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

BLIP_DIR = "BLIP"  # a BlipForConditionalGeneration + BlipProcessor folder (save_pretrained)
CLIP_DIR = "CLIP-interrogator"  # a CLIPModel + CLIPProcessor folder
CATEGORIES_DIR = "interrogate"  # artists.txt, flavors.txt, mediums.txt, movements.txt, ...
TAGGER_DIR = "deepdanbooru"  # model.onnx + selected_tags.csv
MODELS = ("clip", "deepdanbooru")


class InterrogateRequest(BaseModel):
    """One image to caption, with upstream's BLIP options (interrogate_clip_*)."""

    image: bytes
    model: str = "clip"
    num_beams: int = Field(1, ge=1, le=16)
    min_length: int = Field(24, ge=1, le=128)
    max_length: int = Field(48, ge=1, le=256)
    dict_limit: int = Field(1500, ge=0)  # interrogate_clip_dict_limit: lines read per category
    skip_categories: list[str] = Field(default_factory=list)
    # deepdanbooru: upstream's interrogate_deepbooru_score_threshold, deepbooru_* options
    threshold: float = Field(0.5, ge=0, le=1)
    sort_alpha: bool = True
    use_spaces: bool = True
    escape: bool = True
    filter_tags: list[str] = Field(default_factory=list)
    return_ranks: bool = False


class InterrogateResult(BaseModel):
    caption: str

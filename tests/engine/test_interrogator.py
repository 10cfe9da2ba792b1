"""The `interrogate` operation with tiny random-weight BLIP and CLIP models in the real formats."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from shared.engine import interrogator, ops, tiny_interrogators
from shared.engine.registry import ModelRegistry
from shared.errors import ModelNotFound, NotFound
from shared.interrogation import BLIP_DIR, CLIP_DIR, InterrogateRequest


def picture(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return tiny_interrogators.write_interrogators(tmp_path_factory.mktemp("interrogate"))


@pytest.fixture(scope="module")
def blip_only(tmp_path_factory):
    return tiny_interrogators.write_interrogators(tmp_path_factory.mktemp("blip"), with_clip=False)


def eng(root):
    return SimpleNamespace(registry=ModelRegistry(root), max_image_pixels=1 << 24, device="cpu")


def run(root, **kw):
    return ops.run(eng(root), "interrogate", InterrogateRequest(**kw)).caption


def test_blip_caption_is_the_models_own_output(blip_only):
    req = InterrogateRequest(image=picture(), min_length=3, max_length=10)
    img = Image.open(io.BytesIO(picture())).convert("RGB")
    expected = interrogator.caption(blip_only / BLIP_DIR, img, req)
    assert expected and run(blip_only, image=picture(), min_length=3, max_length=10) == expected
    proc, model = interrogator._load("blip", blip_only / BLIP_DIR, "cpu")
    assert type(model).__name__ == "BlipForConditionalGeneration"
    # the BLIP length options reach generation: a longer minimum gives a longer caption
    longer = run(blip_only, image=picture(), min_length=12, max_length=20)
    assert len(longer.split()) > len(expected.split())


def test_clip_ranking_appends_category_matches(full):
    text = run(full, image=picture(), min_length=3, max_length=10)
    parts = text.split(", ")
    img = Image.open(io.BytesIO(picture())).convert("RGB")
    blip_caption = interrogator.caption(full / BLIP_DIR, img, InterrogateRequest(
        image=b"", min_length=3, max_length=10))
    assert parts[0] == blip_caption
    flavors = ["vivid", "muted", "dark", "bright", "grainy", "sharp"]
    mediums = ["an oil painting", "a photograph", "a pencil sketch"]
    # files in name order: flavors.top3.txt (three matches), then mediums.txt (one)
    assert len(parts) == 5 and set(parts[1:4]) <= set(flavors) and parts[4] in mediums
    assert len(set(parts[1:4])) == 3
    # the ranking follows the image: over several images, the chosen medium is not fixed
    # (random weights, but CLIP really scores each image)
    chosen = {run(full, image=picture(s), min_length=3, max_length=10).split(", ")[1:4].__repr__()
              for s in range(6)}
    assert len(chosen) > 1
    skipped = run(full, image=picture(), min_length=3, max_length=10, skip_categories=["flavors"])
    assert len(skipped.split(", ")) == 2
    assert (full / CLIP_DIR / "config.json").is_file()


def test_refusals(tmp_path, blip_only):
    with pytest.raises(ModelNotFound, match="BLIP"):
        run(tmp_path, image=picture())
    with pytest.raises(ModelNotFound, match="selected_tags.csv"):
        run(tmp_path, image=picture(), model="deepdanbooru")
    with pytest.raises(NotFound, match="Model not found: nope"):
        run(blip_only, image=picture(), model="nope")


def solid(rgb) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 30), rgb).save(buf, "PNG")
    return buf.getvalue()


def test_deepdanbooru_tags_as_upstream_formats_them(full):
    names = {"1girl", "red background", "blue sky", "smile", r"\(parody\)", r"green \(color\)",
             "artist name"}
    everything = run(full, image=solid((200, 30, 30)), model="deepdanbooru", threshold=0.0)
    tags = everything.split(", ")
    # no rating tag; alphabetical by the tag's own name (as upstream, before escaping); escaped
    assert set(tags) == names and tags == [r"\(parody\)", "1girl", "artist name", "blue sky",
                                           r"green \(color\)", "red background", "smile"]
    red = run(full, image=solid((220, 20, 20)), model="deepdanbooru")
    blue = run(full, image=solid((20, 20, 220)), model="deepdanbooru")
    assert red != blue and set(red.split(", ")) <= names  # the tags follow the image
    assert run(full, image=solid((200, 30, 30)), model="deepdanbooru", threshold=1.0) == ""
    ranked = run(full, image=solid((200, 30, 30)), model="deepdanbooru", threshold=0.0,
                 sort_alpha=False, use_spaces=False, escape=False, return_ranks=True,
                 filter_tags=["smile"])
    parts = ranked.split(", ")
    scores = [float(p.rsplit(":", 1)[1].rstrip(")")) for p in parts]
    assert scores == sorted(scores, reverse=True) and len(parts) == 6
    assert "(red_background:" in ranked and "smile" not in ranked

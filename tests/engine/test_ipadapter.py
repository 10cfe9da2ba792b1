"""IP-Adapter in the engine: the tiny random adapter loaded with diffusers' load_ip_adapter."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from shared.engine import batching
from shared.errors import InvalidRequest, Unsupported
from shared.generation import ControlNetUnit, GenerationRequest, IPAdapterRef

SIZE = 64


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def picture(color, box=(8, 8, 40, 56)) -> bytes:
    img = Image.new("RGB", (SIZE, SIZE), (20, 20, 20))
    ImageDraw.Draw(img).ellipse(box, fill=color)
    return png(img)


RED, BLUE = picture((230, 30, 30)), picture((30, 30, 230), (20, 4, 60, 30))


def pixels(engine, refs, **kw) -> np.ndarray:
    req = GenerationRequest(prompt="a house", width=SIZE, height=SIZE, steps=3, seed=7,
                            ip_adapters=refs, **kw)
    out = engine.generate(req).images[0]
    return np.asarray(Image.open(io.BytesIO(out.data))).astype(int)


@pytest.fixture(scope="module")
def base(engine, ip_adapter_models):
    return pixels(engine, [])


def test_reference_changes_pixels_and_scale_zero_is_no_adapter(engine, base):
    red = pixels(engine, [IPAdapterRef(images=[RED])])
    assert np.abs(red - base).mean() > 1 and red.std() > 0
    blue = pixels(engine, [IPAdapterRef(model="tiny-ip-adapter", images=[BLUE])])
    assert (blue != red).any()  # the reference itself matters, not only the adapter
    assert (pixels(engine, [IPAdapterRef(images=[RED], scale=0.0)]) == base).all()
    half = pixels(engine, [IPAdapterRef(images=[RED], scale=0.5)])
    assert (half != red).any() and (half != base).any()
    # the adapter is taken out again: the next plain request draws the same pixels as before
    assert (pixels(engine, []) == base).all()


def test_several_references_and_adapters(engine, base):
    red = pixels(engine, [IPAdapterRef(images=[RED])])
    both = pixels(engine, [IPAdapterRef(images=[RED, BLUE])])
    assert (both != red).any() and (both != base).any()
    two = pixels(engine, [IPAdapterRef(images=[RED]), IPAdapterRef(images=[BLUE], scale=0.0)])
    assert np.abs(two - red).max() <= 1  # a second adapter at scale 0 adds nothing


def test_img2img_and_with_controlnet(engine, controlnet_models, ip_adapter_models):
    init = png(Image.new("RGB", (SIZE, SIZE), (200, 40, 40)))
    kw = dict(mode="img2img", init_image=init, strength=0.7)
    plain = pixels(engine, [], **kw)
    assert (pixels(engine, [IPAdapterRef(images=[BLUE])], **kw) != plain).any()
    unit = ControlNetUnit(model="tiny-cn", image=RED)
    cn = pixels(engine, [], controlnets=[unit])
    both = pixels(engine, [IPAdapterRef(images=[BLUE])], controlnets=[unit])
    assert (both != cn).any()
    assert (pixels(engine, [IPAdapterRef(images=[BLUE], scale=0)], controlnets=[unit]) == cn).all()


def test_refusals(engine, ip_adapter_models):
    with pytest.raises(InvalidRequest, match="tiny-ip-adapter"):
        pixels(engine, [IPAdapterRef(model="nope", images=[RED])])
    with pytest.raises(Unsupported, match="hires"):
        pixels(engine, [IPAdapterRef(images=[RED])], hires={"width": 64, "height": 64})
    assert not batching.batchable(GenerationRequest(prompt="a", ip_adapters=[
        IPAdapterRef(images=[RED])]))



def test_effective_region_mask(engine, base):
    big = 128  # 16x16 latents: enough room to see where it acts (the net still spreads it)

    def at(refs):
        req = GenerationRequest(prompt="a house", width=big, height=big, steps=3, seed=7,
                                ip_adapters=refs)
        return np.asarray(Image.open(io.BytesIO(engine.generate(req).images[0].data))).astype(int)

    def mask(side):
        m = Image.new("L", (big, big))
        ImageDraw.Draw(m).rectangle((0, 0, big // 2 - 1, big - 1) if side == "left" else
                                    (big // 2, 0, big - 1, big - 1), fill=255)
        return png(m)

    plain = at([])
    halves = []
    for side in ("left", "right"):
        change = np.abs(at([IPAdapterRef(images=[RED], region_mask=mask(side))]) - plain)
        per_column = change.mean(axis=(0, 2))
        halves.append((per_column[:big // 2].mean(), per_column[big // 2:].mean()))
    (ll, lr), (rl, rr) = halves
    assert ll > 1.4 * lr and rr > 1.4 * rl  # the image prompt acts where the mask is white
    black = png(Image.new("L", (big, big), 0))
    assert (at([IPAdapterRef(images=[RED, BLUE], region_mask=black)]) == plain).all()


def test_sdxl_and_adapters_fitting_the_model(tmp_path):
    """The tiny SDXL with an adapter of its width beside the tiny SD1.5's: the default is the
    one that fits, the other is refused by name."""
    from shared.engine import Engine
    from shared.engine.registry import ModelRegistry
    from shared.engine.tiny import write_tiny_ip_adapter, write_tiny_model
    from shared.engine.tiny_families import write_tiny_family

    write_tiny_family("sdxl", tmp_path / "xl")
    write_tiny_model(tmp_path / "tiny-sd")
    write_tiny_ip_adapter(tmp_path, "a-sd15-adapter")  # first by name, SD1.5's width
    write_tiny_ip_adapter(tmp_path, "b-xl-adapter", model="xl")
    eng = Engine(ModelRegistry(tmp_path, default="xl"))

    def xl(refs):
        req = GenerationRequest(prompt="a house", width=SIZE, height=SIZE, steps=3, seed=7,
                                ip_adapters=refs)
        return np.asarray(Image.open(io.BytesIO(eng.generate(req).images[0].data))).astype(int)

    plain = xl([])
    assert (xl([IPAdapterRef(images=[RED])]) != plain).any()  # b-xl-adapter, chosen by width
    assert (xl([IPAdapterRef(images=[RED], scale=0)]) == plain).all()
    with pytest.raises(InvalidRequest, match="cross-attention width"):
        xl([IPAdapterRef(model="a-sd15-adapter", images=[RED])])

"""Token merging (shared/engine/tome.py): the bipartite merge itself, then the engine drawing
with it on a tiny SD 1.x whose full-resolution blocks have attention (CPU, random weights)."""

from __future__ import annotations

import pytest
import torch

from shared.engine.tome import applied, bipartite_soft_matching_random2d
from shared.errors import Unsupported
from shared.generation import GenerationRequest, HiresFix, IPAdapterRef
from tests.engine.tome_assets import differ, pixels, write_models

SMALL = dict(width=64, height=64, steps=3)


def req(**kw) -> GenerationRequest:
    return GenerationRequest(**{"prompt": "a red fox", "seed": 7, **SMALL, **kw})


# -- the merge --------------------------------------------------------------------------------
def test_r_zero_is_the_identity():
    x = torch.randn(2, 64, 8)
    merge, unmerge = bipartite_soft_matching_random2d(x, 8, 8, 2, 2, 0)
    assert merge(x) is x and unmerge(x) is x


@pytest.mark.parametrize("w,h,r", [(8, 8, 32), (8, 8, 5), (7, 9, 20)])
def test_merge_keeps_n_minus_r_and_unmerge_gives_each_token_its_group_mean(w, h, r):
    torch.manual_seed(0)
    x = torch.randn(2, w * h, 8)
    x[:, 1] = x[:, 0] * 2  # parallel to token 0 (a destination): certainly merged into it
    merge, unmerge = bipartite_soft_matching_random2d(x, w, h, 2, 2, r)
    merged = merge(x)
    assert merged.shape == (2, w * h - r, 8)
    back = unmerge(merged)
    assert back.shape == x.shape
    for b in range(2):
        groups: dict[tuple, list[int]] = {}
        for i in range(w * h):
            groups.setdefault(tuple(back[b, i].tolist()), []).append(i)
        assert sum(len(g) - 1 for g in groups.values()) == r  # r tokens merged away
        for g in groups.values():
            mean = x[b, g].mean(0)
            assert torch.allclose(back[b, g[0]], mean, atol=1e-6)
            if len(g) == 1:  # unmerged: restored exactly
                assert torch.equal(back[b, g[0]], x[b, g[0]])
        assert any(0 in g and 1 in g for g in groups.values())


def test_random_destinations_follow_each_images_seed():
    x = torch.randn(4, 64, 8)  # [uncond a, uncond b, cond a, cond b], as CFG stacks them

    def out(seeds, rows):
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        merge, unmerge = bipartite_soft_matching_random2d(x[rows], 8, 8, 2, 2, 24, gens)
        return unmerge(merge(x[rows]))

    pair = out([1, 2], [0, 1, 2, 3])
    assert torch.equal(pair, out([1, 2], [0, 1, 2, 3]))  # the same seeds: the same merge
    alone_b = out([2], [1, 3])  # image b alone: its rows as in the batch
    assert torch.equal(pair[[1, 3]], alone_b)
    top_left = bipartite_soft_matching_random2d(x, 8, 8, 2, 2, 24)
    assert not torch.equal(pair, top_left[1](top_left[0](x)))


# -- the engine -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tome_engine(tmp_path_factory):
    from shared.engine import Engine
    from shared.engine.registry import ModelRegistry

    eng = Engine(ModelRegistry(write_models(tmp_path_factory.mktemp("tome"))))
    eng.warm()
    return eng


def one(engine, r: GenerationRequest) -> bytes:
    return engine.generate(r).images[0].data


def processors(engine):
    unet = engine.warm().pipe.unet
    return {k: type(v) for k, v in unet.attn_processors.items()}


def test_token_merging_changes_pixels_reproducibly_and_leaves_the_model_as_it_was(tome_engine):
    before = processors(tome_engine)
    base = one(tome_engine, req())
    merged = tome_engine.generate(req(token_merging_ratio=0.5))
    assert differ(base, merged.images[0].data)
    assert merged.images[0].data == one(tome_engine, req(token_merging_ratio=0.5))
    assert "Token merging ratio: 0.5" in merged.images[0].infotext
    assert "Token merging ratio" not in tome_engine.generate(req()).images[0].infotext
    assert one(tome_engine, req()) == base  # processors restored: exactly the base pixels
    assert processors(tome_engine) == before


def test_random_destinations_are_seeded_and_differ_from_top_left(tome_engine):
    rand = one(tome_engine, req(token_merging_ratio=0.5, token_merging_random=True))
    assert rand == one(tome_engine, req(token_merging_ratio=0.5, token_merging_random=True))
    assert differ(rand, one(tome_engine, req(token_merging_ratio=0.5)))


def test_only_full_resolution_blocks_merge(tome_engine):
    unet = tome_engine.warm().pipe.unet
    calls = []
    with applied(unet, 0.5) as state:
        original = state.plan
        state.plan = lambda m: calls.append(m.shape[1]) or original(m)
        tome_engine.warm().pipe(prompt="x", num_inference_steps=1, width=64, height=64,
                                output_type="latent")
    assert set(calls) == {64, 16} and state.merged == calls.count(64)  # 8x8 merges, 4x4 not


def test_a_batch_draws_each_image_as_alone(tome_engine):
    reqs = [req(prompt="a red fox", seed=3, token_merging_ratio=0.5, token_merging_random=True),
            req(prompt="a blue whale", seed=9, token_merging_ratio=0.5,
                token_merging_random=True)]
    together = tome_engine.generate_batch(reqs)
    for r, res in zip(reqs, together):
        assert not differ(res.images[0].data, one(tome_engine, r))


def test_hires_pass_has_its_own_ratio(tome_engine):
    hr = dict(width=96, height=96, strength=0.5, steps=2)
    plain = tome_engine.generate(req(hires=HiresFix(**hr))).images[0]
    hr_only = tome_engine.generate(req(hires=HiresFix(**hr, token_merging_ratio=0.5))).images[0]
    assert (hr_only.width, hr_only.height) == (96, 96)
    assert differ(plain.data, hr_only.data)
    assert "Token merging ratio hr: 0.5" in hr_only.infotext
    assert "Token merging ratio: " not in hr_only.infotext
    both = tome_engine.generate(req(token_merging_ratio=0.3, hires=HiresFix(**hr))).images[0]
    assert "Token merging ratio: 0.3" in both.infotext
    assert "Token merging ratio hr: 0.3" in both.infotext  # None: the first pass's


def test_composes_with_ip_adapter_and_controlnet(tome_engine):
    from tests.engine.family_assets import INIT, png

    before = processors(tome_engine)
    ip = [IPAdapterRef(images=[png(INIT)], scale=1.0)]
    with_ip = one(tome_engine, req(ip_adapters=ip))
    both = one(tome_engine, req(ip_adapters=ip, token_merging_ratio=0.5))
    assert differ(with_ip, both)
    assert one(tome_engine, req(ip_adapters=ip)) == with_ip
    assert processors(tome_engine) == before
    from shared.generation import ControlNetUnit

    cn = [ControlNetUnit(model="tiny-cn", image=png(INIT))]
    assert differ(one(tome_engine, req(controlnets=cn)),
                  one(tome_engine, req(controlnets=cn, token_merging_ratio=0.5)))
    assert processors(tome_engine) == before


def test_img2img_merges_too(tome_engine):
    from tests.engine.family_assets import INIT, png

    i2i = dict(mode="img2img", init_image=png(INIT), strength=0.8, steps=4)
    assert differ(one(tome_engine, req(**i2i)), one(tome_engine, req(**i2i,
                                                                    token_merging_ratio=0.5)))


def test_sd3_refuses_token_merging_unless_it_was_only_a_default(tome_engine):
    with pytest.raises(Unsupported) as e:
        tome_engine.generate(req(model="tiny-sd3", token_merging_ratio=0.5))
    assert e.value.param == "token_merging_ratio" and "UNet" in e.value.message
    optional = dict(model="tiny-sd3", token_merging_ratio=0.5, token_merging_optional=True)
    out = tome_engine.generate(req(**optional)).images[0]
    pixels(out.data)
    assert "Token merging" not in out.infotext
    assert out.data == one(tome_engine, req(model="tiny-sd3"))


def test_composes_with_a_lora(tome_engine):
    from tests.engine.a1111_assets import write_kohya_lora
    from shared.generation import LoraRef

    path = tome_engine.registry.root / "Lora" / "tome_lora.safetensors"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        write_kohya_lora(tome_engine.warm().pipe, path)
    lora = [LoraRef(name="tome_lora", weight=0.5)]
    with_lora = one(tome_engine, req(loras=lora))
    both = one(tome_engine, req(loras=lora, token_merging_ratio=0.5))
    assert differ(with_lora, both) and differ(one(tome_engine, req(token_merging_ratio=0.5)), both)
    assert one(tome_engine, req(loras=lora)) == with_lora
    assert one(tome_engine, req()) == one(tome_engine, req())


@pytest.fixture(scope="module")
def sdxl_engine(tmp_path_factory):
    from shared.engine import Engine
    from shared.engine.registry import ModelRegistry
    from shared.engine.tiny_families import write_tiny_family

    root = tmp_path_factory.mktemp("tome-sdxl")
    write_tiny_family("sdxl", root / "xl")
    write_tiny_family("sdxl-refiner", root / "xl-refiner")
    return Engine(ModelRegistry(root, default="xl"))


def test_sdxl_and_its_refiner_merge(sdxl_engine, monkeypatch):
    """The tiny SDXL has attention at half resolution only: merge there (max_downsample 2)."""
    from shared.engine import tome
    from shared.generation import Refiner

    monkeypatch.setattr(tome, "MAX_DOWNSAMPLE", 2)
    runs = []
    real = tome.applied

    @__import__("contextlib").contextmanager
    def spy(unet, ratio, *a, **kw):
        with real(unet, ratio, *a, **kw) as state:
            yield state
        runs.append((unet, state.merged if state else 0))

    monkeypatch.setattr(tome, "applied", spy)
    xl = dict(model="xl", steps=4)
    assert differ(one(sdxl_engine, req(**xl)), one(sdxl_engine, req(**xl,
                                                                   token_merging_ratio=0.5)))
    refine = dict(xl, refiner=Refiner(model="xl-refiner", switch_at=0.5))
    runs.clear()
    merged = one(sdxl_engine, req(**refine, token_merging_ratio=0.5))
    refiner_unet = sdxl_engine.cache.get(sdxl_engine.registry.resolve("xl-refiner")).pipe.unet
    assert [u is refiner_unet for u, _ in runs] == [False, True]
    assert all(n > 0 for _, n in runs)  # both passes merged tokens
    assert differ(merged, one(sdxl_engine, req(**refine)))

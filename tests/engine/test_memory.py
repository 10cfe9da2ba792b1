"""The pipeline cache's memory budget: sizes estimated from the files before loading match the
loaded weights; least recently used models leave before a load that would not fit; loads are
counted on tiny models."""

from __future__ import annotations

import pytest

from shared.engine import memory
from shared.engine.tiny_families import write_tiny_family


@pytest.fixture(scope="module")
def three(tmp_path_factory, models_dir):
    import shutil

    root = tmp_path_factory.mktemp("budget")
    shutil.copytree(models_dir / "tiny-sd", root / "a")
    shutil.copytree(models_dir / "tiny-sd", root / "b")
    write_tiny_family("flux-schnell", root / "c")
    return root


def _engine(root, **kw):
    from shared.engine import Engine
    from shared.engine.registry import ModelRegistry

    return Engine(ModelRegistry(root), device="cpu", **kw)


def _params_bytes(loaded) -> int:
    import torch

    seen, total = set(), 0
    for part in [*loaded.pipe.components.values(), loaded.safety_checker]:
        if isinstance(part, torch.nn.Module):
            for t in list(part.parameters()) + list(part.buffers()):
                if id(t) not in seen:
                    seen.add(id(t))
                    total += t.numel() * t.element_size()
    return total


@pytest.mark.parametrize("name", ["a", "c"])
def test_estimate_matches_the_loaded_weights(three, name):
    eng = _engine(three, max_loaded=1)
    loaded = eng.warm(name)
    real = _params_bytes(loaded)  # the safety checker is kept detached
    assert loaded.bytes == memory.estimate_bytes(loaded.info, 4)
    assert abs(loaded.bytes - real) <= 0.05 * real  # buffers / tied weights aside


def test_estimate_counts_one_variant_and_reads_no_weights(tmp_path, three):
    import shutil

    src = three / "a" / "unet" / "diffusion_pytorch_model.safetensors"
    folder = shutil.copytree(three / "a", tmp_path / "v")
    variant = folder / "unet" / "diffusion_pytorch_model.fp16.safetensors"
    shutil.copy(src, variant)
    from shared.engine.registry import ModelRegistry

    info = ModelRegistry(tmp_path).resolve("v")
    base = memory.estimate_bytes(ModelRegistry(three).resolve("a"), 4)
    assert memory.estimate_bytes(info, 4) == base  # the fp16 duplicate is not counted
    assert memory.estimate_bytes(info, 2) < base  # fp16 loads take half


def test_a_budget_for_one_model_evicts_before_loading(three, monkeypatch):
    from shared.engine import pipelines

    eng = _engine(three, max_loaded=5, memory_budget_gb=1e-9)  # smaller than any model
    seen = []
    real = pipelines.load_pipeline

    def spy(info, device, dtype):
        seen.append((info.name, eng.cache.loaded()))
        return real(info, device, dtype)

    monkeypatch.setattr(pipelines, "load_pipeline", spy)
    for name in ("a", "b", "a"):
        eng.warm(name)
    assert eng.cache.loads == 3 and eng.cache.loaded() == ["a"]
    assert eng.cache.evictions == ["a", "b"]
    assert seen == [("a", []), ("b", []), ("a", [])]  # evicted before each load


def test_a_budget_for_two_keeps_both_and_drops_the_least_recent(three):
    probe = _engine(three, max_loaded=5)
    sizes = {n: probe.cache.get(probe.registry.resolve(n)).bytes for n in ("a", "c")}
    budget = (2 * sizes["a"] + sizes["c"] // 2) / (1 << 30)  # two SD models, not Flux too
    eng = _engine(three, max_loaded=5, memory_budget_gb=budget)
    for name in ("a", "b", "a", "b"):
        eng.warm(name)
    assert eng.cache.loads == 2 and eng.cache.evictions == []
    eng.warm("a")  # a is now the most recent; Flux needs room
    eng.warm("c")
    assert eng.cache.evictions == ["b"]  # the least recently used, and only as many as needed
    assert eng.cache.loaded() == ["a", "c"] and eng.cache.loads == 3
    assert eng.cache.resident_bytes() <= budget * (1 << 30)


def test_no_budget_on_cpu_counts_models_only(three):
    eng = _engine(three, max_loaded=2)
    assert eng.cache.budget is None
    for name in ("a", "b", "c"):
        eng.warm(name)
    assert eng.cache.loaded() == ["b", "c"] and eng.cache.loads == 3


def test_the_setting_reaches_the_engine(make_settings):
    from shared.app import local_backend

    settings = make_settings(memory_budget_gb=1.5)
    assert local_backend(settings).engine.cache.budget == int(1.5 * (1 << 30))


# -- CPU offload (SDGATE_CPU_OFFLOAD) -------------------------------------------------------------
@pytest.mark.parametrize("setting, need, budget, mode", [
    ("off", 10, 5, ""), ("auto", 10, 5, "model"), ("auto", 5, 10, ""), ("auto", 10, None, ""),
    ("model", 1, 10, "model"), ("model", 1, None, "model"),
])
def test_offload_mode(setting, need, budget, mode):
    assert memory.offload_mode(setting, need, budget) == mode


def test_an_unknown_offload_setting_is_refused(make_settings):
    with pytest.raises(ValueError, match="cpu_offload"):
        make_settings(cpu_offload="sometimes")


def _hooked(pipe) -> bool:
    return any(getattr(m, "_hf_hook", None) is not None for m in pipe.components.values())


def _draw(eng, name, **kw):
    import io

    import numpy as np
    from PIL import Image

    from shared.generation import GenerationRequest

    res = eng.generate(GenerationRequest(model=name, prompt="a red cat", width=64, height=64,
                                         steps=2, seed=4, **kw))
    a = np.asarray(Image.open(io.BytesIO(res.images[0].data)).convert("RGB"))
    assert a.std() > 1.0
    return a


def test_an_offloaded_model_draws_what_the_whole_one_draws(three):
    """diffusers' offload hooks run each part on the device in turn (here the CPU itself, which
    gains nothing but runs the same code path a GPU would); txt2img and a derived img2img
    pipeline draw the pixels drawn without offload (img2img: up to rounding, one level in a few
    pixels)."""
    import io

    import numpy as np
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 40, 40)).save(buf, "PNG")
    init = dict(init_image=buf.getvalue(), strength=0.6, mode="img2img")
    whole, off = _engine(three, max_loaded=1), _engine(three, max_loaded=1, cpu_offload="model")
    assert np.array_equal(_draw(off, "c"), _draw(whole, "c"))
    diff = np.abs(_draw(off, "c", **init).astype(int) - _draw(whole, "c", **init))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.001
    loaded = off.warm("c")
    assert loaded.offload == "model" and _hooked(loaded.pipe)
    assert not _hooked(whole.warm("c").pipe)


def test_auto_offloads_only_the_model_larger_than_the_budget(three):
    sizes = {n: memory.estimate_bytes(_engine(three).registry.resolve(n), 4) for n in "ac"}
    big, fits = sorted(sizes, key=sizes.get, reverse=True)
    gb = (sizes["a"] + sizes["c"]) / 2 / (1 << 30)  # one fits, the other does not
    eng = _engine(three, max_loaded=2, memory_budget_gb=gb, cpu_offload="auto")
    small, large = eng.warm(fits), eng.warm(big)
    assert (small.offload, large.offload) == ("", "model")
    assert _hooked(large.pipe) and not _hooked(small.pipe)
    _draw(eng, big)
    eng.to("cpu")  # the snapshot path re-places models: the offloaded one keeps its hooks
    assert large.offload == "model" and _hooked(large.pipe) and not _hooked(small.pipe)


def test_the_offload_setting_reaches_the_engine(make_settings):
    from shared.app import local_backend

    assert local_backend(make_settings(cpu_offload="auto")).engine.cache.cpu_offload == "auto"

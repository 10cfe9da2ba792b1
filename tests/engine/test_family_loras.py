"""LoRAs on every family: `<lora:name:w>` tags load into SDXL's UNet and both text encoders, and
into SD3's and Flux's transformers (diffusers' PEFT layout), change the image, and leave the model
as it was."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from shared.engine.tiny_families import BUILDERS, write_tiny_family
from shared.generation import GenerationRequest
from tests.engine.a1111_assets import write_peft_lora

KINDS = ("sdxl", "sd3", "flux-schnell")


@pytest.fixture(scope="module")
def lora_engine(tmp_path_factory):
    from shared.engine import Engine
    from shared.engine.registry import ModelRegistry

    root = tmp_path_factory.mktemp("family-loras")
    for kind in KINDS:
        write_tiny_family(kind, root / kind)
        pipe = BUILDERS[kind]()
        core = {"unet": pipe.unet} if kind == "sdxl" else {"transformer": pipe.transformer}
        write_peft_lora(core, root / "Lora" / f"{kind}-core.safetensors")
        if kind == "sdxl":
            write_peft_lora({"text_encoder": pipe.text_encoder,
                             "text_encoder_2": pipe.text_encoder_2},
                            root / "Lora" / "sdxl-te.safetensors", seed=1)
    return Engine(ModelRegistry(root, default="sd3"), max_loaded=3)


def _draw(engine, kind: str, prompt: str) -> np.ndarray:
    res = engine.generate(GenerationRequest(model=kind, prompt=prompt, width=64, height=64,
                                            steps=2, seed=5))
    a = np.asarray(Image.open(io.BytesIO(res.images[0].data)).convert("RGB"), dtype=np.float32)
    assert np.isfinite(a).all() and a.std() > 1.0, "blank or constant image"
    return a


def _weights(engine, kind: str) -> dict:
    pipe = engine.warm(kind).pipe
    core = pipe.unet if kind == "sdxl" else pipe.transformer
    return {k: v.clone() for k, v in core.state_dict().items()}


@pytest.mark.parametrize("kind", KINDS)
def test_a_lora_changes_the_image_and_is_removed_after(lora_engine, kind):
    import torch

    base = _draw(lora_engine, kind, "a red cat")
    before = _weights(lora_engine, kind)
    full = _draw(lora_engine, kind, f"a red cat <lora:{kind}-core:1>")
    half = _draw(lora_engine, kind, f"a red cat <lora:{kind}-core:0.5>")
    assert not np.array_equal(full, base) and not np.array_equal(half, full)
    assert np.array_equal(_draw(lora_engine, kind, f"a red cat <lora:{kind}-core:0>"), base)
    after = _weights(lora_engine, kind)  # no PEFT layers left, the same weights
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert np.array_equal(_draw(lora_engine, kind, "a red cat"), base)


def test_sdxl_text_encoder_loras_reach_both_encoders(lora_engine):
    base = _draw(lora_engine, "sdxl", "a red cat")
    te = _draw(lora_engine, "sdxl", "a red cat <lora:sdxl-te:1>")
    assert not np.array_equal(te, base)
    # A1111's te/unet split: the text-encoder weight 0 turns this LoRA off entirely.
    assert np.array_equal(_draw(lora_engine, "sdxl", "a red cat <lora:sdxl-te:0:1>"), base)


def test_a_lora_for_another_family_is_refused_clearly(lora_engine):
    from shared.errors import SdgateError, status_of

    with pytest.raises(SdgateError, match="does not fit this model") as e:
        _draw(lora_engine, "sd3", "a red cat <lora:sdxl-core:1>")
    assert 400 <= status_of(e.value) < 500
    assert np.array_equal(_draw(lora_engine, "sd3", "a red cat"),
                          _draw(lora_engine, "sd3", "a red cat"))

"""The full-size architectures kept as configs: they build, with the published sizes and FLOPs.

Everything here runs on the meta device: no memory, no weights, no full-size inference.
"""

import pytest

from shared.engine.archs import PARTS, count_parameters, load_config


@pytest.mark.parametrize("arch, part, millions", [
    ("sd15", "unet", 859.5), ("sd15", "vae", 83.7), ("sd15", "text_encoder", 123.1),
    ("sdxl", "unet", 2567.5), ("sdxl", "text_encoder_2", 694.7),
])
def test_parameter_counts_match_the_published_models(arch, part, millions):
    assert count_parameters(arch, part) / 1e6 == pytest.approx(millions, abs=0.1)


def test_every_config_loads():
    for arch, parts in PARTS.items():
        for part in parts:
            assert load_config(arch, part)
    assert load_config("taesd", "config")["latent_channels"] == 4
    with pytest.raises(ValueError, match="sd15"):
        load_config("sd4", "unet")  # not an architecture sdgate knows


def test_flop_counts_match_the_reference():
    """REFERENCE.md: SD1.5 UNet 0.80 TFLOP at 64x64 latents, VAE decode 2.5 TFLOP at 512²."""
    from types import SimpleNamespace

    import torch

    from shared.bench.arch import count_flops
    from shared.engine.archs import build_component

    with torch.device("meta"):
        pipe = SimpleNamespace(unet=build_component("sd15", "unet"),
                               vae=build_component("sd15", "vae"))
    flops = count_flops(pipe, 512)
    assert flops["unet_tflop"] == pytest.approx(0.80, abs=0.01)
    assert flops["vae_decode_tflop"] == pytest.approx(2.5, abs=0.05)


def test_sdxl_pipeline_assembles_on_the_meta_device():
    """The GPU ladder's SDXL pipeline (two text encoders, size conditioning) wires up, and its
    FLOPs at 1024² match the reference (6.76 TFLOP UNet, 10.5 TFLOP VAE decode)."""
    from shared.bench.arch import count_flops
    from shared.engine.archs import build_pipeline

    pipe = build_pipeline("sdxl", "meta")
    assert type(pipe).__name__ == "StableDiffusionXLPipeline" and pipe.vae_scale_factor == 8
    flops = count_flops(pipe, 1024)
    assert flops["unet_tflop"] == pytest.approx(6.76, abs=0.01)
    assert flops["vae_decode_tflop"] == pytest.approx(10.5, abs=0.05)

"""What the token merging tests share: a models folder whose tiny SD 1.x has attention in its
full-resolution blocks (where ToMe acts; the session's tiny model has it at half resolution
only) and strong self-attention (so that merging its tokens shows in the pixels, not only in
rounding), its ControlNet and IP-Adapter, and a tiny SD3."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image


def write_models(root: Path) -> Path:
    """`tiny-sd` (full-resolution attention), `tiny-cn`, `tiny-ip-adapter`, `tiny-sd3`."""
    from shared.engine.tiny import (TINY_NAME, write_tiny_controlnet, write_tiny_ip_adapter,
                                    write_tiny_model)
    from shared.engine.tiny_families import write_tiny_family

    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.models.attention import BasicTransformerBlock

    write_tiny_model(root / TINY_NAME, full_res_attention=True)
    unet = UNet2DConditionModel.from_pretrained(root / TINY_NAME / "unet")
    with torch.no_grad():  # random self-attention barely moves the tiny model's pictures
        for block in unet.modules():
            if isinstance(block, BasicTransformerBlock):
                block.attn1.to_v.weight.mul_(4)
                block.attn1.to_out[0].weight.mul_(8)
    unet.save_pretrained(root / TINY_NAME / "unet", safe_serialization=True)
    write_tiny_controlnet(root)
    write_tiny_ip_adapter(root)
    write_tiny_family("sd3", root / "tiny-sd3")
    return root


def pixels(data: bytes) -> np.ndarray:
    """The RGB pixels of an encoded image, which must be finite and not constant."""
    a = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)
    assert np.isfinite(a).all() and a.std() > 1.0, "blank or constant image"
    return a


def differ(a: bytes, b: bytes) -> bool:
    """Clearly different pictures (not a rounding difference)."""
    return float(np.abs(pixels(a) - pixels(b)).max()) > 8

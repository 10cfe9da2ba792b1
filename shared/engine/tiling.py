"""Seamless tiling: circular padding in every convolution of the UNet and VAE, for one call.

This is how A1111 makes `tiling: true` images wrap around at the edges; the padding modes are
restored afterwards so the warm model is unchanged for the next request.
"""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def circular(pipe, enabled: bool = True):
    """Within the block the pipeline's conv layers pad circularly (no-op when not enabled)."""
    if not enabled:
        yield
        return
    import torch

    convs = [m for part in (getattr(pipe, "unet", None), getattr(pipe, "vae", None))
             if part is not None for m in part.modules() if isinstance(m, torch.nn.Conv2d)]
    saved = [(m, m.padding_mode) for m in convs]
    try:
        for m in convs:
            m.padding_mode = "circular"
        yield
    finally:
        for m, mode in saved:
            m.padding_mode = mode

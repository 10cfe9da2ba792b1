"""Tiny random-weight upscaler files in the real formats, for tests (loaded through spandrel).

RealESRGAN_x4plus.pth is basicsr's RRDBNet under "params_ema"; ESRGAN community models (such as
4x-UltraSharp) are the old "model.N" layout; realesr-general-x4v3 is SRVGGNetCompact under
"params"; SwinIR files are the official repository's keys under "params_ema". Only the widths
are small (the RRDB growth channels stay 32, which spandrel assumes).
"""

from __future__ import annotations

from pathlib import Path


def _save(state: dict, path: Path) -> Path:
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        flat = next(iter(state.values())) if len(state) == 1 else state
        save_file({k: v.contiguous() for k, v in flat.items()}, str(path))
    else:
        torch.save(state, path)
    return path


def _conv(state: dict, name: str, cout: int, cin: int, gen) -> None:
    import torch

    state[f"{name}.weight"] = torch.randn(cout, cin, 3, 3, generator=gen) * (2.0 / (cin * 9)) ** 0.5
    state[f"{name}.bias"] = torch.randn(cout, generator=gen) * 0.01


def realesrgan_x4plus(path: Path, nf: int = 8, blocks: int = 1, seed: int = 0) -> Path:
    """basicsr RRDBNet (num_grow_ch 32), keys as in RealESRGAN_x4plus.pth."""
    import torch

    gen, gc, state = torch.Generator().manual_seed(seed), 32, {}
    _conv(state, "conv_first", nf, 3, gen)
    for b in range(blocks):
        for r in (1, 2, 3):
            for c in range(1, 6):
                cout = nf if c == 5 else gc
                _conv(state, f"body.{b}.rdb{r}.conv{c}", cout, nf + (c - 1) * gc, gen)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        _conv(state, name, nf, nf, gen)
    _conv(state, "conv_last", 3, nf, gen)
    state["conv_last.bias"] += 0.5  # mid-grey plus detail, not an all-black clamp
    return _save({"params_ema": state}, path)


def esrgan_old(path: Path, nf: int = 8, blocks: int = 1, seed: int = 1) -> Path:
    """The original ESRGAN layout ("model.0", "model.1.sub.N.RDBk.convj.0"), 4x."""
    from spandrel.architectures.ESRGAN import ESRGAN

    import torch

    torch.manual_seed(seed)
    net = ESRGAN(in_nc=3, out_nc=3, num_filters=nf, num_blocks=blocks, scale=4)
    return _save(dict(net.state_dict()), path)


def compact(path: Path, nf: int = 8, convs: int = 2, scale: int = 4, seed: int = 2) -> Path:
    """SRVGGNetCompact (realesr-general-x4v3, realesr-animevideov3) under "params"."""
    from spandrel.architectures.Compact import Compact

    import torch

    torch.manual_seed(seed)
    net = Compact(num_in_ch=3, num_out_ch=3, num_feat=nf, num_conv=convs, upscale=scale)
    return _save({"params": dict(net.state_dict())}, path)


def swinir(path: Path, seed: int = 3) -> Path:
    """SwinIR (nearest+conv real-SR upsampler, as 003_realSR_..._SwinIR_x4_GAN), 4x."""
    from spandrel.architectures.SwinIR import SwinIR

    import torch

    torch.manual_seed(seed)
    net = SwinIR(upscale=4, in_chans=3, img_size=16, window_size=4, embed_dim=12, depths=[1],
                 num_heads=[2], mlp_ratio=2.0, upsampler="nearest+conv", resi_connection="1conv")
    return _save({"params_ema": dict(net.state_dict())}, path)

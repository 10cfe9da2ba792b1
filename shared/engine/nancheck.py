"""A1111's NaN check: a pipeline call whose output holds NaNs is retried once with the VAE in
fp32 (the usual cure: fp16 VAE overflow), else it fails clearly; never a black "success"."""

from __future__ import annotations

import contextlib
import logging

from shared.errors import GenerationFailed

log = logging.getLogger(__name__)

NAN_MESSAGE = ("A tensor with NaNs was produced: the model or its VAE overflowed at this "
               "precision (on A1111 --no-half / --no-half-vae). Try another seed, sampler or "
               "CFG scale, or fewer/lower prompt weights.")


def _finite(images) -> bool:
    import numpy as np
    import torch

    if isinstance(images, torch.Tensor):
        return bool(torch.isfinite(images).all())
    if isinstance(images, np.ndarray):
        return bool(np.isfinite(images).all())
    return True  # PIL images: already quantised, nothing left to check


@contextlib.contextmanager
def _vae_fp32(pipe):
    """The VAE in fp32 for one call, its inputs cast up (decoder and post-quant conv)."""
    import torch

    vae = getattr(pipe, "vae", None)
    if vae is None or vae.dtype == torch.float32:
        yield False
        return
    dtype = vae.dtype
    vae.to(torch.float32)
    hooks = [m.register_forward_pre_hook(
        lambda _m, args: tuple(a.float() if torch.is_tensor(a) else a for a in args))
        for m in (getattr(vae, "post_quant_conv", None), vae.decoder) if m is not None]
    try:
        yield True
    finally:
        for h in hooks:
            h.remove()
        vae.to(dtype)


def _rewind(kwargs: dict) -> None:
    """Re-seed the call's generators so a retry draws the same noise."""
    gens = kwargs.get("generator")
    for g in gens if isinstance(gens, list) else [gens] if gens is not None else []:
        g.manual_seed(g.initial_seed())


def checked_call(pipe, kwargs: dict):
    """`pipe(**kwargs)` with the NaN check; "pil" output is decoded from the checked floats."""
    want = kwargs.get("output_type", "pil")
    call = {**kwargs, "output_type": "np"} if want == "pil" else kwargs
    result = pipe(**call)
    if not _finite(result.images):
        with _vae_fp32(pipe) as upcast:
            if upcast and not getattr(pipe, "_interrupt", False):
                log.warning("NaNs in the output: retrying once with the VAE in fp32")
                _rewind(call)
                result = pipe(**call)
        if not _finite(result.images):
            raise GenerationFailed(NAN_MESSAGE)
    if want == "pil":
        result.images = pipe.numpy_to_pil(result.images)
    return result

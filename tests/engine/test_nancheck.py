"""A1111's NaN check: NaN output is retried with the VAE upcast, else a clear failure."""

import numpy as np
import pytest

from shared.engine.nancheck import NAN_MESSAGE, checked_call
from shared.errors import GenerationFailed


class FakePipe:
    """Returns NaN floats the first `bad` calls, then finite ones."""

    def __init__(self, bad):
        self.bad, self.calls = bad, []

    def __call__(self, **kw):
        self.calls.append(kw)
        out = np.full((1, 8, 8, 3), np.nan if len(self.calls) <= self.bad else 0.5, np.float32)
        return type("Out", (), {"images": out})()

    @staticmethod
    def numpy_to_pil(images):
        from PIL import Image

        return [Image.fromarray((i * 255).astype(np.uint8)) for i in images]


def test_nan_output_fails_clearly_instead_of_a_black_image():
    pipe = FakePipe(bad=5)  # no VAE to upcast: one call, then the error
    with pytest.raises(GenerationFailed) as e:
        checked_call(pipe, {"output_type": "pil"})
    assert e.value.message == NAN_MESSAGE and len(pipe.calls) == 1


def test_finite_output_is_decoded_to_pil_from_the_checked_floats():
    pipe = FakePipe(bad=0)
    out = checked_call(pipe, {"output_type": "pil"}).images
    assert pipe.calls[0]["output_type"] == "np"
    assert np.asarray(out[0]).mean() == pytest.approx(127, abs=1)


def test_a_fp16_vae_is_upcast_for_one_retry():
    import torch

    class Vae(torch.nn.Module):  # its own class: a dtype on nn.Module would reach every module
        @property
        def dtype(self):
            return next(self.parameters()).dtype

    pipe = FakePipe(bad=1)
    pipe.vae = Vae()
    pipe.vae.decoder = torch.nn.Conv2d(1, 1, 1).half()
    pipe.vae.post_quant_conv = torch.nn.Conv2d(1, 1, 1).half()
    out = checked_call(pipe, {"output_type": "pil", "generator": [torch.Generator().manual_seed(3)]})
    assert len(pipe.calls) == 2 and len(out.images) == 1
    assert pipe.vae.dtype == torch.float16  # put back after the retry

"""Aspect-ratio table."""

import pytest

from shared.errors import ValidationFailed
from shared.sizes import RATIOS, size_for_ratio


@pytest.mark.parametrize("native", [512, 768, 1024])
@pytest.mark.parametrize("ratio", list(RATIOS))
def test_sizes_are_multiples_of_8_near_native_area(ratio, native):
    w, h = size_for_ratio(ratio, native)
    a, b = RATIOS[ratio]
    assert w % 8 == 0 and h % 8 == 0
    assert abs(w * h / native**2 - 1) < 0.05
    assert abs(w / h - a / b) < 0.05


def test_square_is_native():
    assert size_for_ratio("1:1", 512) == (512, 512)
    assert size_for_ratio("16:9", 1024)[0] > size_for_ratio("16:9", 512)[0]


def test_unknown_ratio_names_choices():
    with pytest.raises(ValidationFailed, match="16:9"):
        size_for_ratio("2:1")

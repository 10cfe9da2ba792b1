"""Aspect ratios -> pixel sizes near a model's native pixel count, in multiples of 8 (one table)."""

from __future__ import annotations

import math

from shared.errors import ValidationFailed, FieldError

RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1, 1),
    "16:9": (16, 9),
    "9:16": (9, 16),
    "4:3": (4, 3),
    "3:4": (3, 4),
}


def ceil8(n: int) -> int:
    """The next multiple of 8 (the latent grid of every SD VAE)."""
    return (n + 7) // 8 * 8


def _round8(x: float) -> int:
    return max(8, int(round(x / 8)) * 8)


def size_for_ratio(ratio: str, native: int = 512) -> tuple[int, int]:
    """(width, height) for an aspect ratio with about native² pixels."""
    if ratio not in RATIOS:
        msg = f"unknown size {ratio!r}; choose one of {', '.join(RATIOS)}"
        raise ValidationFailed(msg, param="size", fields=[FieldError("size", msg)])
    a, b = RATIOS[ratio]
    area = native * native
    w = _round8(math.sqrt(area * a / b))
    return w, _round8(area / w)

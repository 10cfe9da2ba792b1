"""Output encoding costs: PNG levels, WebP, JPEG at 512² and 1024², plus decode and base64.

Two contents: a deterministic photo-like picture (smooth gradients, shapes, sensor grain: what a
real model draws) and uniform noise (what the tiny random model draws: PNG's worst case).
"""

from __future__ import annotations

import base64
import io

from shared.bench.timing import median, timed

# (label, Pillow save arguments). "png level 1" is what shared/images.encode does.
FORMATS = [
    ("png level 0", {"format": "PNG", "compress_level": 0}),
    ("png level 1 (sdgate default)", {"format": "PNG", "compress_level": 1}),
    ("png level 3", {"format": "PNG", "compress_level": 3}),
    ("png level 6 (Pillow default)", {"format": "PNG", "compress_level": 6}),
    ("png level 9", {"format": "PNG", "compress_level": 9}),
    ("png optimize=True", {"format": "PNG", "optimize": True}),
    ("webp q90 method 4 (sdgate)", {"format": "WEBP", "quality": 90, "method": 4}),
    ("webp q90 method 0", {"format": "WEBP", "quality": 90, "method": 0}),
    ("jpeg q90 (sdgate)", {"format": "JPEG", "quality": 90}),
]


def photo_like(size: int):
    """A deterministic RGB picture with the statistics of a photo more than of noise."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    y, x = np.mgrid[0:size, 0:size] / size
    rgb = np.stack([120 + 90 * np.sin(3 * x + 2 * y), 120 + 80 * np.cos(4 * y - x),
                    110 + 70 * np.sin(5 * x * y + 1)], axis=-1)
    img = Image.fromarray(rgb.clip(0, 255).astype("uint8"))
    draw = ImageDraw.Draw(img)
    rng = np.random.default_rng(0)
    for _ in range(24):
        x0, y0 = rng.integers(0, size, 2)
        r = int(rng.integers(size // 40, size // 6))
        draw.ellipse([x0 - r, y0 - r, x0 + r, y0 + r], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    img = img.filter(ImageFilter.GaussianBlur(size / 256))
    grain = rng.normal(0, 3, (size, size, 3))
    return Image.fromarray((np.asarray(img) + grain).clip(0, 255).astype("uint8"))


def noise(size: int):
    import numpy as np
    from PIL import Image

    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype="uint8"))


def _encode(img, kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, **kwargs)
    return buf.getvalue()


def _decode(data: bytes):
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def run(sizes=(512, 1024), contents=("photo-like", "noise"), reps: int = 3) -> dict:
    rows = []
    for size in sizes:
        for content in contents:
            img = photo_like(size) if content == "photo-like" else noise(size)
            for label, kwargs in FORMATS:
                if label == "png optimize=True" and size > 512 and reps < 3:
                    continue  # seconds per call; measured in the full run only
                data = _encode(img, kwargs)
                enc = median(timed(_encode, img, kwargs)[0] for _ in range(reps))
                dec = median(timed(_decode, data)[0] for _ in range(reps))
                b64 = median(timed(base64.b64encode, data)[0] for _ in range(reps))
                rows.append({"size": size, "content": content, "format": label,
                             "encode_ms": enc * 1e3, "decode_ms": dec * 1e3,
                             "base64_ms": b64 * 1e3, "kib": len(data) / 1024})
    return {"rows": rows, "reps": reps}

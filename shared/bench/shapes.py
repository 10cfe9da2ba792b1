"""The API shapes the benchmark calls: one row per route, easy to extend.

A row names a route and builds a body from the benchmark's parameters; rows whose route the app
does not register are skipped (and listed as missing), so a shape can be added here before or
after its dialect lands. `base64_out`: the response carries the images as base64.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class Params:
    """What every shape's request is built from."""

    size: int
    steps: int
    seed: int
    init_b64: str  # a PNG of `size`, for img2img rows
    prompt: str = "a lighthouse on a cliff at sunset, oil painting"


@dataclass(frozen=True)
class Shape:
    name: str
    path: str
    body: Callable[[Params], dict]
    form: bool = False  # send application/x-www-form-urlencoded instead of JSON
    base64_out: bool = False
    sets_size: bool = True  # False: the shape picks the size itself (an aspect ratio, ...)
    headers: dict = field(default_factory=dict)


def _a1111(p: Params, **extra) -> dict:
    return {"prompt": p.prompt, "width": p.size, "height": p.size, "steps": p.steps,
            "seed": p.seed, "cfg_scale": 7, **extra}


SHAPES: list[Shape] = [
    Shape("form txt2img (seed 002)", "/txt2img", form=True, body=lambda p: {
        "prompt": p.prompt, "width": p.size, "height": p.size,
        "num_inference_steps": p.steps, "seed": p.seed}),
    Shape("form img2img (seed 002)", "/img2img", body=lambda p: {
        "prompt": p.prompt, "width": p.size, "height": p.size, "num_inference_steps": p.steps,
        "seed": p.seed, "strength": 0.5, "init_image": p.init_b64}),
    Shape("draw (seed 000)", "/v1/draw", sets_size=False, body=lambda p: {
        "prompt": p.prompt, "size": "1:1", "quantity": 1}),
    Shape("A1111 txt2img", "/sdapi/v1/txt2img", base64_out=True, body=_a1111),
    Shape("A1111 img2img", "/sdapi/v1/img2img", base64_out=True,
          body=lambda p: _a1111(p, init_images=[p.init_b64], denoising_strength=0.5)),
    Shape("gateway A1111 txt2img (seed 001)", "/v1/sdapi/v1/txt2img", base64_out=True,
          body=_a1111),
    Shape("OpenAI images (b64_json)", "/v1/images/generations", base64_out=True,
          body=lambda p: {"prompt": p.prompt, "n": 1, "size": f"{p.size}x{p.size}",
                          "response_format": "b64_json"}),
    Shape("OpenAI images (url, jpeg)", "/v1/images/generations",
          body=lambda p: {"prompt": p.prompt, "n": 1, "size": f"{p.size}x{p.size}",
                          "response_format": "url", "output_format": "jpeg"}),
    Shape("ModelsLab text2img (seed 003)", "/api/v3/text2img", body=lambda p: {
        "key": "bench", "prompt": p.prompt, "width": str(p.size), "height": str(p.size),
        "samples": "1", "num_inference_steps": str(p.steps), "seed": p.seed}),
]


def available(app) -> tuple[list[Shape], list[Shape]]:
    """(shapes the app serves, shapes it does not), by POST route path in its OpenAPI schema."""
    paths = {p for p, ops in app.openapi()["paths"].items() if "post" in ops}
    present = [s for s in SHAPES if s.path in paths]
    return present, [s for s in SHAPES if s.path not in paths]

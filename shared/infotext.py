"""A1111 "infotext": the generation parameters line stored in each PNG's `parameters` chunk."""

from __future__ import annotations

import re


def _quote(v) -> str:
    s = str(v)
    return s if not re.search(r'[,:"\n]', s) else '"' + s.replace('"', '\\"') + '"'


def format_infotext(prompt: str, negative: str, params: dict) -> str:
    """`<prompt>\\nNegative prompt: <neg>\\nSteps: 20, Sampler: Euler, ...` as A1111 writes it."""
    line = ", ".join(f"{k}: {_quote(v)}" for k, v in params.items() if v is not None)
    neg = f"\nNegative prompt: {negative}" if negative else ""
    return f"{prompt}{neg}\n{line}"


def request_params(req) -> dict:
    """Infotext entries, in A1111's wording, for the request features beyond the basic ones."""
    out: dict = {}
    if getattr(req, "token_merging_ratio", 0):
        out["Token merging ratio"] = req.token_merging_ratio
    if getattr(req, "hires", None) is not None and req.hires_token_merging_ratio():
        out["Token merging ratio hr"] = req.hires_token_merging_ratio()
    if req.seed_resize_from:
        out["Seed resize from"] = f"{req.seed_resize_from[0]}x{req.seed_resize_from[1]}"
    if req.tiling:
        out["Tiling"] = True
    if req.mode.value == "inpaint":
        if any(req.mask_blur):
            out["Mask blur"] = max(req.mask_blur)
        if req.mask_invert:
            out["Mask mode"] = "Inpaint not masked"
        out["Masked content"] = ("fill", "original", "latent noise", "latent nothing")[
            req.inpainting_fill]
        if req.inpaint_full_res:
            out["Inpaint area"] = "Only masked"
            out["Masked area padding"] = req.inpaint_full_res_padding
    hr = req.hires
    if hr is not None:
        out["Denoising strength"] = hr.strength
        out["Hires resize"] = f"{hr.width}x{hr.height}"
        if hr.steps:
            out["Hires steps"] = hr.steps
        out["Hires upscaler"] = hr.upscaler
        if hr.sampler:
            out["Hires sampler"] = hr.sampler
        if hr.prompt:
            out["Hires prompt"] = hr.prompt
        if hr.negative_prompt:
            out["Hires negative prompt"] = hr.negative_prompt
    if getattr(req, "refiner", None) is not None:
        out["Refiner"] = req.refiner.model
        out["Refiner switch at"] = req.refiner.switch_at
    return out


_PARAM = re.compile(r'\s*([\w ]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def parse_infotext(text: str) -> dict:
    """Parse an infotext back into {"Prompt", "Negative prompt", and each parameter}."""
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:  # no parameter line: it is all prompt
        lines.append(last)
        last = ""
    prompt, negative, in_neg = [], [], False
    for line in lines:
        if line.startswith("Negative prompt:"):
            in_neg = True
            line = line[len("Negative prompt:"):].strip()
        (negative if in_neg else prompt).append(line)
    out = {"Prompt": "\n".join(prompt), "Negative prompt": "\n".join(negative)}
    for k, v in _PARAM.findall(last):
        v = v.strip()
        if v.startswith('"') and v.endswith('"'):
            v = v[1:-1].replace('\\"', '"')
        out[k.strip()] = v
    return out

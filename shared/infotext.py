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

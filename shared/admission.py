"""Bounded work in front of the engine: a per-request compute budget, a prompt-length limit, and
a bounded queue (full: 503 + Retry-After) so health and catalog routes stay fast under load."""

from __future__ import annotations

import threading

from shared.errors import FieldError, InvalidRequest, Unavailable, ValidationFailed
from shared.generation import GenerationRequest


def work(req: GenerationRequest) -> int:
    """The request's compute in pixel-steps: images x pixels x steps, hires pass included."""
    total = req.num_images * req.width * req.height * req.steps
    if req.hires is not None:
        total += req.num_images * req.hires.width * req.hires.height * (req.hires.steps
                                                                         or req.steps)
    return total


def check_limits(req: GenerationRequest, settings) -> None:
    """Refuse a request over the compute budget or with an over-long prompt (4xx)."""
    for name in ("prompt", "negative_prompt"):
        text = getattr(req, name)
        if len(text) > settings.max_prompt_chars:
            raise ValidationFailed(
                f"{name} is {len(text)} characters; the limit is {settings.max_prompt_chars}",
                param=name, fields=[FieldError(name, f"longer than {settings.max_prompt_chars} "
                                                     "characters")])
    cost = work(req)
    if cost > settings.max_request_work:
        raise InvalidRequest(
            f"request too large: {req.num_images} image(s) of {req.width}x{req.height} at "
            f"{req.steps} steps is {cost:,} pixel-steps; this server allows "
            f"{settings.max_request_work:,} per request (SDGATE_MAX_REQUEST_WORK): ask for "
            "fewer images, steps or pixels", param="steps")


class Admission:
    """At most `limit` generations queued or running in this server; more get 503."""

    def __init__(self, limit: int, retry_after: float):
        self.limit = limit
        self.retry_after = retry_after
        self.active = 0
        self._lock = threading.Lock()

    def __enter__(self):
        with self._lock:
            if self.active >= self.limit:
                raise Unavailable(f"the server is busy ({self.active} generations queued or "
                                  "running); retry later", retry_after=self.retry_after)
            self.active += 1
        return self

    def __exit__(self, *exc):
        with self._lock:
            self.active -= 1

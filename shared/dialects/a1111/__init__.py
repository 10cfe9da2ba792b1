"""Seed 001 / AUTOMATIC1111: the `/sdapi/v1` API, also under the gateway's `/v1/sdapi/v1`."""

from shared.dialects.a1111.router import PREFIXES, fallback, router
from shared.dialects.a1111.controlnet import router as controlnet_router  # noqa: E402
from shared.dialects.a1111.adetailer_script import router as adetailer_router  # noqa: E402

__all__ = ["PREFIXES", "adetailer_router", "controlnet_router", "fallback", "router"]

"""Seed 001 / AUTOMATIC1111: the `/sdapi/v1` API, also under the gateway's `/v1/sdapi/v1`."""

from shared.dialects.a1111.router import PREFIXES, fallback, router

__all__ = ["PREFIXES", "fallback", "router"]

"""The OpenAI Images API (`/v1/images/generations`, `/edits`, `/variations`) for its clients."""

from shared.dialects.openai_images.router import fallback, router

__all__ = ["fallback", "router"]

"""The OpenAI Images API (`/v1/images/generations`, `/edits`, `/variations`) for its clients."""

from shared.dialects.openai_images.router import router

__all__ = ["router"]

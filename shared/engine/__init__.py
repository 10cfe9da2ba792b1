"""The diffusers engine: the only code that imports torch and sees GenerationRequest."""

from shared.engine.core import Engine

__all__ = ["Engine"]

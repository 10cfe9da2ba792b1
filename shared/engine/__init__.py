"""The diffusers engine: the only code that imports torch and sees GenerationRequest.

`Engine` is imported on first use, so the web tier (no torch, numpy or diffusers in its image)
can import the torch-free parts (registry, families, prompts, loras) alone.
"""

__all__ = ["Engine"]


def __getattr__(name: str):
    if name == "Engine":
        from shared.engine.core import Engine

        return Engine
    raise AttributeError(f"module 'shared.engine' has no attribute {name!r}")

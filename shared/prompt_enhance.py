"""ModelsLab `enhance_prompt` with a prompt model: the `enhance_prompt` operation's request and
result, and where the model lives.

A prompt model is a causal language model trained to extend Stable Diffusion prompts (for example
Gustavosta/MagicPrompt-Stable-Diffusion, a GPT-2), saved with `save_pretrained` in
`<models_dir>/prompt_enhancer`. With one installed, `enhance_prompt: "yes"` continues the prompt
with it (greedy decoding: the same prompt is always enhanced the same way); without one, the
fixed SDGATE_ENHANCE_PROMPT_SUFFIX is appended instead.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

FOLDER = "prompt_enhancer"
MAX_NEW_TOKENS = 40  # a few descriptive terms; CLIP reads 75 tokens per chunk anyway


def installed(models_dir: Path | None) -> Path | None:
    """The prompt model's folder, if one is installed."""
    if models_dir is None:
        return None
    folder = Path(models_dir) / FOLDER
    return folder if (folder / "config.json").is_file() else None


class EnhancePromptRequest(BaseModel):
    """One prompt to continue with the prompt model."""

    prompt: str = Field(min_length=1)  # the length limits apply to the generation after
    max_new_tokens: int = Field(MAX_NEW_TOKENS, ge=1, le=200)


class EnhancePromptResult(BaseModel):
    prompt: str  # the prompt as sent, then the model's continuation (one line)

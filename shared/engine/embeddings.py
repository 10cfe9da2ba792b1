"""Textual-inversion embeddings from <models_dir>/embeddings, used by writing their file name.

A prompt word equal to an embedding's file stem ("EasyNegative") loads that file once per model
with diffusers' `load_textual_inversion` (A1111 .pt / .safetensors and diffusers layouts; SDXL
files with clip_l / clip_g tensors go to both text encoders). The prompt layer then tokenizes the
word into the embedding's vectors.
"""

from __future__ import annotations

import logging
import re
import weakref

from shared.engine.registry import EMBEDDINGS_DIR, EMBEDDING_SUFFIXES
from shared.errors import InvalidRequest

log = logging.getLogger(__name__)

# Names already loaded, per text encoder (a model's tokenizer keeps them once added).
_LOADED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def mentioned(names, texts: list[str]) -> list[str]:
    """The embedding names that appear as whole words in any of the texts."""
    return [n for n in names
            if any(re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", t) for t in texts)]


def _load(pipe, name: str, path) -> None:
    from safetensors.torch import load_file

    if path.suffix == ".safetensors":
        state = load_file(str(path))
        if "clip_l" in state and getattr(pipe, "text_encoder_2", None) is not None:
            pipe.load_textual_inversion(state["clip_l"], token=name,
                                        text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
            pipe.load_textual_inversion(state["clip_g"], token=name,
                                        text_encoder=pipe.text_encoder_2,
                                        tokenizer=pipe.tokenizer_2)
            return
    pipe.load_textual_inversion(str(path), token=name)


def ensure(pipe, registry, texts: list[str]) -> list[str]:
    """Load every embedding the texts mention into this model (once); the names used."""
    if not hasattr(pipe, "load_textual_inversion"):
        return []
    files = registry.extra_files(EMBEDDINGS_DIR, EMBEDDING_SUFFIXES)
    used = mentioned(files, texts)
    loaded = _LOADED.setdefault(pipe.text_encoder or pipe.text_encoder_2, set())
    for name in used:
        if name in loaded:
            continue
        try:
            _load(pipe, name, files[name])
        except (ValueError, KeyError, RuntimeError) as e:
            raise InvalidRequest(f"embedding {name!r} does not fit this model: {e}",
                                 param="prompt") from e
        loaded.add(name)
        log.info("loaded textual inversion %s", name)
    return used

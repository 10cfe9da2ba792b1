"""The `enhance_prompt` operation: a prompt continued by a causal LM (transformers).

The model and tokenizer load with AutoModelForCausalLM / AutoTokenizer from
<models_dir>/prompt_enhancer (shared/prompt_enhance.py), once, and stay warm. Greedy decoding;
the continuation is cut at its first line break, so the answer is one prompt line.
"""

from __future__ import annotations

import threading
from pathlib import Path

from shared import prompt_enhance
from shared.engine import ops
from shared.errors import GenerationFailed, Unsupported
from shared.prompt_enhance import EnhancePromptRequest, EnhancePromptResult

_lock = threading.Lock()
_cache: dict[tuple, tuple] = {}


def load(folder: Path, device: str = "cpu"):
    """(tokenizer, model) of the prompt model, loaded once per folder version and device."""
    key = (str(folder), (folder / "config.json").stat().st_mtime_ns, device)
    with _lock:
        if key not in _cache:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            try:
                tok = AutoTokenizer.from_pretrained(str(folder))
                model = AutoModelForCausalLM.from_pretrained(str(folder)).to(device).eval()
            except (OSError, ValueError) as e:
                raise GenerationFailed(f"prompt model {folder} could not be loaded: {e}") from e
            _cache.clear()  # one prompt model at a time
            _cache[key] = (tok, model)
        return _cache[key]


@ops.op("enhance_prompt")
def enhance(engine, req: EnhancePromptRequest) -> EnhancePromptResult:
    """The prompt followed by the model's greedy continuation."""
    import torch

    folder = prompt_enhance.installed(Path(engine.registry.root))
    if folder is None:
        raise Unsupported("no prompt model is installed (<models_dir>/prompt_enhancer)",
                          param="enhance_prompt")
    device = str(getattr(engine, "device", "cpu") or "cpu")
    tok, model = load(folder, device)
    cfg = model.config
    limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", 1024)
    ids = tok(req.prompt, return_tensors="pt", truncation=True,
              max_length=max(1, limit - req.max_new_tokens)).to(device)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    with torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=req.max_new_tokens, do_sample=False,
                             num_beams=1, pad_token_id=pad)
    text = tok.decode(out[0][ids["input_ids"].shape[1]:], skip_special_tokens=True)
    more = (text.strip().splitlines() or [""])[0].strip()
    return EnhancePromptResult(prompt=f"{req.prompt} {more}" if more else req.prompt)

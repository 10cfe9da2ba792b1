"""A tiny random-weight prompt model (GPT-2) in the real on-disk format, for tests.

MagicPrompt-style prompt models are GPT-2 causal LMs; this one has a tiny GPT2Config and random
weights, and a real byte-level BPE tokenizer (every byte a token, no merges: vocab.json and
merges.txt as GPT-2 ships them), saved with save_pretrained, so loading it takes the path a real
prompt model takes. Its continuations are gibberish, but deterministic under greedy decoding.
"""

from __future__ import annotations

from pathlib import Path


def write_tiny_prompt_model(folder: Path, seed: int = 0) -> Path:
    """Write the tiny GPT-2 and its tokenizer into `folder`; returns it."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Tokenizer

    from shared.engine.tiny import _bytes_to_unicode

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {ch: i for i, ch in enumerate(_bytes_to_unicode().values())}
    vocab["<|endoftext|>"] = len(vocab)
    GPT2Tokenizer(vocab=vocab, merges=[], model_max_length=128).save_pretrained(folder)
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(vocab), n_positions=128, n_embd=32, n_layer=1, n_head=2,
                     bos_token_id=len(vocab) - 1, eos_token_id=len(vocab) - 1)
    GPT2LMHeadModel(cfg).save_pretrained(folder)
    return folder

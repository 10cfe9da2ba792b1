"""A tiny random-weight MarianMT translator in the real on-disk format, for tests.

The tokenizer is real: two sentencepiece models trained here on a few sentences (source and
target, as opus-mt ships `source.spm` / `target.spm`), a shared `vocab.json`, and the
`tokenizer_config.json` MarianTokenizer.save_pretrained writes. The model is MarianMTModel with a
tiny MarianConfig and random weights, saved with save_pretrained: loading it goes through exactly
the path real opus-mt weights take. Its output is gibberish, but deterministic.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

SOURCE = ["一只猫坐在窗台上", "美丽的山水画", "夜晚的城市灯光", "一个女孩在花园里读书",
          "雪山和湖泊", "红色的跑车", "古老的城堡", "海边的日落"]
TARGET = ["a cat sitting on the windowsill", "a beautiful landscape painting",
          "city lights at night", "a girl reading a book in the garden",
          "snowy mountains and a lake", "a red sports car", "an old castle",
          "a sunset by the sea"]
SPECIAL = ["</s>", "<unk>", "<pad>"]  # Marian's ids 0, 1, 2 (eos, unk, pad)


def _spm(lines: list[str], vocab_size: int) -> bytes:
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines * 4), model_writer=out,
                                   vocab_size=vocab_size, model_type="unigram",
                                   character_coverage=1.0, hard_vocab_limit=False,
                                   bos_id=-1, eos_id=-1, unk_id=0, minloglevel=2)
    return out.getvalue()


def _pieces(model: bytes) -> list[str]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=model)
    return [sp.id_to_piece(i) for i in range(sp.get_piece_size())]


def marian(path: Path, source: str = "zh", d_model: int = 16, seed: int = 0) -> Path:
    """A `<source>-en` MarianMT folder (config, weights, source/target.spm, vocab.json)."""
    import torch
    from transformers import MarianConfig, MarianMTModel, MarianTokenizer

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    src, tgt = _spm(SOURCE, 80), _spm(TARGET, 80)
    (path / "source.spm").write_bytes(src)
    (path / "target.spm").write_bytes(tgt)
    vocab = list(SPECIAL)
    for piece in _pieces(src) + _pieces(tgt):
        if piece not in vocab:
            vocab.append(piece)
    (path / "vocab.json").write_text(json.dumps({p: i for i, p in enumerate(vocab)},
                                                ensure_ascii=False))
    tok = MarianTokenizer(str(path / "source.spm"), str(path / "target.spm"),
                          str(path / "vocab.json"), source_lang=source, target_lang="en")
    tok.save_pretrained(str(path))
    config = MarianConfig(vocab_size=len(vocab), d_model=d_model, encoder_layers=1,
                          decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                          encoder_ffn_dim=2 * d_model, decoder_ffn_dim=2 * d_model,
                          max_position_embeddings=256, pad_token_id=2, eos_token_id=0,
                          decoder_start_token_id=2, forced_eos_token_id=0)
    torch.manual_seed(seed)
    MarianMTModel(config).save_pretrained(str(path))
    return path

"""The `translate` operation: prompts into English with MarianMT models (transformers).

Models and tokenizers load with `MarianMTModel.from_pretrained` / `MarianTokenizer.from_pretrained`
from the translator folders (shared/translation.py), once per folder, and stay warm in a small
LRU next to the pipelines. Greedy decoding: a prompt translates the same way every time.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from shared import translation
from shared.engine import ops
from shared.errors import GenerationFailed, InvalidRequest, Unsupported
from shared.translation import TranslateRequest, TranslateResult

MAX_LOADED = 3
MAX_NEW_TOKENS = 200  # a prompt part; CLIP reads 75 tokens per chunk anyway

_lock = threading.Lock()
_cache: OrderedDict[tuple, tuple] = OrderedDict()


def root_of(engine) -> Path:
    """The translator directory: SDGATE_TRANSLATOR_DIR, else <models_dir>/translator."""
    return Path(getattr(engine, "translator_dir", None) or Path(engine.registry.root) / "translator")


def load(folder: Path, device: str = "cpu"):
    """(tokenizer, model) of one Marian folder, loaded once per folder and device."""
    key = (str(folder), (folder / "config.json").stat().st_mtime_ns, device)
    with _lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
        from transformers import MarianMTModel, MarianTokenizer

        try:
            tok = MarianTokenizer.from_pretrained(str(folder))
            model = MarianMTModel.from_pretrained(str(folder)).to(device).eval()
        except (OSError, ValueError) as e:
            raise GenerationFailed(f"translator {folder.name} could not be loaded: {e}") from e
        _cache[key] = (tok, model)
        while len(_cache) > MAX_LOADED:
            _cache.popitem(last=False)
        return tok, model


def translate_parts(folder: Path, parts: list[str], device: str = "cpu") -> list[str]:
    """One batch of prompt parts through one Marian model."""
    import torch

    tok, model = load(folder, device)
    batch = tok(parts, return_tensors="pt", padding=True, truncation=True).to(device)
    with torch.inference_mode():
        out = model.generate(**batch, max_new_tokens=MAX_NEW_TOKENS, num_beams=1,
                             do_sample=False)
    return [t.strip() for t in tok.batch_decode(out, skip_special_tokens=True)]


def _model_for(models: dict[str, Path], lang: str) -> Path:
    folder = models.get(lang) or models.get(translation.MULTI)
    if folder is None:
        raise InvalidRequest(f"the prompt is in {lang!r}, and no translator for it is installed "
                             f"(installed: {', '.join(sorted(models))}; add opus-mt-{lang}-en "
                             "or opus-mt-mul-en)", param="multi_lingual")
    return folder


@ops.op("translate")
def translate(engine, req: TranslateRequest) -> TranslateResult:
    """Each text's non-English parts translated, grouped into one batch per model."""
    models = translation.installed(root_of(engine))
    if not models:
        raise Unsupported("multi_lingual needs a translation model, and none is installed "
                          f"(MarianMT folders such as opus-mt-zh-en under {root_of(engine)}); "
                          "send prompts in English with multi_lingual \"no\"",
                          param="multi_lingual")
    pieces = [translation.split(t) for t in req.texts]
    todo: dict[Path, list[tuple[int, int, int, int]]] = {}  # folder -> (text, part, start, end)
    languages: list[str] = []
    for ti, parts in enumerate(pieces):
        for pi, part in enumerate(parts):
            lang = translation.detect(part) if pi % 2 == 0 else None  # odd: separators
            if lang is None or lang == translation.MULTI and translation.MULTI not in models:
                continue  # English, or accented Latin with no multilingual model: kept
            folder = _model_for(models, lang)
            for start, end in translation.spans(part, lang):
                todo.setdefault(folder, []).append((ti, pi, start, end))
            if lang not in languages:
                languages.append(lang)
    device = str(getattr(engine, "device", "cpu") or "cpu")
    for folder, where in todo.items():
        done = translate_parts(folder, [pieces[t][p][a:b] for t, p, a, b in where], device)
        for (t, p, a, b), text in sorted(zip(where, done), key=lambda x: -x[0][2]):
            pieces[t][p] = pieces[t][p][:a] + text + pieces[t][p][b:]  # right to left: spans hold
    return TranslateResult(texts=["".join(p) for p in pieces], languages=languages)

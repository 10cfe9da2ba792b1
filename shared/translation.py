"""Prompt translation to English (ModelsLab `multi_lingual`): the `translate` operation's request
and result, cheap script-based language detection, and the catalogue of installed translators.

Translators are MarianMT models (Helsinki-NLP opus-mt-<src>-en, saved with `save_pretrained`) in
folders under the translator directory (SDGATE_TRANSLATOR_DIR, default <models_dir>/translator),
named `<src>-en` or `opus-mt-<src>-en`; `mul-en` (opus-mt-mul-en) takes whatever has no model of
its own. A prompt is split at commas; in a part written in a non-Latin script only its runs of
non-ASCII text are translated (so `(一只猫:1.2)` becomes `(a cat:1.2)`), a part in accented Latin
goes whole to a `mul` model, and English parts, weights and LoRA tags stay exactly as written.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from pydantic import BaseModel, Field

# Unicode script (the first word of a character's name) -> the opus-mt source language
SCRIPTS = {"HANGUL": "ko", "HIRAGANA": "ja", "KATAKANA": "ja", "CJK": "zh", "CYRILLIC": "ru",
           "ARABIC": "ar", "GREEK": "el", "HEBREW": "he", "THAI": "th", "DEVANAGARI": "hi"}
MULTI = "mul"  # opus-mt-mul-en: many source languages, Latin-script ones included
_PART = re.compile(r"([,，、;；\n]+)")  # prompt separators, the CJK comma included
# a run of non-ASCII text (words joined by spaces or hyphens): what is translated inside a part
# written in a non-Latin script, so `(一只猫:1.2)` keeps its brackets and weight
_RUN = re.compile(r"[^\x00-\x7f](?:[ \-']*[^\x00-\x7f])*")


def detect(text: str) -> str | None:
    """The source language of a text by script (Japanese kana win over the Han they mix with,
    as Hangul does); "mul" for Latin text with non-ASCII letters; None for plain ASCII."""
    found: set[str] = set()
    latin_accented = False
    for ch in text:
        if ord(ch) < 128 or not ch.isalpha():
            continue
        name = unicodedata.name(ch, "")
        script = name.split(" ")[0]
        if script in SCRIPTS:
            found.add(SCRIPTS[script])
        elif script == "LATIN":
            latin_accented = True
    for lang in ("ko", "ja", "zh", "ru", "ar", "el", "he", "th", "hi"):
        if lang in found:
            return lang
    return MULTI if latin_accented else None


def split(text: str) -> list[str]:
    """A prompt as parts and the separators between them (joined back unchanged)."""
    return _PART.split(text)


def spans(part: str, lang: str) -> list[tuple[int, int]]:
    """(start, end) of what to translate in one part: its non-ASCII runs for a non-Latin script
    (syntax like `(...:1.2)` or `<lora:x:1>` around them stays), the whole stripped part for
    accented Latin ("mul": its ASCII words belong to the sentence)."""
    if lang == MULTI:
        start = len(part) - len(part.lstrip())
        return [(start, len(part.rstrip()))] if part.strip() else []
    return [m.span() for m in _RUN.finditer(part) if detect(m.group())]


def installed(root: Path | None) -> dict[str, Path]:
    """source language -> the folder of its installed Marian model."""
    out: dict[str, Path] = {}
    if root is None or not Path(root).is_dir():
        return out
    for d in sorted(Path(root).iterdir()):
        name = d.name.lower().removeprefix("opus-mt-")
        if d.is_dir() and name.endswith("-en") and (d / "config.json").is_file():
            out[name[:-3]] = d
    return out


class TranslateRequest(BaseModel):
    """Texts to bring into English (each part in its own detected language)."""

    texts: list[str] = Field(min_length=1, max_length=8)


class TranslateResult(BaseModel):
    texts: list[str]  # in the request's order; parts needing no translation unchanged
    languages: list[str]  # the source languages that were translated, in first-seen order
